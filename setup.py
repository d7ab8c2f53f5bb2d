"""keeptimed's compiled parts; everything else is in pyproject.toml.

Three artifacts come from native/: the cffi module keeptimed._native (built by
cffi_modules), the keeptime-helper executable placed beside it, and
keeptime-criu-forward, the native forwarder of CRIU's action script, installed
on PATH beside keeptime and keeptime-criu-hook, which execs it (a data file of
the bin directory). Both programs are linked statically where the C library
allows it: a static binary starts faster, and both are started often.
"""
import os

from setuptools import setup
from setuptools.command.build_ext import build_ext

HELPER = "keeptime-helper"
HELPER_SOURCES = ["native/keeptime_helper.c"]
FORWARDER = "keeptime-criu-forward"
FORWARDER_SOURCES = ["native/criu_forward.c"]
# Where build_ext links the forwarder; pip builds in the source tree, where setup() names it.
FORWARDER_BUILT = os.path.join("build", "native", FORWARDER)
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"]


class BuildExtWithHelper(build_ext):
    """build_ext that also links keeptime-helper into the keeptimed package, and keeptime-criu-forward."""

    def run(self):
        super().run()
        objects = self.compiler.compile(
            HELPER_SOURCES, output_dir=self.build_temp, include_dirs=["native"], extra_postargs=CFLAGS
        )
        for package_dir in self._helper_dirs():
            self._link(objects, HELPER, package_dir)
        forwarder_objects = self.compiler.compile(FORWARDER_SOURCES, output_dir=self.build_temp,
                                                  extra_postargs=CFLAGS)
        self._link(forwarder_objects, FORWARDER, os.path.dirname(FORWARDER_BUILT))

    def _link(self, objects, name, output_dir):
        os.makedirs(output_dir, exist_ok=True)
        try:
            self.compiler.link_executable(objects, name, output_dir=output_dir, extra_postargs=["-static"])
        except Exception:  # no static C library: a dynamic program works too
            self.compiler.link_executable(objects, name, output_dir=output_dir)

    def _helper_dirs(self):
        """Where keeptimed/_native lands: the build tree, and the source tree for in-place builds."""
        dirs = {os.path.join(self.build_lib, "keeptimed")}
        if self.inplace or getattr(self, "editable_mode", False):
            dirs.add(self.distribution.package_dir["keeptimed"])
        return sorted(dirs)

    def get_outputs(self):
        return super().get_outputs() + [os.path.join(self.build_lib, "keeptimed", HELPER)]


setup(
    cffi_modules=["native/build.py:ffibuilder"],
    cmdclass={"build_ext": BuildExtWithHelper},
    data_files=[("bin", [FORWARDER_BUILT])],
)

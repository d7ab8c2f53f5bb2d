"""The compiled parts; everything else is in pyproject.toml.

Two artifacts come from native/: the cffi module keeptimed._native (built by
cffi_modules) and the keeptime-helper executable placed beside it, linked
statically where the C library allows it (a static binary starts faster, and
the helper is started again whenever it has to be).
"""
import os

from setuptools import setup
from setuptools.command.build_ext import build_ext

HELPER = "keeptime-helper"
HELPER_SOURCES = ["native/keeptime_helper.c"]
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"]


class BuildExtWithHelper(build_ext):
    """build_ext that also links keeptime-helper into the keeptimed package."""

    def run(self):
        super().run()
        objects = self.compiler.compile(
            HELPER_SOURCES, output_dir=self.build_temp, include_dirs=["native"], extra_postargs=CFLAGS
        )
        for package_dir in self._helper_dirs():
            os.makedirs(package_dir, exist_ok=True)
            try:
                self.compiler.link_executable(objects, HELPER, output_dir=package_dir, extra_postargs=["-static"])
            except Exception:  # no static C library: a dynamic helper works too
                self.compiler.link_executable(objects, HELPER, output_dir=package_dir)

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
)

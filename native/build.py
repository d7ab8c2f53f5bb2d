"""cffi (API mode) build of keeptime's native module, ``keeptimed._native``.

Used by setup.py through ``cffi_modules``. Paths are relative to the project
root, where setup.py runs (setuptools refuses absolute source paths).
"""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = "native"

with open(os.path.join(HERE, "keeptime_native.h"), encoding="utf-8") as header:
    DECLARATIONS = header.read()

ffibuilder = FFI()
ffibuilder.cdef(DECLARATIONS)
ffibuilder.set_source(
    "keeptimed._native",
    '#include <stdint.h>\n#include "keeptime_native.h"\n',
    sources=[f"{SOURCE_DIR}/keeptime_native.c"],
    include_dirs=[SOURCE_DIR],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"],
)

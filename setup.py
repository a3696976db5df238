"""Build of the one C extension, ``eval._rle`` (batched RLE validation; everything else is in pyproject.toml)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("eval._rle", ["eval/_rle.c"], extra_compile_args=["-O2"])])

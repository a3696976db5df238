"""Build of the one C extension, ``eval._rle`` (batched RLE validation; everything else is in pyproject.toml).

``optional=True``: on a machine without a C compiler the install still succeeds and ``eval.masks.check_rles`` uses
its NumPy fallback (same results, ~10x slower; tests/test_rle_check.py requires the compiled one wherever a compiler
exists).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("eval._rle", ["eval/_rle.c"], extra_compile_args=["-O2"], optional=True)])

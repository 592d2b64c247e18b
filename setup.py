"""The compiled archive scanner (collector/kernels.c), built when a C compiler is at hand.

Everything else is declared in pyproject.toml. The extension is optional: without a compiler the
install goes on (setuptools prints the failure) and ptmon uses its numpy scanner, with the same
results, more slowly (collector/kernels.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("ptmon._kernels", sources=["collector/kernels.c"], optional=True)])

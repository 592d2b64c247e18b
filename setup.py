"""The compiled archive scanner (collector/kernels.c), built when a C compiler is at hand.

Everything else is declared in pyproject.toml. The extension is optional: without a compiler the
install goes on (setuptools prints the failure) and ptmon uses its numpy scanner, with the same
results, more slowly (collector/kernels.py).
"""

import hashlib
from pathlib import Path

from setuptools import Extension, setup

SOURCE = "collector/kernels.c"
# The library says which kernels.c it was built from; kernels.py does not use one built from another.
digest = hashlib.sha256((Path(__file__).parent / SOURCE).read_bytes()).hexdigest()

setup(ext_modules=[Extension("ptmon._kernels", sources=[SOURCE], define_macros=[("PTK_SOURCE", digest)], optional=True)])

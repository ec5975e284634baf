"""Build script for psycogreen's optional C accelerator (everything else is in pyproject.toml).

``psycogreen._speedups`` is optional: without a C compiler (or with ``PSYCOGREEN_NO_EXTENSIONS=1``
set while installing) psycogreen installs as pure Python and runs the same, a little slower.
"""

import os

from setuptools import Extension, setup

if os.environ.get("PSYCOGREEN_NO_EXTENSIONS", "") not in ("", "0"):
    extensions = []
else:
    extensions = [Extension("psycogreen._speedups", ["psycogreen/_speedups.c"], optional=True)]

setup(ext_modules=extensions)

"""Only the optional C extension lives here; everything else is in pyproject.toml.

flowkit/_speedups.c holds compiled versions of a few hot functions. It is optional: without
a C compiler the build skips it and flowkit runs its pure-Python versions, which compute
the same values (FLOWKIT_NO_EXTENSIONS=1 selects them even when the module is built).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("flowkit._speedups", ["flowkit/_speedups.c"], optional=True)])

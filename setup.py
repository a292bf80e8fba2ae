"""The compiled part of vpnrouter: the fast path's flow cache (router/fastpath/_flowcache.c).

Optional: where it cannot be built (no compiler, no Python headers) the package installs without it and the
router forwards everything in Python, saying so once (router/fastpath/__init__.py).  Everything else is in
pyproject.toml.
"""

from setuptools import Extension, setup

SOURCES = ["router/fastpath/_flowcache.c", "router/fastpath/forward.c", "router/fastpath/table.c"]

setup(ext_modules=[Extension("router.fastpath._flowcache", SOURCES, depends=["router/fastpath/flowcache.h"],
                             optional=True, extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                                                "-Wno-missing-field-initializers"])])

"""Hide optional packages from this Python, as if they were not installed (for checking that tests skip).

    PYTHONPATH=tests/without:src python -m pytest -q tests/

hides array-api-strict and CuPy, as on the project's GPU machines; MOONXP_HIDE=a,b
names other top-level modules to hide, e.g. every optional one (hypothesis stays: its pytest plugin loads
at start-up):

    MOONXP_HIDE=array_api_strict,cupy,cupy_backends,torch,jax,jaxlib,dask,distributed,zarr,pyarrow,nbclient Hidden modules have no spec
(``importlib.util.find_spec`` is None) and importing them raises ModuleNotFoundError.
"""

import os
import sys

HIDDEN = set(os.environ.get("MOONXP_HIDE", "array_api_strict,cupy,cupy_backends").split(","))


class _Hiding:
    """The standard path finder, blind to the hidden modules."""

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.finder, attr)


sys.meta_path[:] = [_Hiding(f) if getattr(f, "__name__", "") == "PathFinder" else f for f in sys.meta_path]

"""patchwork: build image classifiers with active learning, from the command line.

The Python API (see the README) is loaded lazily so that `patchwork --help` and the
other light commands do not pay for pandas before they need it.
"""

__version__ = "0.1.0"

_API = {
    "open_project": "store.project",
    "init_project": "store.project",
    "init_from_folders": "store.project",
    "find_project": "store.project",
    "Project": "store.project",
    "PatchworkError": "errors",
}
__all__ = [*_API, "__version__"]


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'patchwork_cli' has no attribute {name!r}")

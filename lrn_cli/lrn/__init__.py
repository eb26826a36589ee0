"""The LRN layer family: `LocalResponseNorm`, its functional form and the conventions.

The conventions are plain Python (the config schema uses them without importing torch); the
layer and the functions load torch when first asked for.
"""
from .conventions import CONVENTIONS, REGIONS, Canon, LRNParams, canonical, check_params

_LAZY = {"LocalResponseNorm": ".module", "local_response_norm": ".functional", "reference": ".functional"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)


__all__ = ["CONVENTIONS", "REGIONS", "Canon", "LRNParams", "LocalResponseNorm", "canonical", "check_params",
           "local_response_norm", "reference"]

"""The LRN layer family: `LocalResponseNorm`, its functional form and the conventions."""
from .conventions import CONVENTIONS, REGIONS, Canon, canonical, check_params
from .functional import local_response_norm, reference
from .module import LocalResponseNorm

__all__ = ["CONVENTIONS", "REGIONS", "Canon", "LocalResponseNorm", "canonical", "check_params",
           "local_response_norm", "reference"]

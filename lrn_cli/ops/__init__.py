"""Fast CPU paths for the layers around LRN in the classic networks (see each module)."""
from .maxpool import MaxPool2d

__all__ = ["MaxPool2d"]

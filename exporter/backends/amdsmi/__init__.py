"""AMD GPUs through amdsmi (ROCm's SMI library), under the same metric families as NVIDIA."""

from .backend import AmdSmiBackend

__all__ = ["AmdSmiBackend"]

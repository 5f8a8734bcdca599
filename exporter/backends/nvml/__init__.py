"""NVIDIA GPUs through NVML. Importing this package does not import pynvml."""

from .backend import NvmlBackend

__all__ = ["NvmlBackend"]

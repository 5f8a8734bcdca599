"""Backends by name, imported only when chosen.

A host without ROCm must never import amdsmi (its import raises KeyError and prints to stdout),
and a host without NVIDIA must not need pynvml: each entry is a module path resolved on use.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .base import Backend, BackendUnavailable, Device

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

# name -> "module:Class"; each class has `from_settings(settings) -> Backend`.
BACKENDS: dict[str, str] = {
    "nvml": "exporter.backends.nvml:NvmlBackend",
    "amdsmi": "exporter.backends.amdsmi:AmdSmiBackend",
    "sim": "exporter.backends.sim:SimBackend",
}
# What `auto` tries, in order: every vendor library that initializes serves (both may).
AUTO_ORDER: tuple[str, ...] = ("nvml", "amdsmi")


@dataclass
class OpenedBackends:
    sources: list[tuple[Backend, list[Device]]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # name -> why it is not serving


def _load_class(name: str) -> type:
    try:
        target = BACKENDS[name]
    except KeyError:
        raise BackendUnavailable("not available in this version of the exporter") from None
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)


def open_backend(name: str, settings: Settings) -> tuple[Backend, list[Device]]:
    """Create, start and enumerate one backend; BackendUnavailable says why it cannot serve."""
    backend = _load_class(name).from_settings(settings)
    backend.start()
    try:
        devices = list(backend.devices())
    except Exception:
        backend.stop()
        raise
    return backend, devices


def open_backends(settings: Settings) -> OpenedBackends:
    """Open the configured backend, or with `auto` every vendor library that initializes.

    A named backend that fails raises BackendUnavailable (the operator asked for it); `auto`
    collects the reasons, so the daemon can serve its own metrics and say why, once.
    """
    kind = settings.collection.backend
    opened = OpenedBackends()
    names = AUTO_ORDER if kind == "auto" else (kind,)
    for name in names:
        try:
            backend, devices = open_backend(name, settings)
        except BackendUnavailable as e:
            if kind != "auto":
                raise BackendUnavailable(f"backend {name}: {e}") from None
            opened.failed[name] = str(e)
            continue
        opened.sources.append((backend, devices))
    if kind == "auto" and not opened.sources:
        log.warning(
            "no vendor library initialized; serving only the exporter's own metrics",
            extra={"reasons": "; ".join(f"{n}: {r}" for n, r in opened.failed.items())},
        )
    return opened

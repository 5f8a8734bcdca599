"""Importing amdsmi without letting it break the daemon or its standard output.

On a host without ROCm, `import amdsmi` prints the loader's error to stdout and then raises
KeyError('libamd_smi.so') (6.0/6.1 without ROCM_PATH: KeyError('ROCM_PATH')), not ImportError.
The Python package must also match the installed libamd_smi.so (its ctypes structures are
hard-coded per release; a mismatched wheel mis-decodes silently or fails), so the copy that
ROCm installs beside the library, `$ROCM_PATH/share/amd_smi`, wins over a pip-installed one.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..base import BackendUnavailable

log = logging.getLogger(__name__)

DEFAULT_ROCM = Path("/opt/rocm")


def rocm_python_dir(environ: dict[str, str] | None = None) -> Path | None:
    """ROCm's own copy of the Python package, if this host has one."""
    env = os.environ if environ is None else environ
    for root in (env.get("ROCM_PATH"), env.get("ROCM_HOME"), str(DEFAULT_ROCM)):
        if root and (Path(root) / "share" / "amd_smi" / "amdsmi").is_dir():
            return Path(root) / "share" / "amd_smi"
    return None


def import_amdsmi() -> Any:
    """The amdsmi module, or BackendUnavailable saying why (its printed text included)."""
    preferred = rocm_python_dir()
    if preferred is not None and str(preferred) not in sys.path:
        sys.path.insert(0, str(preferred))
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            module = importlib.import_module("amdsmi")
    except ModuleNotFoundError:
        raise BackendUnavailable(
            "amdsmi is not installed: install ROCm's amd-smi-lib (its Python package is in "
            "$ROCM_PATH/share/amd_smi) or pip install 'gpu-fleet-exporter[amd]'") from None
    except (ImportError, OSError, KeyError, AttributeError) as e:
        said = " ".join(printed.getvalue().split())
        raise BackendUnavailable(
            f"amdsmi cannot load libamd_smi.so ({type(e).__name__}: {e})"
            + (f": {said}" if said else "")) from None
    where = getattr(module, "__file__", "?")
    log.info("amdsmi imported", extra={
        "path": where, "version": getattr(module, "__version__", "unknown"),
        "source": "ROCm installation" if preferred and str(where).startswith(str(preferred))
        else "Python environment"})
    return module

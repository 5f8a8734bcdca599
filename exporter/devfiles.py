"""Which GPU device files this process holds open, read from /proc/self/fd.

Releasing the vendor library for a GPU reset or driver upgrade is only real if no
/dev/nvidia*, /dev/kfd or /dev/dri file stays open: this is how the daemon checks itself.
"""

from __future__ import annotations

import os
from pathlib import Path

GPU_DEVICE_PREFIXES = ("/dev/nvidia", "/dev/kfd", "/dev/dri/")


def open_device_files(fd_dir: Path = Path("/proc/self/fd"),
                      prefixes: tuple[str, ...] = GPU_DEVICE_PREFIXES) -> list[str]:
    found = []
    try:
        entries = list(fd_dir.iterdir())
    except OSError:
        return found
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue  # closed between listing and reading
        if target.startswith(prefixes):
            found.append(target)
    return sorted(found)

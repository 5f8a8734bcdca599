"""Facts about a PCI device that the kernel knows better than any vendor library."""

from __future__ import annotations

from pathlib import Path

PCI_DEVICES = Path("/sys/bus/pci/devices")


def sysfs_address(bus_id: str) -> str:
    """NVML's 00000000:17:00.0 and amdsmi's 0000:17:00.3 (a partition) -> 0000:17:00.0 as
    sysfs names the function the kernel enumerated. Partitions of an MI300 are all function 0
    to the OS; amdsmi puts the partition number in the function digit."""
    domain, _, rest = bus_id.lower().partition(":")
    bus_dev = rest.rsplit(".", 1)[0]
    return f"{domain[-4:]}:{bus_dev}.0"


def numa_node_of(bus_id: str, root: Path = PCI_DEVICES) -> int | None:
    try:
        return int((root / sysfs_address(bus_id) / "numa_node").read_text())
    except (OSError, ValueError):
        return None

"""Host settings that the GPU nodes of a pool should share, read from /proc and /sys.

Two families of the node checklist come from here: `gpu_node_config_info` (kernel release,
IOMMU mode, PCIe ASPM policy, CPU frequency governor, transparent huge pages) and
`gpu_node_hugepages` (huge pages configured, by page size). A fleet dashboard compares them
across the nodes of a pool: one node with a different governor or IOMMU mode is the odd one out.

Every path is resolved under a `root` so tests can hand in a fake tree. A fact that cannot be
read becomes the empty string (Prometheus treats that as an absent label): a checklist with a
hole is still useful, an exception would cost the whole scrape. No vendor library is touched.
"""

from __future__ import annotations

import platform
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from .exposition import Row

if TYPE_CHECKING:  # only for the contributor signature; the sampler is not needed at run time
    from .sampler import SamplerView

# Kernel words for an IOMMU group's default domain, as short words that do not change when a
# kernel renames its internals; an unknown word passes through lowercased.
IOMMU_WORDS = {
    "identity": "passthrough",
    "DMA": "translated",
    "DMA-FQ": "translated_lazy",
    "blocked": "blocked",
}

# A host has a few hundred IOMMU groups at most (one per PCIe function or ACS-isolated set);
# the bound keeps a pathological tree from turning a render into thousands of file reads.
MAX_IOMMU_GROUPS = 4096

# Paths relative to the root (the real host: "/").
OSRELEASE = "proc/sys/kernel/osrelease"
IOMMU_GROUPS = "sys/kernel/iommu_groups"
ASPM_POLICY = "sys/module/pcie_aspm/parameters/policy"
CPUS = "sys/devices/system/cpu"
THP_ENABLED = "sys/kernel/mm/transparent_hugepage/enabled"
HUGEPAGES = "sys/kernel/mm/hugepages"

_BRACKETED = re.compile(r"\[([^\]]*)\]")
_CPU_DIR = re.compile(r"cpu\d+")  # cpu0, cpu1, ...; not cpufreq, cpuidle
_HUGEPAGES_DIR = re.compile(r"hugepages-(\d+)kB")


@dataclass(frozen=True)
class HostFacts:
    """What `read_host_facts` found; "" for a fact that could not be read."""

    kernel: str = ""
    iommu: str = ""
    aspm_policy: str = ""
    cpu_governor: str = ""
    transparent_hugepages: str = ""
    hugepages: dict[int, int] = field(default_factory=dict)  # page size in bytes -> pages


def _read(path: Path) -> str:
    """The stripped text of a small /proc or /sys file, or "" when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return ""


def _subdirs(path: Path) -> Iterator[Path]:
    """The entries of a directory, nothing when it is missing or unreadable."""
    try:
        yield from path.iterdir()
    except OSError:
        return


def _bracketed(text: str) -> str:
    """The selected word of a sysfs choice file ("a [b] c" -> "b"); no brackets: the text."""
    match = _BRACKETED.search(text)
    return match.group(1).strip() if match else text.strip()


def _kernel(root: Path) -> str:
    release = _read(root / OSRELEASE)
    if not release and root == Path("/"):
        # Only the real host may fall back to uname(); for a fake tree it would be a lie.
        release = platform.release()  # "" when uname does not say; it does not raise
    return release


def _iommu(root: Path) -> str:
    groups = list(islice(_subdirs(root / IOMMU_GROUPS), MAX_IOMMU_GROUPS))
    if not groups:
        return "off"  # no groups: the kernel runs without an IOMMU (or with it disabled)
    words = Counter(
        IOMMU_WORDS.get(kind, kind.lower())
        for kind in (_read(group / "type") for group in groups)
        if kind
    )
    if not words:
        return "on"  # groups exist, so translation is on, but the kernel does not say which kind
    # The most common word; a tie goes to the alphabetically first, so the label is stable.
    return min(words.items(), key=lambda item: (-item[1], item[0]))[0]


def _cpu_governor(root: Path) -> str:
    governors = {
        _read(cpu / "cpufreq/scaling_governor")
        for cpu in _subdirs(root / CPUS)
        if _CPU_DIR.fullmatch(cpu.name)
    }
    governors.discard("")  # an offline CPU or one without cpufreq does not make the host mixed
    if not governors:
        return ""
    return governors.pop() if len(governors) == 1 else "mixed"


def _hugepages(root: Path) -> dict[int, int]:
    pages: dict[int, int] = {}
    for entry in _subdirs(root / HUGEPAGES):
        match = _HUGEPAGES_DIR.fullmatch(entry.name)
        count = _read(entry / "nr_hugepages")
        if match is None or not count.isdigit():
            continue  # an unreadable count has no value to publish: the row is left out
        pages[int(match.group(1)) * 1024] = int(count)
    return dict(sorted(pages.items()))


def read_host_facts(root: Path = Path("/")) -> HostFacts:
    """Read the host's facts under `root` ("/" for the real host). Never raises."""
    return HostFacts(
        kernel=_kernel(root),
        iommu=_iommu(root),
        aspm_policy=_bracketed(_read(root / ASPM_POLICY)),
        cpu_governor=_cpu_governor(root),
        transparent_hugepages=_bracketed(_read(root / THP_ENABLED)),
        hugepages=_hugepages(root),
    )


def host_fact_rows(facts: HostFacts) -> list[Row]:
    """The rows of `gpu_node_config_info` and `gpu_node_hugepages`, labels in catalog order."""
    info = (
        ("kernel", facts.kernel),
        ("iommu", facts.iommu),
        ("aspm_policy", facts.aspm_policy),
        ("cpu_governor", facts.cpu_governor),
        ("transparent_hugepages", facts.transparent_hugepages),
    )
    rows = [Row("gpu_node_config_info", info, 1.0)]
    rows.extend(
        Row("gpu_node_hugepages", (("size", str(size)),), float(count))
        for size, count in sorted(facts.hugepages.items())
    )
    return rows


class HostFactsReader:
    """The host's fact rows, re-read at most once per `max_age` seconds.

    A publisher contributor: it is called on every render, and these settings change only when
    someone reconfigures the host, so reading a few hundred /sys files each time would be waste.
    """

    def __init__(
        self,
        root: Path = Path("/"),
        clock: Callable[[], float] = time.monotonic,
        max_age: float = 30.0,
    ) -> None:
        self._root = root
        self._clock = clock
        self._max_age = max_age
        self._lock = threading.Lock()
        self._rows: list[Row] = []
        self._read_at: float | None = None
        self.facts: HostFacts | None = None  # the last read, for the status page

    def rows(self, _view: SamplerView | None = None) -> list[Row]:
        """The cached rows, read again when older than `max_age` (the view is not needed)."""
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at > self._max_age:
                self.facts = read_host_facts(self._root)
                self._rows = host_fact_rows(self.facts)
                self._read_at = now
            return list(self._rows)

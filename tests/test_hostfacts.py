"""Host facts of the node checklist: read from a fake /proc and /sys tree, never raising."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter import hostfacts
from exporter.catalog import BY_NAME
from exporter.exposition import Exposition, Format, group_rows
from exporter.hostfacts import (
    HostFacts,
    HostFactsReader,
    host_fact_rows,
    read_host_facts,
)
from exporter.publisher import Publisher


def _put(root: Path, relpath: str, content: str | bytes) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _governors(root: Path, *words: str) -> None:
    for n, word in enumerate(words):
        _put(root, f"sys/devices/system/cpu/cpu{n}/cpufreq/scaling_governor", word + "\n")


def _iommu_groups(root: Path, *types: str | None) -> None:
    """One group per entry; None: a group without a type file."""
    for n, kind in enumerate(types):
        group = root / "sys/kernel/iommu_groups" / str(n)
        group.mkdir(parents=True)
        if kind is not None:
            (group / "type").write_text(kind + "\n")


def _hugepages(root: Path, **counts: str | bytes) -> None:
    for name, count in counts.items():
        _put(root, f"sys/kernel/mm/hugepages/{name}/nr_hugepages", count)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A plausible GPU node."""
    _put(tmp_path, "proc/sys/kernel/osrelease", "6.8.0-45-generic\n")
    _iommu_groups(tmp_path, "identity", "identity", "identity")
    _put(tmp_path, "sys/module/pcie_aspm/parameters/policy",
         "default performance [powersave] powersupersave\n")
    _governors(tmp_path, "performance", "performance", "performance", "performance")
    _put(tmp_path, "sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
    _hugepages(tmp_path, **{"hugepages-2048kB": "512\n", "hugepages-1048576kB": "8\n"})
    return tmp_path


def test_every_fact_is_read(host: Path) -> None:
    assert read_host_facts(host) == HostFacts(
        kernel="6.8.0-45-generic",
        iommu="passthrough",
        aspm_policy="powersave",
        cpu_governor="performance",
        transparent_hugepages="madvise",
        hugepages={2097152: 512, 1073741824: 8},
    )


def test_an_empty_tree_gives_empty_facts_and_no_fallback_to_the_real_kernel(
    tmp_path: Path,
) -> None:
    # The uname() fallback is for the real host only: a fake tree must not report this machine.
    assert read_host_facts(tmp_path) == HostFacts(iommu="off")


def test_a_missing_root_does_not_raise(tmp_path: Path) -> None:
    assert read_host_facts(tmp_path / "nowhere") == HostFacts(iommu="off")


def test_choice_file_without_brackets_gives_its_text(tmp_path: Path) -> None:
    _put(tmp_path, "sys/module/pcie_aspm/parameters/policy", "  performance \n")
    _put(tmp_path, "sys/kernel/mm/transparent_hugepage/enabled", "[never]")
    facts = read_host_facts(tmp_path)
    assert (facts.aspm_policy, facts.transparent_hugepages) == ("performance", "never")


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("performance",), "performance"),
        (("powersave", "powersave", "powersave"), "powersave"),
        (("performance", "powersave", "performance"), "mixed"),
        (("schedutil", "ondemand"), "mixed"),
    ],
)
def test_cpu_governor(tmp_path: Path, words: tuple[str, ...], expected: str) -> None:
    _governors(tmp_path, *words)
    assert read_host_facts(tmp_path).cpu_governor == expected


def test_cpu_governor_ignores_cpus_without_cpufreq_and_non_cpu_dirs(tmp_path: Path) -> None:
    _governors(tmp_path, "performance", "performance")
    (tmp_path / "sys/devices/system/cpu/cpu2").mkdir()  # offline, or no cpufreq driver
    # The per-policy directory is not a CPU; its (different) governor must not make it "mixed".
    _put(tmp_path, "sys/devices/system/cpu/cpufreq/policy0/scaling_governor", "powersave")
    _put(tmp_path, "sys/devices/system/cpu/cpufreq/cpufreq/scaling_governor", "powersave")
    assert read_host_facts(tmp_path).cpu_governor == "performance"


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        ((), "off"),  # the directory exists but is empty
        (("identity",), "passthrough"),
        (("DMA", "DMA"), "translated"),
        (("DMA-FQ",), "translated_lazy"),
        (("blocked",), "blocked"),
        (("Unmanaged",), "unmanaged"),  # unknown words pass through, lowercased
        (("DMA", "identity", "DMA-FQ", "DMA"), "translated"),  # the majority
        (("identity", "DMA-FQ", "DMA-FQ", "identity", "DMA-FQ"), "translated_lazy"),
        ((None, None), "on"),  # groups, but no readable type
        ((None, "DMA", None), "translated"),  # unreadable types do not count
    ],
)
def test_iommu(tmp_path: Path, types: tuple[str | None, ...], expected: str) -> None:
    (tmp_path / "sys/kernel/iommu_groups").mkdir(parents=True)
    _iommu_groups(tmp_path, *types)
    assert read_host_facts(tmp_path).iommu == expected


@pytest.mark.parametrize("types", [("identity", "DMA"), ("DMA", "identity")])
def test_iommu_tie_goes_to_the_alphabetically_first_word(
    tmp_path: Path, types: tuple[str, str]
) -> None:
    # Both orders on disk: the label must not depend on which group the directory lists first.
    _iommu_groups(tmp_path, *types)
    assert read_host_facts(tmp_path).iommu == "passthrough"


def test_iommu_off_without_the_groups_directory(tmp_path: Path) -> None:
    (tmp_path / "sys/kernel").mkdir(parents=True)
    assert read_host_facts(tmp_path).iommu == "off"


def test_iommu_reads_a_bounded_number_of_groups(tmp_path: Path, monkeypatch) -> None:
    _iommu_groups(tmp_path, *["DMA"] * 10)
    monkeypatch.setattr(hostfacts, "MAX_IOMMU_GROUPS", 3)
    reads: list[Path] = []
    real_read = hostfacts._read

    def counting_read(path: Path) -> str:
        if path.name == "type":
            reads.append(path)
        return real_read(path)

    monkeypatch.setattr(hostfacts, "_read", counting_read)
    assert read_host_facts(tmp_path).iommu == "translated"
    assert len(reads) == 3


def test_unreadable_files_become_empty_strings(tmp_path: Path) -> None:
    # Root reads any mode bits, so "unreadable" is a directory where a file should be, or bytes
    # that are not UTF-8: IsADirectoryError (an OSError) and UnicodeDecodeError (a ValueError).
    (tmp_path / "proc/sys/kernel/osrelease").mkdir(parents=True)
    _put(tmp_path, "sys/module/pcie_aspm/parameters/policy", b"\xff\xfe[\x80]\n")
    (tmp_path / "sys/kernel/mm/transparent_hugepage/enabled").mkdir(parents=True)
    _put(tmp_path, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", b"\xc3\x28")
    (tmp_path / "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor").mkdir(parents=True)
    _iommu_groups(tmp_path, None)
    (tmp_path / "sys/kernel/iommu_groups/0/type").mkdir()
    facts = read_host_facts(tmp_path)
    assert facts == HostFacts(iommu="on")


def test_a_file_where_a_directory_should_be_does_not_raise(tmp_path: Path) -> None:
    _put(tmp_path, "sys/kernel/iommu_groups", "not a directory")
    _put(tmp_path, "sys/devices/system/cpu", "not a directory")
    _put(tmp_path, "sys/kernel/mm/hugepages", "not a directory")
    facts = read_host_facts(tmp_path)
    assert (facts.iommu, facts.cpu_governor, facts.hugepages) == ("off", "", {})


def test_hugepages_sizes_are_in_bytes(tmp_path: Path) -> None:
    _hugepages(tmp_path, **{
        "hugepages-2048kB": "1024\n",
        "hugepages-1048576kB": "0\n",
        "hugepages-64kB": "3",
    })
    assert read_host_facts(tmp_path).hugepages == {
        65536: 3,
        2097152: 1024,
        1073741824: 0,
    }


def test_hugepages_skips_unreadable_counts_and_foreign_entries(tmp_path: Path) -> None:
    _hugepages(tmp_path, **{
        "hugepages-2048kB": "16",
        "hugepages-1048576kB": "garbage",
        "hugepages-32768kB": b"\xff\n",
        "not-hugepages-4kB": "7",
    })
    (tmp_path / "sys/kernel/mm/hugepages/hugepages-16384kB").mkdir()  # no nr_hugepages file
    assert read_host_facts(tmp_path).hugepages == {2097152: 16}


def test_rows_follow_the_contract(host: Path) -> None:
    rows = host_fact_rows(read_host_facts(host))
    info = [r for r in rows if r.family == "gpu_node_config_info"]
    pages = [r for r in rows if r.family == "gpu_node_hugepages"]
    assert len(info) == 1 and len(pages) == 2 and len(rows) == 3
    assert tuple(k for k, _ in info[0].labels) == (
        "kernel", "iommu", "aspm_policy", "cpu_governor", "transparent_hugepages"
    )
    assert tuple(k for k, _ in info[0].labels) == BY_NAME["gpu_node_config_info"].all_labels
    assert info[0].value == 1.0
    assert dict(info[0].labels)["iommu"] == "passthrough"
    assert [(r.labels, r.value) for r in pages] == [
        ((("size", "2097152"),), 512.0),
        ((("size", "1073741824"),), 8.0),
    ]
    groups, problems = group_rows(rows)
    assert problems == []
    assert set(groups) == {"gpu_node_config_info", "gpu_node_hugepages"}


def test_rows_with_empty_facts_render_and_parse(tmp_path: Path) -> None:
    rows = host_fact_rows(read_host_facts(tmp_path))
    groups, problems = group_rows(rows)
    assert problems == []
    text = Exposition(groups, 1).body(Format.TEXT, False).decode()
    families = {f.name: f for f in parse_text(text)}
    (sample,) = families["gpu_node_config_info"].samples
    assert sample.value == 1.0
    assert sample.labels["iommu"] == "off"
    assert sample.labels["kernel"] == ""
    assert "gpu_node_hugepages" not in families


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _kernel_label(rows) -> str:
    (info,) = [r for r in rows if r.family == "gpu_node_config_info"]
    return dict(info.labels)["kernel"]


def test_reader_caches_until_max_age(host: Path) -> None:
    clock = FakeClock()
    reader = HostFactsReader(host, clock=clock, max_age=30.0)
    assert _kernel_label(reader.rows()) == "6.8.0-45-generic"
    _put(host, "proc/sys/kernel/osrelease", "6.9.1\n")
    clock.now += 29.0
    assert _kernel_label(reader.rows(None)) == "6.8.0-45-generic"  # not yet re-read
    clock.now += 2.0
    assert _kernel_label(reader.rows()) == "6.9.1"
    _put(host, "proc/sys/kernel/osrelease", "6.10.0\n")
    clock.now += 10.0
    assert _kernel_label(reader.rows()) == "6.9.1"  # the age counts from the last read


def test_reader_returns_a_copy(host: Path) -> None:
    reader = HostFactsReader(host, clock=FakeClock())
    first = reader.rows()
    first.clear()
    assert len(reader.rows()) == 3


def test_reader_is_a_publisher_contributor(host: Path) -> None:
    publisher = Publisher([HostFactsReader(host, clock=FakeClock()).rows])
    text = publisher.publish(None).body(Format.TEXT, False).decode()
    families = {f.name: f for f in parse_text(text)}
    (sample,) = families["gpu_node_config_info"].samples
    assert sample.labels["cpu_governor"] == "performance"
    assert {s.labels["size"] for s in families["gpu_node_hugepages"].samples} == {
        "2097152", "1073741824",
    }


def test_the_real_host() -> None:
    facts = read_host_facts(Path("/"))
    assert facts.kernel != ""
    assert facts.iommu != ""  # "off" at least: it is never left empty
    groups, problems = group_rows(host_fact_rows(facts))
    assert problems == []
    assert "gpu_node_config_info" in groups

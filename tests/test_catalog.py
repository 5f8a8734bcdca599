"""The catalog is the contract: it matches METRICS.md, and docs/metrics.md is generated from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

from exporter import docgen
from exporter.catalog import (
    CONTRACT_ADDITIONS,
    CONTRACT_LABEL_ADDITIONS,
    CONTRACT_RENAMES,
    FAMILIES,
    GPU_LABELS,
    Kind,
)


def _contract(metrics_md: Path) -> dict[str, set[str]]:
    """family -> labels (beyond gpu, uuid) from the tables of METRICS.md."""
    out: dict[str, set[str]] = {}
    for line in metrics_md.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([a-z_]+)`", cells[0])
        labels: set[str] = set()
        for segment in re.sub(r"\(.*?\)", "", cells[2]).split(";"):
            segment = segment.strip()
            if not segment:
                continue
            head = segment.split("=", 1)[0] if "=" in segment else segment
            for part in re.split(r"[,/]", head):
                word = part.strip().split(" ")[0]
                if re.fullmatch(r"[a-z_]+", word):
                    labels.add(word)
        for name in names:
            out[CONTRACT_RENAMES.get(name, (name,))[0]] = labels
    return out


def test_catalog_matches_the_metric_contract(shared_dir: Path) -> None:
    contract = _contract(shared_dir / "METRICS.md")
    assert len(contract) > 60, "parsed too few families from METRICS.md"
    ours = {f.name: set(f.labels) - CONTRACT_LABEL_ADDITIONS.get(f.name, (frozenset(), ""))[0]
            for f in FAMILIES if f.name not in CONTRACT_ADDITIONS}
    assert sorted(set(contract) - set(ours)) == [], "families in the contract, not in the catalog"
    assert sorted(set(ours) - set(contract)) == [], "families in the catalog, not in the contract"
    differing = {n: (ours[n], contract[n]) for n in ours if ours[n] != contract[n]}
    assert differing == {}


def test_catalog_follows_naming_conventions() -> None:
    for f in FAMILIES:
        assert re.fullmatch(r"gpu_[a-z0-9_]+", f.name), f.name
        assert (f.kind is Kind.COUNTER) == f.name.endswith("_total"), f.name
        assert f.help and f.source, f.name
        assert not set(f.labels) & set(GPU_LABELS) or not f.per_gpu, f.name
        if f.name.endswith("_info"):
            assert f.kind is Kind.GAUGE


@pytest.mark.parametrize("name", sorted(docgen.DOCS))
def test_generated_docs_are_current(name: str) -> None:
    committed = (REPO / "docs" / name).read_text()
    stale = f"docs/{name} is stale: run `python -m exporter.docgen`"
    assert committed == docgen.DOCS[name](), stale

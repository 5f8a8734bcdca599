"""Exposition: the contract is enforced on every row; both formats parse; negotiation."""

from __future__ import annotations

import gzip

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.exposition import (
    BlockCache,
    Exposition,
    Format,
    Row,
    build_metrics,
    group_rows,
    gzip_accepted,
    negotiate,
)

IDENT = (("gpu", "0"), ("uuid", "GPU-a"))


def _rows() -> list[Row]:
    return [
        Row("gpu_utilization_ratio", IDENT, 0.5),
        Row("gpu_energy_joules_total", IDENT, 1234.5),
        Row("gpu_temperature_celsius", (*IDENT, ("sensor", "gpu")), 40),
        Row("gpu_exporter_build_info", (("version", "1"), ("python_version", "3")), 1),
    ]


def test_rows_render_in_both_formats_and_parse_back() -> None:
    groups, problems = group_rows(_rows())
    assert problems == []
    exp = Exposition(groups, 1)
    om = {f.name: f for f in parse_om(exp.body(Format.OPENMETRICS, False).decode())}
    assert om["gpu_energy_joules"].type == "counter"
    assert om["gpu_energy_joules"].unit == "joules"
    assert om["gpu_energy_joules"].samples[0].value == 1234.5
    text = {f.name: f for f in parse_text(exp.body(Format.TEXT, False).decode())}
    assert text["gpu_utilization_ratio"].samples[0].labels == {"gpu": "0", "uuid": "GPU-a"}
    assert gzip.decompress(exp.body(Format.TEXT, True)) == exp.body(Format.TEXT, False)


def test_same_bytes_for_every_request_of_a_snapshot() -> None:
    exp = Exposition(group_rows(_rows())[0], 1)
    assert exp.cached(Format.TEXT, False) is None
    first = exp.body(Format.TEXT, False)
    assert exp.body(Format.TEXT, False) is first
    assert exp.formats_used() == [(Format.TEXT, False)]


@pytest.mark.parametrize(
    "row, problem",
    [
        (Row("gpu_bogus_ratio", IDENT, 1), "unknown family"),
        (Row("gpu_utilization_ratio", (("gpu", "0"),), 1), "differ from the catalog"),
        (Row("gpu_temperature_celsius", IDENT, 1), "differ from the catalog"),
        (Row("gpu_temperature_celsius", (*IDENT, ("where", "x")), 1), "differ from the catalog"),
    ],
)
def test_rows_outside_the_contract_are_dropped_and_reported(row: Row, problem: str) -> None:
    metrics, problems = build_metrics([*_rows(), row])
    assert len(problems) == 1 and problem in problems[0]
    assert sum(len(m.samples) for m in metrics) == len(_rows())


def test_duplicate_series_are_dropped() -> None:
    _metrics, problems = build_metrics([*_rows(), _rows()[0]])
    assert problems and "duplicate" in problems[0]


@pytest.mark.parametrize(
    "accept, expected",
    [
        (None, Format.TEXT),
        ("", Format.TEXT),
        ("text/plain", Format.TEXT),
        ("*/*", Format.TEXT),
        ("application/openmetrics-text", Format.OPENMETRICS),
        # What Prometheus sends by default:
        ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
         "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", Format.OPENMETRICS),
        ("text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5", Format.TEXT),
        ("text/plain;q=0.2,application/openmetrics-text;q=0.9", Format.OPENMETRICS),
        ("application/openmetrics-text;q=0", Format.TEXT),
        ("application/json", Format.TEXT),
        ("application/openmetrics-text;q=abc", Format.TEXT),
    ],
)
def test_negotiation(accept: str | None, expected: Format) -> None:
    assert negotiate(accept) is expected


@pytest.mark.parametrize(
    "value, expected",
    [(None, False), ("", False), ("gzip", True), ("br, gzip;q=0.5", True), ("GZIP", True),
     ("gzip;q=0", False), ("deflate", False), ("identity", False)],
)
def test_gzip_accepted(value: str | None, expected: bool) -> None:
    assert gzip_accepted(value) is expected


def test_unchanged_families_are_not_rendered_again() -> None:
    blocks = BlockCache()
    first = Exposition(group_rows(_rows())[0], 1, blocks)
    before = first.body(Format.OPENMETRICS, False)
    assert blocks.rendered == 4
    changed = [*_rows()[1:], Row("gpu_utilization_ratio", IDENT, 0.75)]
    second = Exposition(group_rows(changed)[0], 2, blocks)
    after = second.body(Format.OPENMETRICS, False)
    assert blocks.rendered == 5  # only gpu_utilization_ratio was rendered again
    assert after.replace(b"0.75", b"0.5") == before
    assert after.endswith(b"# EOF\n") and after.count(b"# EOF") == 1

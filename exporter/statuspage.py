"""The status page at `/`: the node at a glance, one row per GPU, for a person on call.

A pure renderer: it takes what the daemon already holds (the health verdict, the sampler's last
view, the probe report, node facts) and returns one self-contained HTML document. No scripts, no
fonts, no images, no stylesheet to fetch: the page must work from a jump host with no internet,
must never make a browser reach anything but this exporter, and must stay readable on a phone
(the table turns into stacked cards on narrow screens). Every dynamic string is escaped: GPU
models, reasons and probe messages come from drivers, logs and child processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any

from .health.verdict import GpuVerdict, NodeVerdict, Reason, Status
from .report import fmt_value, gpu_model, sample_value
from .sampler import GpuState, SamplerView

# Probe outcomes, worst first: a pair probe keeps one latest result per peer, and the page shows
# the worst of them, so one bad link is not hidden behind a good one.
_OUTCOME_RANK = {"fail": 0, "error": 1, "skipped": 2, "pass": 3}
_OUTCOME_CLASS = {"pass": "ok", "fail": "fail", "error": "warn", "skipped": "muted"}
# Clock-event reasons that only say "nothing to do": not worth a person's attention.
_QUIET_CLOCK_EVENTS = frozenset({"gpu_idle"})
_GIB = 2**30


@dataclass(frozen=True)
class StatusPageData:
    """Everything the page shows; `verdict` and `view` are None before the first collection,
    `probes` (ProbeService.report()) is None when probes are off, `host` is a HostFacts."""

    node: str
    version: str
    summary: str
    verdict: NodeVerdict | None
    view: SamplerView | None = None
    probes: Mapping[str, Any] | None = None
    host: Any | None = None
    generated_at: float = field(default_factory=time.time)  # unix time
    telemetry_path: str = "/metrics"


def render_status_page(data: StatusPageData) -> str:
    """The whole document, UTF-8 text, with no reference to any other origin."""
    status = data.verdict.status.label if data.verdict is not None else "unknown"
    if data.verdict is None:
        body = ('<p class="empty">No collection yet: the first collection cycle has not '
                'completed. This page refreshes by itself.</p>')
    else:
        body = _table(data)
    return f"""<!doctype html>
<html lang="en"><head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="15">
<title>{escape(status)} · {escape(data.node)} · gpu-fleet-exporter</title>
<style>{_CSS}</style>
</head><body>
{_header(data, status)}
<main>
{body}
</main>
<footer>
<nav><a href="{escape(data.telemetry_path.lstrip("/"))}">metrics</a> \
<a href="health">health (JSON)</a> <a href="probes">probes (JSON)</a></nav>
<p>gpu-fleet-exporter {escape(data.version)} · generated {escape(_utc(data.generated_at))}</p>
</footer>
</body></html>
"""


# --- header ---------------------------------------------------------------------------------------
def _header(data: StatusPageData, status: str) -> str:
    parts = [f'<header class="node" data-node-status="{escape(status)}">',
             f'<h1>{_badge(status)} <span class="name">{escape(data.node)}</span></h1>']
    if data.summary:
        parts.append(f'<p class="summary">{escape(data.summary)}</p>')
    if data.verdict is not None:
        gpus = data.verdict.gpus
        counts = {s: sum(1 for g in gpus if g.status is s) for s in Status}
        items = [f"<li><b>{len(gpus)}</b> GPUs</li>"]
        items += [f'<li class="{s.label}"><b>{counts[s]}</b> {s.label}</li>' for s in Status]
        parts.append(f'<ul class="counts">{"".join(items)}</ul>')
        parts += [f'<p class="note">{escape(n)}</p>' for n in data.verdict.notes]
    if facts := _host_facts(data.host):
        parts.append(f'<p class="facts">{facts}</p>')
    if data.probes is None:
        parts.append('<p class="note">Probes are off.</p>')
    elif data.probes.get("disabled"):
        parts.append(f'<p class="note">Probes disabled: {escape(str(data.probes["disabled"]))}</p>')
    parts.append("</header>")
    return "\n".join(parts)


def _host_facts(host: Any | None) -> str:
    """One line of node facts; attributes read defensively, any of them may be missing."""
    if host is None:
        return ""
    items = []
    for attr, label in (("kernel", "kernel"), ("iommu", "IOMMU"), ("aspm_policy", "ASPM"),
                        ("cpu_governor", "CPU governor"), ("transparent_hugepages", "THP")):
        value = getattr(host, attr, None)
        if value:
            items.append(f"{label} <b>{escape(str(value))}</b>")
    hugepages = getattr(host, "hugepages", None) or {}
    pools = [f"{count}×{_page_size(size)}" for size, count in sorted(hugepages.items()) if count]
    if pools:
        items.append(f"hugepages <b>{escape(', '.join(pools))}</b>")
    return " · ".join(items)


def _page_size(size: int) -> str:
    """Huge page sizes are keyed in bytes (HostFacts.hugepages), shown in binary units."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


# --- the GPU table --------------------------------------------------------------------------------
_COLUMNS = ("GPU", "Status", "Reasons", "Util", "Memory", "Temp", "Power", "SM clock",
            "Clock events", "Probes")


def _table(data: StatusPageData) -> str:
    assert data.verdict is not None
    states = list(data.view.gpus) if data.view is not None else []
    probes = _probes_by_uuid(data.probes)
    rows = []
    seen: set[str] = set()
    for verdict in sorted(data.verdict.gpus, key=lambda g: g.gpu):
        state = _state_for(states, verdict)
        if state is not None:
            seen.add(state.uuid)
        rows.append(_row(verdict.gpu, verdict, state, probes.get(verdict.uuid), data))
    # A GPU enumerated after the verdict was made has no verdict yet: shown, never as "ok".
    for state in states:
        if state.uuid not in seen:
            rows.append(_row(state.index, None, state, probes.get(state.uuid), data))
    if not rows:
        return '<p class="empty">No GPU on this node.</p>'
    head = "".join(f'<th scope="col">{c}</th>' for c in _COLUMNS)
    return (f'<table class="gpus">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody>\n</table>")


def _state_for(states: Iterable[GpuState], verdict: GpuVerdict) -> GpuState | None:
    """Match by UUID (indices can change across a re-enumeration), else by index."""
    states = list(states)
    return (next((s for s in states if s.uuid == verdict.uuid), None)
            or next((s for s in states if s.index == verdict.gpu), None))


def _row(index: int, verdict: GpuVerdict | None, state: GpuState | None,
         probe_gpu: Mapping[str, Any] | None, data: StatusPageData) -> str:
    status = verdict.status.label if verdict is not None else "unknown"
    samples = state.samples if state is not None else ()
    model = (verdict.model if verdict is not None and verdict.model else "") or \
        (gpu_model(state) if state is not None else "?")
    uuid = verdict.uuid if verdict is not None else (state.uuid if state else "")
    cells = [
        f'<th scope="row"><span class="idx">{index}</span> {escape(model)}'
        f'<small class="uuid">{escape(uuid)}</small></th>',
        _badge(status),
        _reasons(verdict, state, data.generated_at),
        _util(samples),
        _memory(samples),
        escape(fmt_value(sample_value(samples, "gpu_temperature_celsius", sensor="gpu"),
                         unit=" °C")),
        escape(_of(sample_value(samples, "gpu_power_watts"),
                   sample_value(samples, "gpu_power_limit_watts", limit="enforced"),
                   1, ".0f", " W")),
        escape(fmt_value(sample_value(samples, "gpu_clock_hertz", clock="sm"), 1e6, ".0f", " MHz")),
        _clock_events(samples),
        _probe_list(probe_gpu, data),
    ]
    # The first column is a <th>; the others carry their label for the stacked phone layout.
    # The cell's content is one <div>: one grid item beside its label in the card layout.
    tds = [cells[0]] + [f'<td data-label="{label}"><div>{cell}</div></td>'
                        for label, cell in zip(_COLUMNS[1:], cells[1:], strict=True)]
    return (f'<tr class="gpu {status}" data-gpu="{index}" data-status="{status}">'
            + "".join(tds) + "</tr>")


def _badge(status: str) -> str:
    # The word is always shown: colour is not the only signal.
    return f'<span class="badge {escape(status)}">{escape(status)}</span>'


def _reasons(verdict: GpuVerdict | None, state: GpuState | None, now: float) -> str:
    items = []
    if state is not None and not state.up:
        items.append(f'<li class="down">down: {escape(state.down_reason or "unknown reason")}'
                     "</li>")
    if verdict is None:
        items.append('<li class="muted">no verdict yet</li>')
    else:
        items += [_reason(r, now) for r in verdict.reasons]
    if not items:
        return '<span class="muted">none</span>'
    return f'<ul class="reasons">{"".join(items)}</ul>'


def _reason(r: Reason, now: float) -> str:
    since = f' <small>since {escape(_age(now, r.since))}</small>' if r.since else ""
    return (f'<li class="{r.severity.label}"><span class="sev">{r.severity.label}</span> '
            f'<code>{escape(r.name)}</code> {escape(r.detail)}{since}</li>')


def _bar(ratio: float | None, text: str) -> str:
    if ratio is None:
        return escape(text)
    pct = max(0.0, min(100.0, ratio * 100))  # a number we computed: safe in the style
    return (f'{escape(text)}<span class="bar" aria-hidden="true">'
            f'<i style="width:{pct:.0f}%"></i></span>')


def _util(samples: Iterable[Any]) -> str:
    util = sample_value(samples, "gpu_utilization_ratio")
    return _bar(util, fmt_value(util, 0.01, ".0f", " %"))


def _memory(samples: Iterable[Any]) -> str:
    samples = tuple(samples)
    used = sample_value(samples, "gpu_memory_used_bytes")
    total = sample_value(samples, "gpu_memory_total_bytes")
    text = _of(used, total, _GIB, ".1f", " GiB")
    ratio = used / total if used is not None and total else None
    return _bar(ratio, text)


def _of(part: float | None, whole: float | None, scale: float, spec: str, unit: str) -> str:
    """'used / total unit'; a bare '-' when neither is known (a down GPU has no values)."""
    if part is None and whole is None:
        return "-"
    return f"{fmt_value(part, scale, spec)} / {fmt_value(whole, scale, spec, unit)}"


def _clock_events(samples: Iterable[Any]) -> str:
    events = [s for s in samples if s.family == "gpu_clock_event_active"]
    if not events:  # not read (down GPU, unsupported): unknown, which is not "none"
        return "-"
    active = sorted(dict(s.labels).get("reason", "?") for s in events if s.value)
    shown = [r for r in active if r not in _QUIET_CLOCK_EVENTS]
    if not shown:
        return '<span class="muted">none</span>'
    return " ".join(f'<span class="tag">{escape(r)}</span>' for r in shown)


# --- probes ---------------------------------------------------------------------------------------
def _probes_by_uuid(report: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    if not report:
        return {}
    return {str(g.get("uuid", "")): g for g in report.get("gpus", ()) if isinstance(g, Mapping)}


def _probe_list(gpu: Mapping[str, Any] | None, data: StatusPageData) -> str:
    if data.probes is None:
        return '<span class="muted">off</span>'
    results: Mapping[str, list[Mapping[str, Any]]] = (gpu or {}).get("results") or {}
    skipped: Mapping[str, str] = (gpu or {}).get("last_skipped") or {}
    items = []
    for probe in sorted(set(results) | set(skipped)):
        runs = results.get(probe) or []
        if runs:
            worst = min(runs, key=lambda r: (_OUTCOME_RANK.get(str(r.get("outcome")), 9),
                                             -float(r.get("started_at") or 0)))
            outcome = str(worst.get("outcome", "?"))
            age = _age(data.generated_at, worst.get("started_at"))
            why = str(worst.get("reason") or "")
        else:  # never ran to a result: the reason it was skipped is the news
            outcome, age, why = "skipped", "", skipped[probe]
        cls = _OUTCOME_CLASS.get(outcome, "muted")
        items.append(
            f'<li class="probe {cls}" data-probe="{escape(probe)}">'
            f'<span class="pill {cls}">{escape(outcome)}</span> {escape(probe)}'
            + (f' <small>{escape(age)}</small>' if age else "")
            + (f'<small class="why">{escape(why)}</small>' if why and outcome != "pass" else "")
            + "</li>")
    if not items:
        return '<span class="muted">no run yet</span>'
    return f'<ul class="probes">{"".join(items)}</ul>'


# --- formatting -----------------------------------------------------------------------------------
def _age(now: float, then: Any) -> str:
    """'3 min ago' from two unix times; clock skew between them reads as 'just now'."""
    try:
        then = float(then)
    except (TypeError, ValueError):
        return ""
    if then <= 0:
        return ""
    seconds = now - then
    if seconds < 10:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


# Inline, small, no url(): nothing for a browser to fetch. Variables carry the palette so the
# dark scheme is a few lines. Under 700px the table becomes one card per GPU.
_CSS = """
:root{--bg:#f6f8fa;--fg:#1f2328;--muted:#59636e;--card:#fff;--line:#d1d9e0;
--ok:#1a7f37;--ok-bg:#dafbe1;--warn:#8a5a00;--warn-bg:#fff4c2;--fail:#cf222e;--fail-bg:#ffebe9}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;
--card:#151b23;--line:#3d444d;--ok:#4ac26b;--ok-bg:#12361f;--warn:#e3b341;--warn-bg:#3a2d0b;
--fail:#ff7b72;--fail-bg:#4a1518}}
*{box-sizing:border-box}
body{margin:0;padding:1rem;background:var(--bg);color:var(--fg);line-height:1.4;
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
h1{font-size:1.4rem;margin:0 0 .4rem;display:flex;gap:.6rem;align-items:center;flex-wrap:wrap}
.name{overflow-wrap:anywhere}
header,footer{max-width:100%}
header p{margin:.25rem 0}
.summary,.facts,.note,.muted,small{color:var(--muted)}
.counts{list-style:none;padding:0;margin:.4rem 0;display:flex;gap:1rem;flex-wrap:wrap}
.counts li.ok b{color:var(--ok)}.counts li.warn b{color:var(--warn)}
.counts li.fail b{color:var(--fail)}
.badge,.pill,.sev{display:inline-block;border-radius:999px;font-weight:600;
text-transform:uppercase;letter-spacing:.03em;white-space:nowrap}
.badge{padding:.1rem .6rem;font-size:.8rem;border:1px solid currentColor}
.pill,.sev{padding:0 .45rem;font-size:.7rem;margin-right:.25rem}
.ok.badge,.pill.ok,li.ok .sev{color:var(--ok);background:var(--ok-bg)}
.warn.badge,.pill.warn,li.warn .sev{color:var(--warn);background:var(--warn-bg)}
.fail.badge,.pill.fail,li.fail .sev{color:var(--fail);background:var(--fail-bg)}
.unknown.badge,.pill.muted{color:var(--muted);background:var(--bg)}
main{margin:1rem 0}
table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line);
border-radius:6px}
th,td{padding:.5rem .6rem;text-align:left;vertical-align:top;border-top:1px solid var(--line)}
thead th{font-size:.75rem;text-transform:uppercase;color:var(--muted);border-top:0;
white-space:nowrap}
tbody th{font-weight:400;min-width:10rem}
.idx{font-weight:700;font-size:1.05rem;margin-right:.25rem}
.uuid{display:block;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
font-size:.7rem;overflow-wrap:anywhere}
tr.gpu{border-left:4px solid var(--line)}
tr.ok{border-left-color:var(--ok)}tr.warn{border-left-color:var(--warn)}
tr.fail{border-left-color:var(--fail);background:var(--fail-bg)}
td{white-space:nowrap}
td[data-label=Reasons],td[data-label=Probes],td[data-label="Clock events"]{white-space:normal}
ul.reasons,ul.probes{list-style:none;margin:0;padding:0}
ul.reasons li,ul.probes li{margin:.1rem 0;overflow-wrap:anywhere}
li.down{color:var(--fail);font-weight:600}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85em}
.why{display:block;margin-left:.2rem}
.tag{display:inline-block;border:1px solid var(--line);border-radius:4px;padding:0 .3rem;
margin:0 .2rem .2rem 0;font-size:.75rem}
.bar{display:block;height:4px;width:5rem;background:var(--line);border-radius:2px;
margin-top:.2rem;overflow:hidden}
.bar i{display:block;height:100%;background:var(--muted)}
.empty{padding:1rem;background:var(--card);border:1px solid var(--line);border-radius:6px}
footer{color:var(--muted);font-size:.85rem}
footer nav{display:flex;gap:1rem;flex-wrap:wrap}
a{color:inherit}
@media (max-width:700px){
body{padding:.6rem}
table,thead,tbody,tr,th,td{display:block;width:100%}
table{border:0;background:none}
thead{display:none}
tr.gpu{background:var(--card);border:1px solid var(--line);border-left-width:4px;
border-radius:6px;margin-bottom:.75rem;padding:.25rem 0}
tr.fail{background:var(--fail-bg)}
th,td{border-top:0;padding:.25rem .7rem}
td{display:grid;grid-template-columns:6.5rem minmax(0,1fr);gap:.5rem;white-space:normal}
td::before{content:attr(data-label);color:var(--muted);font-size:.75rem;
text-transform:uppercase;padding-top:.1rem}
}
"""

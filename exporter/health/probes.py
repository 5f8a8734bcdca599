"""Verdict reasons from the active probes: the last result that was not skipped counts.

A `fail` is already confirmed by a retry (the runner re-runs a failing probe before saying
so); it fails the GPU until the probe passes again. A pass inside the warn band warns. An
`error` is the probe's own trouble, not the GPU's: it shows in `gpu_probe_success`, not here.
The ECC/Xid scan is left out: it judges the same facts the verdict reads directly (Xids, ECC,
remap and SRAM state), and one fact must not be two reasons.
"""

from __future__ import annotations

from collections.abc import Iterable

from probes.result import Outcome, ProbeResult

from .verdict import Reason, Status

NOT_A_REASON = frozenset({"ecc_xid_scan"})


def probe_reasons(results: Iterable[ProbeResult]) -> list[Reason]:
    """Reasons of one GPU from the latest result of each probe (and peer)."""
    out = []
    for r in results:
        if r.probe in NOT_A_REASON:
            continue
        peer = f" (peer {r.peer_uuid})" if r.peer_uuid else ""
        if r.outcome is Outcome.FAIL:
            out.append(Reason(f"probe_{r.probe}", Status.FAIL,
                              f"{r.probe} failed{peer}: {r.reason}", r.started_at))
        elif r.outcome is Outcome.PASS and r.warn:
            out.append(Reason(f"probe_{r.probe}", Status.WARN,
                              f"{r.probe} in the warn band{peer}: {r.reason}", r.started_at))
    return out

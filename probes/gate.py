"""The idle gate: a probe runs only on a GPU nobody is using, so it never slows a customer.

Idle means: no compute process, little memory in use, and utilization low for a whole quiet
period (not one sample: jobs pause between batches). A pair probe needs both GPUs idle. The
reason a probe was skipped is returned, so it can be shown and counted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

GIB = 2**30


@dataclass(frozen=True)
class GateSettings:
    max_utilization: float = 0.05
    max_memory_used_bytes: float = 2 * GIB
    quiet_seconds: float = 120.0
    skip_allocated: bool = True  # a pod holding the GPU may start work at any moment


@dataclass
class Activity:
    """What the telemetry saw on one GPU: recent utilization samples and the latest state."""

    processes: int | None = None
    memory_used_bytes: float | None = None
    utilization: deque[tuple[float, float]] = field(default_factory=deque)  # (monotonic, ratio)
    # Pods the kubelet allocated this GPU to ("ns/pod/container"); without the host PID
    # namespace a pod's processes are invisible, so this is the gate's surest signal there.
    pods: tuple[str, ...] = ()
    pods_unknown: bool = False  # attribution is on but the kubelet does not answer

    def record(self, now: float, utilization: float | None, keep_seconds: float) -> None:
        if utilization is not None:
            self.utilization.append((now, utilization))
        while self.utilization and now - self.utilization[0][0] > keep_seconds:
            self.utilization.popleft()


def busy_reason(activity: Activity | None, settings: GateSettings, now: float) -> str | None:
    """None when the GPU is idle; otherwise why a probe must not run now."""
    if activity is None:
        return "no telemetry for this GPU yet"
    if settings.skip_allocated and activity.pods_unknown:
        return "pod allocation unknown (the kubelet's pod-resources API is not answering)"
    if settings.skip_allocated and activity.pods:
        more = f" and {len(activity.pods) - 1} more" if len(activity.pods) > 1 else ""
        return f"allocated to pod {activity.pods[0]}{more}"
    if activity.processes:
        return f"{activity.processes} compute process(es) on the GPU"
    if activity.memory_used_bytes is not None and \
            activity.memory_used_bytes > settings.max_memory_used_bytes:
        return (f"{activity.memory_used_bytes / GIB:.1f} GiB of memory in use (idle means at "
                f"most {settings.max_memory_used_bytes / GIB:.1f} GiB)")
    samples = activity.utilization
    if not samples:
        return "no utilization sample yet"
    covered = now - samples[0][0]
    if covered < settings.quiet_seconds * 0.9:
        return (f"quiet for {covered:.0f} s of the {settings.quiet_seconds:.0f} s quiet period "
                "so far")
    peak = max(u for _, u in samples)
    if peak > settings.max_utilization:
        return (f"utilization reached {peak:.0%} in the last {settings.quiet_seconds:.0f} s "
                f"(idle means at most {settings.max_utilization:.0%})")
    return None

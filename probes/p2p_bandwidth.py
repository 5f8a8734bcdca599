"""GPU-to-GPU bandwidth: cudaMemcpyPeerAsync of `bytes` from device 0 to device 1.

The child sees the pair as CUDA devices 0 and 1 (`CUDA_VISIBLE_DEVICES=<uuid>,<peer uuid>`).
Peer access is enabled both ways, so the copy goes over NVLink or PCIe directly rather than
staged through host memory; where the pair cannot reach each other (canAccessPeer false) the
probe is skipped, since a staged copy measures the host, not the link. `p2p_bytes_per_second`
= bytes / median copy time, bytes counted once (one direction). NVLink multicast is not used.
"""

from __future__ import annotations

from types import ModuleType

from .cuda_runtime import ProbeContext, event_seconds, landed, median, warm_up
from .result import Measurement

PEER_ALREADY_ENABLED = 704  # cudaErrorPeerAccessAlreadyEnabled


def _enable(cp: ModuleType, device: int, peer: int) -> bool:
    """Enable `device` -> `peer` access; True when this call enabled it (and must undo it)."""
    with cp.cuda.Device(device):
        try:
            cp.cuda.runtime.deviceEnablePeerAccess(peer)
        except cp.cuda.runtime.CUDARuntimeError as e:
            if e.status != PEER_ALREADY_ENABLED:
                raise
            return False
    return True


def measure(ctx: ProbeContext) -> Measurement:
    cp = ctx.cupy
    rt = cp.cuda.runtime
    src_dev, dst_dev = ctx.devices
    if not (rt.deviceCanAccessPeer(src_dev, dst_dev) and rt.deviceCanAccessPeer(dst_dev, src_dev)):
        return Measurement(skipped=f"{ctx.uuid} and {ctx.peer_uuid} cannot access each other "
                                   "as peers (canAccessPeer is false)")
    nbytes = int(ctx.params["bytes"])
    repeats = int(ctx.params["repeats"])
    enabled = [(d, p) for d, p in ((src_dev, dst_dev), (dst_dev, src_dev)) if _enable(cp, d, p)]
    try:
        with cp.cuda.Device(dst_dev):
            dst = cp.empty(nbytes, dtype=cp.uint8)
        with cp.cuda.Device(src_dev):
            stream = cp.cuda.Stream(non_blocking=True)
            src = cp.empty(nbytes, dtype=cp.uint8)
            src.data.memset_async(0x3C, nbytes, stream)

            def copy() -> None:
                rt.memcpyPeerAsync(dst.data.ptr, dst_dev, src.data.ptr, src_dev, nbytes,
                                   stream.ptr)

            warm_up(stream, copy, 2)
            with ctx.timed():
                times = event_seconds(cp, stream, copy, repeats)
        with cp.cuda.Device(dst_dev):
            ok = landed(dst, 0x3C)
    finally:
        disable = getattr(rt, "deviceDisablePeerAccess", None)  # older CuPy lacks it
        for d, p in enabled if disable else ():
            with cp.cuda.Device(d):
                disable(p)
    if not ok:
        raise RuntimeError("peer copy left wrong bytes on the peer")
    return Measurement(quantities={"p2p_bytes_per_second": nbytes / median(times)},
                       detail=f"{nbytes} bytes x {repeats}, device 0 -> 1, bytes counted once")

"""Kubernetes attribution: which pod's container each GPU is allocated to (kubelet
pod-resources API), and optionally which container a GPU process runs in (/proc cgroups).

`PodAttribution` is the piece the daemon runs: a refresher thread, a publisher contributor
(`rows`) and the idle gate's source (`allocated_uuids`). Only `client` imports grpc, and only
when a PodAttribution is made without a client of its own; docs/kubernetes.md has the whole
story.
"""

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"

from .attribution import PodAttribution  # noqa: E402  (after DEFAULT_SOCKET, which it uses)
from .devices import Allocation, GpuIndex, Target  # noqa: E402

__all__ = ["DEFAULT_SOCKET", "Allocation", "GpuIndex", "PodAttribution", "Target"]

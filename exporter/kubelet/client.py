"""A client of the kubelet's pod-resources API (v1) over its unix socket.

Two calls, each with a deadline: `List` (the devices allocated to every container of the node)
and `GetAllocatableResources` (every device the device plugins advertise). Answers come back as
plain tuples, so nothing past this module sees a protobuf message or a gRPC error.

The channel is made on first use and dropped after any failure: a kubelet restart replaces the
socket, and a fresh channel connects at the next refresh instead of waiting out gRPC's
reconnect backoff (up to two minutes).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import grpc

from . import DEFAULT_SOCKET
from .devices import Allocation
from .proto import api_pb2, api_pb2_grpc

# The kubelet's own client allows answers this large (podresources.DefaultMaxSize, 16 MiB):
# a busy node's List can pass gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class PodResourcesError(Exception):
    """A call did not answer. `reason` is short and stable: socket_missing,
    socket_permission_denied, a gRPC status code name (DEADLINE_EXCEEDED, UNAVAILABLE, ...)
    or error."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, order=True)
class Allocatable:
    """A device a device plugin advertises to the kubelet (allocated or not)."""

    resource: str
    device_id: str


class PodResourcesClient:
    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._stub: api_pb2_grpc.PodResourcesListerStub | None = None

    def list(self) -> tuple[Allocation, ...]:
        """Every device allocated to every container, sorted (equal answers compare equal)."""
        answer = self._call("List", api_pb2.ListPodResourcesRequest())
        out = []
        for pod in answer.pod_resources:
            for container in pod.containers:
                for devices in container.devices:
                    for device_id in devices.device_ids:
                        out.append(Allocation(pod.namespace, pod.name, container.name,
                                              devices.resource_name, device_id))
        return tuple(sorted(out))

    def allocatable(self) -> tuple[Allocatable, ...] | None:
        """The devices the node offers; None from a kubelet without the call (before 1.23 it
        was behind the KubeletPodResourcesGetAllocatable gate)."""
        try:
            answer = self._call("GetAllocatableResources", api_pb2.AllocatableResourcesRequest())
        except PodResourcesError as e:
            if e.reason == grpc.StatusCode.UNIMPLEMENTED.name:
                return None
            raise
        return tuple(sorted(Allocatable(d.resource_name, i)
                            for d in answer.devices for i in d.device_ids))

    def close(self) -> None:
        with self._lock:
            channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()

    # --- internals ------------------------------------------------------------------------------
    def _call(self, method: str, request):  # type: ignore[no-untyped-def]
        if not os.path.exists(self.socket_path):
            # Said plainly: gRPC would only report UNAVAILABLE after trying to connect.
            self.close()
            raise PodResourcesError("socket_missing", f"{self.socket_path} does not exist")
        stub = self._connect()
        try:
            return getattr(stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as e:
            self.close()
            code = e.code() if hasattr(e, "code") else None
            detail = (e.details() if hasattr(e, "details") else None) or str(e)
            reason = code.name if code else "error"
            if code is grpc.StatusCode.UNAVAILABLE and "Permission denied" in detail:
                # connect(2) got EACCES: the socket is writable only by its owner (root).
                reason = "socket_permission_denied"
            raise PodResourcesError(reason, f"{method}: {detail}") from None

    def _connect(self) -> api_pb2_grpc.PodResourcesListerStub:
        with self._lock:
            if self._stub is None:
                self._channel = grpc.insecure_channel(
                    "unix://" + os.path.abspath(self.socket_path),
                    options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                             ("grpc.enable_http_proxy", 0)])
                self._stub = api_pb2_grpc.PodResourcesListerStub(self._channel)
            return self._stub

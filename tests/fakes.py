"""A minimal in-memory backend for sampler and server tests: fields that return, block or fail.

Blocking is an Event the test controls, never a sleep.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from exporter.backends.base import BackendEvent, Device, DeviceLost, Field, Sample, sample
from exporter.catalog import Tier


class FakeBackend:
    name = "fake"

    def __init__(self, gpus: int = 3) -> None:
        self._devices = [Device(i, f"GPU-fake-{i}") for i in range(gpus)]
        self.gates: dict[tuple[int, str], threading.Event] = {}  # (gpu, field) -> gate
        self.entered: dict[tuple[int, str], threading.Event] = {}
        self.lost: set[int] = set()
        self.unsupported: set[tuple[int, str]] = set()
        self.reads: dict[tuple[int, str], int] = {}
        self.util = 0.5
        self.stopped = False
        self.starts = self.stops = 0
        self.fail_start: Exception | None = None  # start() raises this while set

    # test controls
    def block(self, gpu: int, field: str) -> threading.Event:
        """Make the next reads of `field` on `gpu` block until the returned event is set."""
        gate = threading.Event()
        self.gates[(gpu, field)] = gate
        self.entered[(gpu, field)] = threading.Event()
        return gate

    # protocol
    def start(self) -> None:
        if self.fail_start is not None:
            raise self.fail_start
        self.starts += 1
        self.stopped = False

    def stop(self) -> None:
        self.stops += 1
        self.stopped = True

    def add_gpu(self) -> Device:
        index = len(self._devices)
        device = Device(index, f"GPU-fake-new-{index}")
        self._devices.append(device)
        return device

    def devices(self) -> list[Device]:
        return self._devices

    def poll_events(self, timeout: float) -> list[BackendEvent]:
        return []

    def fields(self, device: Device) -> list[Field]:
        def make(name: str, tier: Tier, collector: str, produce) -> Field:
            def read(dev: Device) -> Iterable[Sample]:
                key = (dev.index, name)
                self.reads[key] = self.reads.get(key, 0) + 1
                if dev.index in self.lost:
                    raise DeviceLost("fell off the bus")
                if key in self.unsupported:
                    from exporter.backends.base import Unsupported

                    raise Unsupported(name)
                gate = self.gates.get(key)
                if gate is not None:
                    self.entered[key].set()
                    gate.wait()
                return produce(dev)

            return Field(name, tier, collector, read)

        return [
            make("identity", Tier.IDENTITY, "identity", lambda d: [sample(
                "gpu_info", 1, vendor="nvidia", model="Fake GPU",
                pci_bus_id=f"0000:0{d.index}:00.0", serial="1", driver_version="1",
                vbios_version="1", cuda_version="13.0", rocm_version="", compute_partition="",
                memory_partition="")]),
            make("utilization", Tier.FAST, "utilization",
                 lambda d: [sample("gpu_utilization_ratio", self.util)]),
            make("memory", Tier.FAST, "memory",
                 lambda d: [sample("gpu_memory_used_bytes", 2**30)]),
            make("energy", Tier.SLOW, "power", lambda d: [
                sample("gpu_energy_joules_total", 1000.0 + self.reads[(d.index, "energy")])]),
        ]

    @classmethod
    def from_settings(cls, settings) -> FakeBackend:
        return cls()

"""Kubernetes attribution: a real gRPC server speaking the kubelet's pod-resources v1 API on a
unix socket; device IDs of the NVIDIA and AMD plugins (UUID, index, time-slicing replicas, MIG,
PCI addresses) mapped to our GPUs; outages (no socket, a call past its deadline) that keep the
last answer for a while, log once and never raise; per-process attribution over a fake /proc.

Refreshes are driven with `refresh_now()`; a slow kubelet is a servicer blocked on an event.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from kubelet_stub import Kubelet, serve_kubelet

from exporter.backends.base import sample
from exporter.exposition import Row, group_rows
from exporter.kubelet import PodAttribution
from exporter.kubelet.devices import Allocation, GpuIndex, place, strip_replica
from exporter.kubelet.processes import (
    ContainerNames,
    ContainerRef,
    GpuProcess,
    attribute_gpu,
    classify,
    host_pid_namespace,
    parse_cgroup,
    pid_owner,
)
from exporter.sampler import GpuState, SamplerView

UUID0 = "GPU-11111111-1111-1111-1111-111111111111"
UUID1 = "GPU-22222222-2222-2222-2222-222222222222"
AMD_UUID = "a1b274a1-0000-1000-80ff-0123456789ab"
MIG_A = "MIG-aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa"
MIG_B = "MIG-bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb"


# --- a node: NVIDIA GPUs 0 (MIG) and 1, one AMD GPU (index 0 of its own backend) ---------------
def gpu(backend: str, index: int, uuid: str, bus: str, migs: tuple[str, ...] = (),
        up: bool = True, extra: tuple = ()) -> GpuState:
    samples = [sample("gpu_info", 1, vendor=backend, model="m", pci_bus_id=bus)]
    if up:
        samples += [sample("gpu_mig_info", 1, mig_uuid=m, gpu_instance=i + 1,
                           compute_instance=0, profile="3g.40gb") for i, m in enumerate(migs)]
        samples += list(extra)
    return GpuState(backend, index, uuid, up, None if up else "down", tuple(samples))


def node(*gpus: GpuState) -> SamplerView:
    gpus = gpus or (gpu("nvml", 0, UUID0, "00000000:18:00.0", (MIG_A, MIG_B)),
                    gpu("nvml", 1, UUID1, "00000000:2A:00.0"),
                    gpu("amdsmi", 0, AMD_UUID, "0000:c1:00.0"))
    return SamplerView(1, tuple(gpus), {}, {}, {}, 0.0)


def pod_info(rows: list[Row]) -> set[tuple[str, ...]]:
    """gpu_pod_info rows as (gpu, uuid, mig_uuid, namespace, pod, container) tuples."""
    return {tuple(v for _, v in r.labels) for r in rows if r.family == "gpu_pod_info"}


def value(rows: list[Row], family: str) -> float:
    (hit,) = [r.value for r in rows if r.family == family]
    return hit


def warnings_of(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("exporter")]


def assert_contract(rows: list[Row]) -> None:
    """Every row passes the renderer's check: family known, labels in the catalog's order."""
    groups, problems = group_rows(rows)
    assert problems == []
    assert sum(len(g) for g in groups.values()) == len(rows)


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[Kubelet]:
    with serve_kubelet(tmp_path) as state:
        yield state


@pytest.fixture
def attribution(kubelet: Kubelet) -> Iterator[PodAttribution]:
    attr = PodAttribution(socket_path=kubelet.socket, timeout=5.0, interval=10.0)
    yield attr
    attr.stop()


# --- device ID spellings, through the real API -------------------------------------------------
def test_whole_gpus_by_uuid(kubelet: Kubelet, attribution: PodAttribution) -> None:
    kubelet.pods = [
        ("llm", "vllm-0", {"vllm": [("nvidia.com/gpu", [UUID1])], "sidecar": []}),
        ("batch", "train-0", {"trainer": [("nvidia.com/gpu", [UUID0.lower()])]}),
        ("net", "rdma-0", {"app": [("rdma/hca", ["mlx5_0"])]}),  # not a GPU: ignored
    ]
    assert attribution.refresh_now()
    rows = attribution.rows(node())
    assert value(rows, "gpu_exporter_kubelet_up") == 1.0
    assert pod_info(rows) == {("1", UUID1, "", "llm", "vllm-0", "vllm"),
                              ("0", UUID0, "", "batch", "train-0", "trainer")}
    assert_contract(rows)
    assert attribution.allocated_uuids() == {UUID0, UUID1}
    assert attribution.allocatable is None  # this kubelet lacks GetAllocatableResources


def test_index_strategy_names_nvidia_gpus_by_nvml_index(kubelet: Kubelet,
                                                        attribution: PodAttribution) -> None:
    kubelet.pods = [("ml", "a", {"c": [("nvidia.com/gpu", ["0", "1"])]}),
                    ("ml", "b", {"c": [("nvidia.com/gpu", ["7"])]})]  # no GPU 7: ignored
    kubelet.allocatable = [("nvidia.com/gpu", ["0", "1"])]
    assert attribution.refresh_now()
    rows = attribution.rows(node())
    # The AMD GPU is index 0 of its own backend: the NVIDIA plugin's "0" is never it.
    assert pod_info(rows) == {("0", UUID0, "", "ml", "a", "c"), ("1", UUID1, "", "ml", "a", "c")}
    assert_contract(rows)
    assert [(a.resource, a.device_id) for a in attribution.allocatable] == [
        ("nvidia.com/gpu", "0"), ("nvidia.com/gpu", "1")]


def test_time_slicing_replicas_two_pods_on_one_gpu(kubelet: Kubelet,
                                                    attribution: PodAttribution) -> None:
    kubelet.pods = [
        ("llm", "small-0", {"vllm": [("nvidia.com/gpu", [f"{UUID1}::0"])]}),
        ("llm", "small-1", {"vllm": [("nvidia.com/gpu.shared", [f"{UUID1}::3"])]}),
        # One container holding two replicas of one GPU is one series.
        ("llm", "greedy", {"vllm": [("nvidia.com/gpu", [f"{UUID0}::1", f"{UUID0}::2"])]}),
    ]
    assert attribution.refresh_now()
    rows = attribution.rows(node())
    assert pod_info(rows) == {("1", UUID1, "", "llm", "small-0", "vllm"),
                              ("1", UUID1, "", "llm", "small-1", "vllm"),
                              ("0", UUID0, "", "llm", "greedy", "vllm")}
    assert_contract(rows)


def test_mig_devices_map_to_their_parent(kubelet: Kubelet, attribution: PodAttribution) -> None:
    kubelet.pods = [
        ("llm", "a", {"c": [("nvidia.com/mig-3g.40gb", [MIG_A])]}),
        ("llm", "b", {"c": [("nvidia.com/gpu", [MIG_B.upper()])]}),
        ("llm", "old", {"c": [("nvidia.com/mig-1g.10gb", [f"MIG-{UUID1}/7/0"])]}),  # < R470
        ("llm", "idx", {"c": [("nvidia.com/mig-1g.10gb", ["0:3"])]}),  # index strategy
    ]
    assert attribution.refresh_now()
    view = node()
    rows = attribution.rows(view)
    assert pod_info(rows) == {("0", UUID0, MIG_A, "llm", "a", "c"),
                              ("0", UUID0, MIG_B, "llm", "b", "c"),
                              ("1", UUID1, f"MIG-{UUID1}/7/0", "llm", "old", "c"),
                              ("0", UUID0, "", "llm", "idx", "c")}
    assert_contract(rows)
    # GPU 0 goes down (only gpu_info survives): its MIG devices still resolve.
    down = node(gpu("nvml", 0, UUID0, "00000000:18:00.0", (MIG_A, MIG_B), up=False),
                gpu("nvml", 1, UUID1, "00000000:2A:00.0"))
    assert ("0", UUID0, MIG_A, "llm", "a", "c") in pod_info(attribution.rows(down))


def test_amd_pci_addresses_in_any_spelling(kubelet: Kubelet, attribution: PodAttribution) -> None:
    kubelet.pods = [("rocm", "a", {"c": [("amd.com/gpu", ["0000:C1:00.0"])]}),
                    ("rocm", "b", {"c": [("amd.com/gpu", ["00000000:c1:00.0"])]}),
                    ("rocm", "c", {"c": [("amd.com/gpu", ["0000:99:00.0"])]})]  # not here
    assert attribution.refresh_now()
    rows = attribution.rows(node())
    assert pod_info(rows) == {("0", AMD_UUID, "", "rocm", "a", "c"),
                              ("0", AMD_UUID, "", "rocm", "b", "c")}
    assert_contract(rows)
    assert attribution.allocated_uuids() == {AMD_UUID}


def test_pods_come_and_go_between_refreshes(kubelet: Kubelet, attribution: PodAttribution
                                            ) -> None:
    changes = []
    attribution.on_change = lambda: changes.append(1)
    kubelet.pods = [("llm", "a", {"c": [("nvidia.com/gpu", [UUID0])]})]
    attribution.refresh_now()
    assert pod_info(attribution.rows(node())) == {("0", UUID0, "", "llm", "a", "c")}
    kubelet.pods = [("llm", "b", {"c": [("nvidia.com/gpu", [UUID1])]})]
    attribution.refresh_now()
    assert pod_info(attribution.rows(node())) == {("1", UUID1, "", "llm", "b", "c")}
    assert attribution.allocated_uuids() == {UUID1}
    attribution.refresh_now()  # the same answer: nothing to re-render
    kubelet.pods = []
    attribution.refresh_now()
    assert pod_info(attribution.rows(node())) == set()
    assert attribution.allocated_uuids() == set()
    assert len(changes) == 3


def test_refresher_thread_starts_and_stops(kubelet: Kubelet) -> None:
    kubelet.pods = [("llm", "a", {"c": [("nvidia.com/gpu", [UUID0])]})]
    answered = threading.Event()
    attr = PodAttribution(socket_path=kubelet.socket, interval=3600, on_change=answered.set)
    attr.start()
    try:
        assert answered.wait(10), "the refresher's first refresh never answered"
        assert attr.up and attr.allocated_uuids(node()) == {UUID0}
    finally:
        attr.stop()
    assert not attr._thread.is_alive()


# --- outages -------------------------------------------------------------------------------------
def test_socket_absent_up_zero_one_warning_no_exception(tmp_path: Path, caplog) -> None:
    pytest.importorskip("grpc")
    attr = PodAttribution(socket_path=str(tmp_path / "missing.sock"), timeout=0.5)
    caplog.set_level(logging.DEBUG, logger="exporter.kubelet")
    for _ in range(3):
        assert attr.refresh_now() is False
    rows = attr.rows(node())
    assert value(rows, "gpu_exporter_kubelet_up") == 0.0
    assert pod_info(rows) == set()
    assert not attr.allocation_known
    warnings = warnings_of(caplog)
    assert len(warnings) == 1 and warnings[0].reason == "socket_missing"
    assert attr.failures["socket_missing"] == 3
    assert_contract(rows)
    attr.stop()


def test_slow_kubelet_deadline_keeps_last_mapping_for_a_while(kubelet: Kubelet, caplog) -> None:
    now = [1000.0]
    attr = PodAttribution(socket_path=kubelet.socket, timeout=0.3, keep_stale=60,
                          clock=lambda: now[0])
    kubelet.pods = [("llm", "a", {"c": [("nvidia.com/gpu", [UUID0])]})]
    assert attr.refresh_now()
    kubelet.hold = threading.Event()  # List now blocks until released
    caplog.set_level(logging.INFO, logger="exporter.kubelet")
    assert attr.refresh_now() is False  # returns at its deadline, the server still blocked
    assert kubelet.entered.is_set() and not kubelet.hold.is_set()
    assert attr.failures["DEADLINE_EXCEEDED"] == 1
    rows = attr.rows(node())
    assert value(rows, "gpu_exporter_kubelet_up") == 0.0
    assert pod_info(rows) == {("0", UUID0, "", "llm", "a", "c")}  # the last good answer
    assert attr.allocated_uuids() == {UUID0}
    assert attr.refresh_now() is False  # a second failure: still one warning
    assert len(warnings_of(caplog)) == 1
    now[0] += 61  # past keep_stale: the answer is too old to trust
    assert pod_info(attr.rows(node())) == set()
    assert not attr.allocation_known and attr.allocated_uuids(node()) == set()
    kubelet.hold.set()  # the kubelet recovers
    kubelet.hold = None
    assert attr.refresh_now()
    assert value(attr.rows(node()), "gpu_exporter_kubelet_up") == 1.0
    assert any("answers again" in r.getMessage() for r in caplog.records)
    attr.stop()


def test_kubelet_error_is_counted_by_status(kubelet: Kubelet, attribution: PodAttribution
                                            ) -> None:
    import grpc

    kubelet.fail_with = grpc.StatusCode.PERMISSION_DENIED
    assert attribution.refresh_now() is False
    assert attribution.failures == {"PERMISSION_DENIED": 1}
    # How grpc reports connect(2) failing with EACCES (a root-only socket, a non-root exporter).
    kubelet.fail_with = grpc.StatusCode.UNAVAILABLE
    kubelet.fail_message = "connect failed: addr: unix:/x/kubelet.sock error: Permission denied"
    assert attribution.refresh_now() is False
    assert attribution.failures["socket_permission_denied"] == 1
    kubelet.fail_with = None
    assert attribution.refresh_now() and attribution.up


def test_unexpected_client_bug_never_raises(caplog) -> None:
    class Broken:
        def list(self):
            raise RuntimeError("bug")

        def allocatable(self):
            return None

        def close(self):
            pass

    attr = PodAttribution(Broken())
    assert attr.refresh_now() is False and attr.failures == {"RuntimeError": 1}
    assert value(attr.rows(None), "gpu_exporter_kubelet_up") == 0.0


# --- sharing the node with the simulated allocation ---------------------------------------------
def test_gpus_with_their_own_pod_samples_are_not_doubled() -> None:
    class Fixed:
        def list(self):
            return (Allocation("llm", "a", "c", "nvidia.com/gpu", UUID0),)

        def allocatable(self):
            return None

        def close(self):
            pass

    sim_pod = sample("gpu_pod_info", 1, mig_uuid="", namespace="sim", pod="p", container="c")
    view = node(gpu("sim", 0, UUID0, "00000000:18:00.0", extra=(sim_pod,)),
                gpu("sim", 1, UUID1, "00000000:2A:00.0", extra=(sim_pod,)))
    attr = PodAttribution(Fixed())
    attr.refresh_now()
    assert pod_info(attr.rows(view)) == set()  # the sim's own samples carry them
    assert attr.allocated_uuids() == {UUID0, UUID1}
    assert attr.allocated()[UUID1] == {("sim", "p", "c")}


def test_device_id_helpers() -> None:
    assert strip_replica("GPU-x::12") == "GPU-x" and strip_replica("0::1") == "0"
    index = GpuIndex(node())
    assert index.resolve("nvidia.com/gpu", "0::1").uuid == UUID0
    assert index.resolve("example.com/gpu", UUID0) is None
    result = place([Allocation("a", "b", "c", "nvidia.com/gpu", "GPU-nope"),
                    Allocation("a", "b", "c", "cpu", "1")], index)
    assert result.series == () and [a.device_id for a in result.unknown] == ["GPU-nope"]


# --- per-process attribution over a fake /proc and /var/log ------------------------------------
POD_A = "0a1b2c3d-0000-4000-8000-00000000000a"  # allocated UUID0 alone
POD_B = "0a1b2c3d-0000-4000-8000-00000000000b"  # time-slices UUID1 with POD_C
POD_C = "0a1b2c3d-0000-4000-8000-00000000000c"
CID = {name: (name * 64)[:64] for name in "abcdef"}  # container IDs: 'aaaa...', 'bbbb...'

CGROUP_V2_SYSTEMD = ("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
                     f"{POD_A.replace('-', '_')}.slice/cri-containerd-{CID['a']}.scope\n")
CGROUP_V1_CGROUPFS = "".join(f"{n}:{c}:/kubepods/besteffort/pod{POD_B}/{CID['b']}\n"
                             for n, c in ((12, "memory"), (4, "cpu,cpuacct"), (1, "name=systemd")))
CGROUP_V2_GUARANTEED_NS = (  # seen from inside a cgroup namespace: relative, CRI-O
    f"0::/../../kubepods-pod{POD_C.replace('-', '_')}.slice/crio-{CID['c']}.scope\n")
CGROUP_HOST = "0::/system.slice/sshd.service\n"


def fake_proc(root: Path, pids: dict[int, tuple[str, str]], kthreadd: bool = True) -> Path:
    for pid, (comm, cgroup) in {**pids, 2: ("kthreadd" if kthreadd else "sh", "0::/\n")}.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "comm").write_text(comm + "\n")
        (root / str(pid) / "cgroup").write_text(cgroup)
    return root


def fake_logs(root: Path, pods: dict[str, tuple[str, str]],
              containers: dict[str, tuple[str, str, str]]) -> Path:
    for uid, (ns, pod) in pods.items():
        (root / "pods" / f"{ns}_{pod}_{uid}").mkdir(parents=True)
    (root / "containers").mkdir(parents=True, exist_ok=True)
    for cid, (ns, pod, container) in containers.items():
        (root / "containers" / f"{pod}_{ns}_{container}-{cid}.log").touch()
    return root


def test_parse_cgroup_formats() -> None:
    assert parse_cgroup(CGROUP_V2_SYSTEMD) == ContainerRef(POD_A, CID["a"])
    assert parse_cgroup(CGROUP_V1_CGROUPFS) == ContainerRef(POD_B, CID["b"])
    assert parse_cgroup(CGROUP_V2_GUARANTEED_NS) == ContainerRef(POD_C, CID["c"])
    static = "0::/kubepods/burstable/pod" + "f" * 32 + "/docker-" + CID["d"] + ".scope\n"
    assert parse_cgroup(static) == ContainerRef("f" * 32, CID["d"])
    assert parse_cgroup(CGROUP_HOST) is None
    assert parse_cgroup(f"0::/kubepods/burstable/pod{POD_A}\n") is None  # the pod, no container


def test_pid_to_container_and_mps(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", {
        100: ("python", CGROUP_V2_SYSTEMD),
        200: ("vllm", CGROUP_V1_CGROUPFS),
        300: ("nvidia-cuda-mps", CGROUP_V2_GUARANTEED_NS),  # the server, in a pod of its own
        400: ("Xorg", CGROUP_HOST),
    })
    names = ContainerNames.scan(fake_logs(
        tmp_path / "log", {POD_A: ("research", "nb-0"), POD_B: ("llm", "small-0")},
        {CID["a"]: ("research", "nb-0", "jupyter")}))
    assert host_pid_namespace(proc)
    assert pid_owner(100, names, proc_root=proc).triple == ("research", "nb-0", "jupyter")
    assert pid_owner(100, names, proc_root=proc).how == "container id"
    # POD_B's container is not in /var/log/containers (yet): its pod plus the allocation name it.
    owner = pid_owner(200, names, {("llm", "small-0", "vllm"), ("llm", "small-1", "vllm")},
                      proc_root=proc)
    assert owner.triple == ("llm", "small-0", "vllm") and owner.how == "pod uid"
    assert pid_owner(300, names, proc_root=proc) == "mps"
    assert pid_owner(400, names, proc_root=proc) == "host"
    assert pid_owner(999, names, proc_root=proc) == "gone"
    assert classify(100, proc) == ContainerRef(POD_A, CID["a"])


def test_sole_holder_inference_and_its_limits(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", {
        1: ("python", CGROUP_V2_SYSTEMD), 21: ("python", CGROUP_V2_SYSTEMD),
        3: ("python", CGROUP_V1_CGROUPFS), 4: ("nvidia-cuda-mps", CGROUP_HOST)})
    nobody = ContainerNames()
    sole = {("research", "nb-0", "jupyter")}
    one_pod = attribute_gpu([GpuProcess(1, 100.0), GpuProcess(21, 50.0), GpuProcess(4, 7.0),
                             GpuProcess(5, 1.0), GpuProcess(1, None)], sole, nobody, proc)
    assert one_pod.memory == {("research", "nb-0", "jupyter"): 150.0}
    assert one_pod.skipped == {"mps": 1, "gone": 1, "memory not reported": 1}
    # Processes of two pods on a GPU held by one container: no guessing.
    two_pods = attribute_gpu([GpuProcess(1, 100.0), GpuProcess(3, 5.0)], sole, nobody, proc)
    assert two_pods.memory == {} and two_pods.skipped == {"unresolved": 2}
    # Two holders (time-slicing) and no names: no guessing either.
    shared = attribute_gpu([GpuProcess(1, 100.0)], sole | {("x", "y", "z")}, nobody, proc)
    assert shared.memory == {}


def test_pod_memory_rows_through_the_contributor(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", {
        100: ("python", CGROUP_V2_SYSTEMD), 101: ("python", CGROUP_V2_SYSTEMD),
        200: ("vllm", CGROUP_V1_CGROUPFS), 300: ("vllm", CGROUP_V2_GUARANTEED_NS),
        400: ("nvidia-cuda-mps", CGROUP_HOST)})
    logs = fake_logs(tmp_path / "log", {POD_B: ("llm", "small-0"), POD_C: ("llm", "small-1")},
                     {CID["c"]: ("llm", "small-1", "vllm")})

    class Fixed:
        def list(self):
            return (Allocation("research", "nb-0", "jupyter", "nvidia.com/gpu", UUID0),
                    Allocation("llm", "small-0", "vllm", "nvidia.com/gpu", UUID1 + "::0"),
                    Allocation("llm", "small-1", "vllm", "nvidia.com/gpu", UUID1 + "::1"))

        def allocatable(self):
            return None

        def close(self):
            pass

    per_gpu = {UUID0: [GpuProcess(100, 2e9), GpuProcess(101, 1e9)],
               UUID1: [GpuProcess(200, 3e9), GpuProcess(300, 4e9), GpuProcess(400, 5e8)]}
    attr = PodAttribution(Fixed(), per_process=True, proc_root=proc, log_root=logs,
                          processes_of=lambda g: per_gpu.get(g.uuid, ()))
    assert attr.refresh_now()
    rows = attr.rows(node())
    memory = {tuple(v for _, v in r.labels): r.value for r in rows
              if r.family == "gpu_pod_memory_used_bytes"}
    assert memory == {("0", UUID0, "research", "nb-0", "jupyter"): 3e9,  # sole holder
                      ("1", UUID1, "llm", "small-0", "vllm"): 3e9,  # pod uid + allocation
                      ("1", UUID1, "llm", "small-1", "vllm"): 4e9}  # container id
    assert attr.unattributed == {"mps": 1}
    assert_contract(rows)


def test_per_process_needs_the_host_pid_namespace(tmp_path: Path, caplog) -> None:
    proc = fake_proc(tmp_path / "proc", {}, kthreadd=False)
    caplog.set_level(logging.WARNING, logger="exporter.kubelet")

    class Empty:
        def list(self):
            return ()

        def allocatable(self):
            return None

        def close(self):
            pass

    attr = PodAttribution(Empty(), per_process=True, proc_root=proc)
    assert attr.per_process is False
    assert any("hostPID" in r.getMessage() for r in caplog.records)
    assert [r.family for r in attr.rows(node())] == ["gpu_exporter_kubelet_up"]


def test_the_real_proc_is_read_without_error() -> None:
    assert host_pid_namespace() in (True, False)
    assert classify(os.getpid()) != "gone"  # this very process exists


def test_refresh_now_is_safe_from_many_threads(kubelet: Kubelet,
                                               attribution: PodAttribution) -> None:
    kubelet.pods = [("llm", "a", {"c": [("nvidia.com/gpu", [UUID0])]})]
    results = []
    threads = [threading.Thread(target=lambda: results.append(attribution.refresh_now()))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    wait_for(lambda: len(results) == 4, what="refreshes")
    assert all(results) and kubelet.calls == 4


# --- wired into the daemon ----------------------------------------------------------------------
def test_daemon_attributes_pods_and_the_idle_gate_skips_allocated_gpus(kubelet: Kubelet) -> None:
    from exporter.backends import OpenedBackends
    from exporter.backends.sim import SimBackend
    from exporter.config import load_settings
    from exporter.daemon import Daemon
    from exporter.exposition import negotiate

    backend = SimBackend(gpus=8, seed=1)
    backend.start()
    devices = list(backend.devices())
    settings = load_settings(overrides={
        "kubernetes": {"pod_resources_socket": kubelet.socket},  # enabled: auto, socket there
        "probes": {"runtime": "sim", "quiet_period": 0.0, "max_utilization": 1.0,
                   "max_memory_used_bytes": 1e15}})
    daemon = Daemon(settings, OpenedBackends(sources=[(backend, devices)]))
    assert daemon.pods is not None
    daemon.sampler.start(schedule=False)
    try:
        view = daemon.sampler.run_cycle()
        # GPUs the simulated node itself gives to no pod: the kubelet allocates the first.
        free = [g for g in view.gpus if g.up and g.samples
                and not any(s.family == "gpu_pod_info" for s in g.samples)]
        assert free, "the simulated node has an unallocated GPU"
        taken = free[0]
        daemon.pods.refresh_now()
        daemon.probes.observe(daemon.sampler.run_cycle())
        assert [r.gpu for r in daemon.probes.run("gemm", [taken.index])] == [taken.index]
        kubelet.pods = [("serving", "vllm-0", {"engine": [("nvidia.com/gpu", [taken.uuid])]})]
        daemon.pods.refresh_now()
        daemon.probes.observe(daemon.sampler.run_cycle())
        body = daemon.publisher.current.body(negotiate("text/plain"), False).decode()
        assert "gpu_exporter_kubelet_up 1.0" in body
        assert 'namespace="serving",pod="vllm-0"' in body
        assert daemon.probes.run("gemm", [taken.index]) == [], daemon.probes.last_skip
        assert daemon.probes.last_skip[(taken.uuid, "gemm")] == \
            "allocated to pod serving/vllm-0/engine"
    finally:
        daemon.sampler.stop()
        daemon.pods.stop(timeout=1.0)


def test_pod_memory_from_the_backends_process_samples(tmp_path: Path) -> None:
    """The NVML and amdsmi backends report each compute process as an internal sample
    (PROCESS_MEMORY); GpuState.processes reads them and attribution sums them per pod."""
    from exporter.backends.base import PROCESS_MEMORY

    proc = fake_proc(tmp_path / "proc", {100: ("python", CGROUP_V2_SYSTEMD)})

    class Fixed:
        def list(self):
            return (Allocation("research", "nb-0", "jupyter", "nvidia.com/gpu", UUID0),)

        def allocatable(self):
            return None

        def close(self):
            pass

    g0 = gpu("nvml", 0, UUID0, "00000000:18:00.0", extra=(
        sample(PROCESS_MEMORY, 2e9, pid=100), sample(PROCESS_MEMORY, -1, pid=101)))
    assert [(p.pid, p.used_bytes) for p in g0.processes] == [(100, 2e9), (101, None)]
    attr = PodAttribution(Fixed(), per_process=True, proc_root=proc,
                          log_root=tmp_path / "no-logs")
    assert attr.refresh_now()
    rows = attr.rows(node(g0))
    memory = {tuple(v for _, v in r.labels): r.value for r in rows
              if r.family == "gpu_pod_memory_used_bytes"}
    assert memory == {("0", UUID0, "research", "nb-0", "jupyter"): 2e9}
    # Never rendered as a metric of its own.
    from exporter.publisher import gpu_rows

    assert not any(r.family.startswith("_") for r in gpu_rows(g0))

"""The CuPy probes against minimal CUDA C++ references of the same operations, on a real GPU.

    python3 bench/probe_reference.py [--uuid GPU-...] [--peer-uuid GPU-...] [--sweep] [--out DIR]

Builds bench/reference/probe_ref.cu with `nvcc -O3 -arch=sm_90`, then for each probe runs the
reference and the probe child exactly as the runner will (`python -m probes.child NAME --uuid
UUID` with `CUDA_VISIBLE_DEVICES=UUID` and a `CUPY_CACHE_DIR`), with the registry's default
parameters on both sides. Each child runs twice: with an empty kernel cache (a node's first
probe) and with the cache it filled. Prints markdown tables: the quantities side by side (ratio
ours / reference; target within 3 %), then start and measurement seconds per probe (target: the
default suite's measurements under 1 s per GPU). `--sweep` adds the size sweeps that place the
defaults on the bandwidth and throughput plateaus. Reads only; never changes a GPU setting.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from probes.registry import PROBES  # noqa: E402  (after the path is set)

SOURCE = REPO / "bench" / "reference" / "probe_ref.cu"
MiB = 2**20
REF_MODE = {"graph_replay": "graph_replay", "pcie_bandwidth": "pcie",
            "memory_bandwidth": "memory", "gemm": "gemm", "p2p_bandwidth": "p2p"}


def ref_args(probe: str, params: dict) -> list[str]:
    """The reference's arguments for a probe's parameters (same sizes on both sides)."""
    if probe == "graph_replay":
        keys = ("elements", "fma_iterations", "replays")
    elif probe == "gemm":
        keys = ("n", "repeats")
    else:
        keys = ("bytes", "repeats")
    return [REF_MODE[probe], *(str(int(params[k])) for k in keys)]


def _cublas_dirs() -> list[str]:
    """Where libcublas may live besides the toolkit: the pip wheels next to CuPy."""
    found = []
    for base in sys.path:
        found += glob.glob(os.path.join(base, "nvidia", "**", "libcublas.so*"), recursive=True)
    found += glob.glob("/usr/local/cuda*/**/libcublas.so*", recursive=True)
    return sorted({os.path.dirname(f) for f in found})


def build(out_dir: Path) -> Path:
    exe = out_dir / "probe_ref"
    base = ["nvcc", "-O3", "-arch=sm_90", "-Xcompiler", "-O3,-mfma", "-o", str(exe),
            str(SOURCE)]
    r = subprocess.run([*base, "-lcublas"], capture_output=True, text=True)
    if r.returncode != 0:
        for d in _cublas_dirs():
            libs = sorted(glob.glob(os.path.join(d, "libcublas.so*")))
            lib = os.path.basename(libs[-1]) if libs else "libcublas.so"
            r = subprocess.run([*base, f"-L{d}", f"-l:{lib}", "-Xlinker", f"-rpath,{d}"],
                               capture_output=True, text=True)
            if r.returncode == 0:
                break
    if r.returncode != 0:
        raise SystemExit(f"nvcc failed:\n{r.stdout}{r.stderr}")
    return exe


def run_ref(exe: Path, args: list[str], visible: str) -> list[dict]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible}
    r = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=300)
    if r.returncode != 0:
        return [{"error": (r.stderr or r.stdout).strip()[-500:]}]
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def run_child(probe: str, uuid: str, peer: str | None, params: dict | None,
              cache: str) -> dict:
    visible = uuid if peer is None else f"{uuid},{peer}"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible, "CUPY_CACHE_DIR": cache,
           "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "probes.child", probe, "--uuid", uuid]
    if peer:
        cmd += ["--peer-uuid", peer]
    if params:
        cmd += ["--params", json.dumps(params)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"error": r.stderr.strip()[-800:], "wall_seconds": wall}
    return {**json.loads(r.stdout.strip().splitlines()[-1]), "wall_seconds": wall}


def gpus() -> list[dict]:
    fields = "uuid,name,driver_version,pcie.link.gen.max,pcie.link.width.max"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    keys = fields.split(",")
    return [dict(zip(keys, (v.strip() for v in line.split(",")), strict=True))
            for line in out.splitlines() if line.strip()]


def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.4g}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uuid")
    ap.add_argument("--peer-uuid")
    ap.add_argument("--probes", default=",".join(PROBES))
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--out", type=Path, help="directory for results.json")
    args = ap.parse_args()
    if not shutil.which("nvcc"):
        raise SystemExit("nvcc not on PATH")
    found = gpus()
    uuid = args.uuid or (found[0]["uuid"] if found else None)
    if not uuid:
        raise SystemExit("no GPU found (nvidia-smi); pass --uuid")
    peer = args.peer_uuid or next((g["uuid"] for g in found if g["uuid"] != uuid), None)
    info = next((g for g in found if g["uuid"] == uuid), {})
    work = Path(tempfile.mkdtemp(prefix="probe-ref-"))
    exe = build(work)
    print(f"# probes vs CUDA C++ reference, {datetime.date.today()}: {info.get('name', '?')}, "
          f"driver {info.get('driver_version', '?')}, PCIe gen {info.get('pcie.link.gen.max')} "
          f"x{info.get('pcie.link.width.max')}, {uuid}\n")

    results: dict[str, dict] = {}
    for probe in args.probes.split(","):
        spec = PROBES[probe]
        if spec.pair and not peer:
            results[probe] = {"skipped": "one GPU only: no peer to pair with"}
            continue
        p = peer if spec.pair else None
        visible = uuid if p is None else f"{uuid},{p}"
        cache = str(work / f"cache-{probe}")
        cold = run_child(probe, uuid, p, None, cache)
        warm = run_child(probe, uuid, p, None, cache)
        ref = run_ref(exe, ref_args(probe, spec.params), visible)
        results[probe] = {"cold": cold, "warm": warm, "ref": ref[0] if ref else {}}

    print("| probe | quantity | ours | ours, cold-cache run | reference | ratio |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for probe, r in results.items():
        if "skipped" in r:
            print(f"| {probe} | — | skipped: {r['skipped']} | | |")
            continue
        ours, ref = r["warm"], r["ref"]
        if "error" in ours or "error" in ref or ours.get("skipped"):
            why = ours.get("error") or ours.get("skipped") or ref.get("error")
            print(f"| {probe} | — | {str(why)[-200:]!r} | | |")
            continue
        for name, v in ours["quantities"].items():
            rv = ref.get("quantities", {}).get(name)
            ratio = v / rv if rv else None
            flag = " ⚠" if ratio is not None and abs(ratio - 1) > 0.03 else ""
            cv = r["cold"].get("quantities", {}).get(name)
            print(f"| {probe} | {name} | {fmt(v)} | {fmt(cv)} | {fmt(rv)} | "
                  f"{fmt(ratio)}{flag} |")
        if ours.get("corrupted") is not None:
            print(f"| {probe} | corrupted | {ours['corrupted']} | "
                  f"{r['cold'].get('corrupted', '—')} | {ref.get('corrupted', '—')} | |")

    print("\n| probe | start s (cold cache) | start s (warm cache) | measure s | child wall s "
          "(warm) | reference measure s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    total = 0.0
    for probe, r in results.items():
        if "skipped" in r or "error" in r["warm"]:
            continue
        c, w = r["cold"], r["warm"]
        total += w.get("measure_seconds", 0.0)
        print(f"| {probe} | {fmt(c.get('start_seconds'))} | {fmt(w.get('start_seconds'))} | "
              f"{fmt(w.get('measure_seconds'))} | {fmt(w.get('wall_seconds'))} | "
              f"{fmt(r['ref'].get('measure_seconds'))} |")
    print(f"\nmeasurement, all probes run: {total:.3f} s (target < 1 s per GPU)\n")
    for probe, r in results.items():
        if "warm" in r:
            print(f"- {probe}: {r['warm'].get('detail') or r['warm'].get('error', '')}")

    if args.sweep:
        results["sweep"] = sweep(exe, uuid, work)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def sweep(exe: Path, uuid: str, work: Path) -> dict:
    """Reference sweeps (pcie 1..256 MiB, d2d 16 MiB..1 GiB, gemm n 1024..16384) and the pcie
    probe itself over the same sizes: where the plateaus start."""
    ref = run_ref(exe, ["sweep"], uuid)
    ours = {}
    cache = str(work / "cache-sweep")
    for m in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        r = run_child("pcie_bandwidth", uuid, None, {"bytes": m * MiB, "repeats": 10}, cache)
        ours[m] = r.get("quantities", {})
    print("\n| sweep | size | h2d / d2d / bf16 | d2h / — / fp16 | probe h2d | probe d2h |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in ref:
        mode, qs = row.get("mode"), row.get("quantities", {})
        if mode == "pcie":
            m = int(qs["bytes"]) // MiB
            o = ours.get(m, {})
            print(f"| pcie | {m} MiB | {fmt(qs['h2d_bytes_per_second'])} | "
                  f"{fmt(qs['d2h_bytes_per_second'])} | {fmt(o.get('h2d_bytes_per_second'))} "
                  f"| {fmt(o.get('d2h_bytes_per_second'))} |")
        elif mode == "memory":
            print(f"| memory | {int(qs['bytes']) // MiB} MiB | "
                  f"{fmt(qs['d2d_bytes_per_second'])} | | | |")
        elif mode == "gemm":
            print(f"| gemm | n={int(qs['n'])} | {fmt(qs['bf16_flop_per_second'])} | "
                  f"{fmt(qs['fp16_flop_per_second'])} | | |")
        else:
            print(f"| {row} |")
    return {"reference": ref, "probe_pcie": ours}


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-process GPU memory as the exporter reads it, next to nvidia-smi's compute-apps list.

    python bench/nvml_processes.py

Starts a CuPy process that holds 1 GiB on GPU 0, reads one collection cycle through the nvml
backend, and prints both views of the compute processes (PID, MiB).
"""

from __future__ import annotations

import subprocess
import sys
import time

from exporter.backends.nvml import NvmlBackend
from exporter.sampler import Sampler

HOLDER = ("import cupy, sys, time; x = cupy.zeros(2**30, dtype=cupy.uint8); "
          "cupy.cuda.runtime.deviceSynchronize(); print('ready', flush=True); time.sleep(60)")


def main() -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        backend = NvmlBackend()
        backend.start()
        sampler = Sampler([(backend, backend.devices())], fast_interval=60, slow_interval=60,
                          call_deadline=5)
        sampler.start(schedule=False)
        view = sampler.run_cycle()
        smi = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True)
        sampler.stop()
        backend.stop()
        print(f"holder pid {holder.pid}, {time.strftime('%Y-%m-%d')}")
        print("| source | pid | MiB |\n|---|---|---|")
        for gpu in view.gpus:
            for p in gpu.processes:
                mib = "n/a" if p.used_bytes is None else f"{p.used_bytes / 2**20:.0f}"
                print(f"| exporter (GPU {gpu.index}) | {p.pid} | {mib} |")
        for line in smi.stdout.strip().splitlines():
            pid, mib = (x.strip() for x in line.split(","))
            print(f"| nvidia-smi | {pid} | {mib} |")
    finally:
        holder.kill()


if __name__ == "__main__":
    main()

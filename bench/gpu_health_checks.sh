#!/usr/bin/env bash
# The health verdict and the node checklist on a real NVIDIA GPU; results land in OUTDIR.
#   bash bench/gpu_health_checks.sh OUTDIR
# Reads only (never changes a GPU setting). Needs the package importable with its daemon
# dependencies and nvidia-ml-py, CuPy for the probes, nvidia-smi on PATH. Writes
# OUTDIR/{health.json, health-gated-readyz.txt, status.html, metrics.txt, probe.json, daemon.log}.
set -uo pipefail
out=${1:?usage: bench/gpu_health_checks.sh OUTDIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
port=19474
get() { python3 -c 'import sys, urllib.request as u
try:
    r = u.urlopen(sys.argv[1], timeout=5); print(r.status); sys.stdout.write(r.read().decode())
except u.HTTPError as e:
    print(e.code); sys.stdout.write(e.read().decode())' "$@"; }

echo "== checklist: ours vs nvidia-smi -q (and sysfs for the NUMA node)"
python3 bench/nvml_vs_smi.py 2>&1 | grep -E "^GPU|persistence|ECC mode|MIG mode|gpu_compute_mode|applications_clocks|numa|agree within"
echo "== host facts: ours vs the files"
python3 -c 'from exporter.hostfacts import read_host_facts; print(read_host_facts())'
echo "kernel: $(uname -r)"
echo "aspm: $(cat /sys/module/pcie_aspm/parameters/policy 2>&1)"
echo "thp: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>&1)"
echo "governors: $(cat /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor 2>/dev/null | sort | uniq -c | tr '\n' ' ')"
echo "iommu groups: $(ls /sys/kernel/iommu_groups 2>/dev/null | wc -l); types: $(cat /sys/kernel/iommu_groups/*/type 2>/dev/null | sort | uniq -c | tr '\n' ' ')"
grep -H . /sys/kernel/mm/hugepages/*/nr_hugepages 2>&1

echo "== daemon on the real GPU: verdict after 75 s (fast 1 s, slow 5 s), readiness gated"
python3 -m exporter serve --collection.backend=nvml --web.listen-address=127.0.0.1:$port \
  --collection.fast-interval=1s --collection.slow-interval=5s --health.gate-readiness=true \
  --events.state-dir="$out/state" > "$out/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 150); do get http://127.0.0.1:$port/healthz >/dev/null 2>&1 && break; sleep 0.2; done
sleep 75  # the throttle and link windows need history; this is the observation time itself
get http://127.0.0.1:$port/health > "$out/health.json"
get http://127.0.0.1:$port/readyz > "$out/health-gated-readyz.txt"
get http://127.0.0.1:$port/ > "$out/status.html"
get http://127.0.0.1:$port/metrics > "$out/metrics.txt"
head -c 600 "$out/health.json"; echo
cat "$out/health-gated-readyz.txt"
grep -E "^gpu_health|^gpu_node_config_info|^gpu_node_hugepages|^gpu_(persistence|ecc|mig)_mode|^gpu_compute_mode|^gpu_applications_clocks|^gpu_numa" "$out/metrics.txt"
grep -c 'data-gpu=' "$out/status.html" | sed 's/^/status page GPU rows: /'
kill -TERM "$pid"; wait "$pid"; echo "daemon exit code: $?"

echo "== probe command: exit code = verdict"
start=$(date +%s)
python3 -m exporter probe --json > "$out/probe.json" 2>"$out/probe.err"
echo "probe exit code: $? in $(( $(date +%s) - start )) s"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("verdict", d["health"]["status"], [(g["gpu"], g["status"], [r["reason"] for r in g["reasons"]]) for g in d["health"]["gpus"]]); print([(r["probe"], r["outcome"]) for r in d["results"]])' "$out/probe.json"
tail -3 "$out/probe.err"
echo "== done"

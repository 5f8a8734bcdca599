#!/usr/bin/env bash
# Every check that needs a real NVIDIA GPU, in one go; results land in OUTDIR.
#   bash bench/gpu_checks.sh OUTDIR
# Reads only (never changes a GPU setting). Needs the package importable (pip install -e .
# or PYTHONPATH=.) with nvidia-ml-py; nvidia-smi on PATH for the comparisons. Writes
# OUTDIR/{nvml-fixture.json, nvidia-smi-q.txt, nvidia-smi-q.xml, metrics.txt, daemon.log};
# the tables go to standard output.
set -uo pipefail
out=${1:?usage: bench/gpu_checks.sh OUTDIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
port=19473
get() { python3 -c 'import sys, urllib.request as u; sys.stdout.write(u.urlopen(sys.argv[1], timeout=5).read().decode())' "$@"; }

nvidia-smi -q > "$out/nvidia-smi-q.txt" 2>&1
echo "== fixture"
python3 tests/fixtures/nvml/record.py "$out/nvml-fixture.json" --machine "${MACHINE:-}" 2>&1 | tail -3
echo "== gpu tests"
python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_nvml_gpu.py 2>&1 | tail -15
echo "== ours vs nvidia-smi"
python3 bench/nvml_vs_smi.py --xml-out "$out/nvidia-smi-q.xml" 2>&1
echo "== cycle cost against the NVML floor"
python3 bench/nvml_cycle_cost.py --repeat 50 2>&1
echo "== scrape latency, daemon on the real GPU"
python3 -m exporter serve --collection.backend=nvml --web.listen-address=127.0.0.1:$port \
  > "$out/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 150); do get http://127.0.0.1:$port/readyz >/dev/null 2>&1 && break; sleep 0.2; done
python3 bench/scrape_latency.py --url http://127.0.0.1:$port/metrics --threads 16 --seconds 10 2>&1
get http://127.0.0.1:$port/metrics > "$out/metrics.txt"
echo "daemon's GPU memory (nvidia-smi compute apps; empty = none):"
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
kill -TERM "$pid"; wait "$pid"
echo "daemon exit code: $?"
echo "== done"

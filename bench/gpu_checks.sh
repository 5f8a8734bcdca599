#!/usr/bin/env bash
# Every check that needs a real NVIDIA GPU, in one go; results land in OUTDIR.
#   bash bench/gpu_checks.sh OUTDIR
# Reads only (never changes a GPU setting). Needs the package importable (pip install -e .
# or PYTHONPATH=.) with nvidia-ml-py; nvidia-smi on PATH for the comparisons.
set -uo pipefail
out=${1:?usage: bench/gpu_checks.sh OUTDIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD

nvidia-smi > "$out/nvidia-smi.txt" 2>&1
nvidia-smi -q > "$out/nvidia-smi-q.txt" 2>&1
echo "== fixtures"
python3 tests/fixtures/nvml/record.py "$out/nvml-fixture.json" 2>&1 | tail -3
echo "== gpu tests"
python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_nvml_gpu.py 2>&1 | tail -15
echo "== ours vs nvidia-smi"
python3 bench/nvml_vs_smi.py --xml-out "$out/nvidia-smi-q.xml" > "$out/vs_smi.md" 2>&1
cat "$out/vs_smi.md"
echo "== cycle cost"
python3 bench/nvml_cycle_cost.py --repeat 50 2>&1 | tee "$out/cycle_cost.md"
echo "== scrape latency (daemon on the real GPU)"
python3 -m exporter serve --collection.backend=nvml --web.listen-address=127.0.0.1:19473 \
  > "$out/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  python3 -c 'import urllib.request,sys; sys.exit(urllib.request.urlopen("http://127.0.0.1:19473/readyz").status != 200)' 2>/dev/null && break
  sleep 0.2
done
python3 bench/scrape_latency.py --url http://127.0.0.1:19473/metrics --threads 16 --seconds 10 \
  2>&1 | tee "$out/scrape_latency.md"
curl -s http://127.0.0.1:19473/metrics > "$out/metrics.txt" 2>/dev/null \
  || python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:19473/metrics").read().decode())' > "$out/metrics.txt"
echo "daemon GPU memory (nvidia-smi compute apps):"
nvidia-smi --query-compute-apps=pid,used_memory --format=csv | tee "$out/daemon_gpu_memory.csv"
kill -TERM "$pid"; wait "$pid"
echo "== done"

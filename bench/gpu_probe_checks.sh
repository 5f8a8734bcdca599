#!/usr/bin/env bash
# The probes on a real GPU, through the product: the admission check, then the daemon running
# its schedule, and what nvidia-smi shows of the daemon between probes.
#   bash bench/gpu_probe_checks.sh        (needs CuPy, nvidia-ml-py, nvidia-smi)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
port=19474
get() { python3 -c 'import sys, urllib.request as u; sys.stdout.write(u.urlopen(sys.argv[1], timeout=5).read().decode())' "$@"; }

echo "== admission check: gpu-fleet-exporter probe"
python3 -m exporter probe 2>/dev/null
echo "exit code: $?"

echo "== daemon with probes at start"
python3 -m exporter serve --collection.backend=nvml --web.listen-address=127.0.0.1:$port \
  --probes.run-at-start=true --probes.quiet-period=0 --probes.jitter=0 > /tmp/daemon.log 2>&1 &
pid=$!
for _ in $(seq 300); do
  n=$(get http://127.0.0.1:$port/metrics 2>/dev/null | grep -c '^gpu_probe_success{') || true
  [ "${n:-0}" -ge 4 ] && break
  sleep 0.5
done
echo "probe results on /metrics:"
get http://127.0.0.1:$port/metrics | grep -E '^gpu_probe_(success|runs_total|duration_seconds)'
echo "compute processes on the GPU after the probes (the daemon's pid is $pid):"
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
echo "daemon's /dev/nvidia* files and threads:"
ls -l /proc/$pid/fd 2>/dev/null | grep -c nvidia
kill -TERM $pid; wait $pid
grep -E "probe (finished|skipped)|probes disabled" /tmp/daemon.log | cut -c1-220

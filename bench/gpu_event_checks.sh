#!/usr/bin/env bash
# Events on a real NVIDIA GPU: the NVML event set registers and idles, the kernel log is read,
# a healthy GPU shows no Xid, and a release/resume leaves both readers working.
#   bash bench/gpu_event_checks.sh      (root or CAP_SYSLOG for /dev/kmsg; nvidia-ml-py)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
port=19475 state=$(mktemp -d) token=$(mktemp)
echo "event-check-token-0123456789" > "$token"
get() { python3 -c 'import sys, urllib.request as u; sys.stdout.write(u.urlopen(sys.argv[1], timeout=5).read().decode())' "$@"; }
post() { python3 -c 'import sys, urllib.request as u; r = u.Request(sys.argv[1], method="POST", headers={"Authorization": "Bearer " + open(sys.argv[2]).read().strip()}); sys.stdout.write(u.urlopen(r, timeout=30).read().decode())' "$@"; }
show() { get http://127.0.0.1:$port/metrics | grep -E '^(gpu_exporter_event_source_up|gpu_xid_errors_total|gpu_events_total|gpu_up|gpu_exporter_released)'; }

python3 -m exporter serve --collection.backend=nvml --web.listen-address=127.0.0.1:$port \
  --events.state-dir="$state" --admin.token-file="$token" --no-collector.probes \
  > /tmp/event-daemon.log 2>&1 &
pid=$!
for _ in $(seq 100); do get http://127.0.0.1:$port/readyz >/dev/null 2>&1 && break; sleep 0.2; done
sleep 3
echo "== collecting"; show
echo "threads of the daemon:"; ls /proc/$pid/task | wc -l
echo "CPU seconds of the daemon after start: $(awk '{print ($14+$15)/100}' /proc/$pid/stat)"
echo "== release"; post http://127.0.0.1:$port/admin/release "$token"; echo; show
echo "== resume"; post http://127.0.0.1:$port/admin/resume "$token"; echo
for _ in $(seq 50); do show | grep -q '^gpu_up{.*} 1.0' && break; sleep 0.2; done
sleep 2; show
echo "kernel-log cursor saved: $(cat "$state"/kmsg-state.json 2>/dev/null | head -c 300)"
kill -TERM $pid; wait $pid
grep -iE "warn|error|event" /tmp/event-daemon.log | grep -v color_message | cut -c1-200 | head -20

#!/usr/bin/env bash
# Copy the rule files and dashboards into the Helm chart, which may read only its own files:
#   alerts/*.rules.yml  -> helm/gpu-fleet-exporter/files/alerts/
#   dashboards/*.json   -> helm/gpu-fleet-exporter/files/dashboards/
# The copies mirror the sources: a source that is gone is removed from the chart too.
# dcgm-compat.rules.yml is copied like the others; the PrometheusRule includes it only when
# monitoring.prometheusRule.dcgmCompat is set.
#
#   bash tools/sync-chart.sh           # update the copies
#   bash tools/sync-chart.sh --check   # change nothing; exit 1 and list what differs
# tests/test_helm.py fails while the copies differ from the sources.
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=helm/gpu-fleet-exporter
check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

stale=0
sync_dir() {  # sync_dir SOURCE_DIR PATTERN DEST_DIR
  local src=$1 pattern=$2 dest=$3 f name
  $check || mkdir -p "$dest"
  shopt -s nullglob
  for f in "$src"/$pattern; do
    name=$(basename "$f")
    if ! cmp -s "$f" "$dest/$name"; then
      stale=1
      if $check; then echo "differs: $dest/$name (from $f)"; else cp "$f" "$dest/$name"; echo "copied: $f"; fi
    fi
  done
  for f in "$dest"/$pattern; do
    name=$(basename "$f")
    if [ ! -e "$src/$name" ]; then
      stale=1
      if $check; then echo "no source: $f"; else rm -f "$f"; echo "removed: $f"; fi
    fi
  done
  shopt -u nullglob
}

sync_dir alerts '*.rules.yml' "$CHART/files/alerts"
sync_dir dashboards '*.json' "$CHART/files/dashboards"

if $check && [ "$stale" = 1 ]; then
  echo "sync-chart: the chart's copies are stale; run: bash tools/sync-chart.sh" >&2
  exit 1
fi
$check && echo "sync-chart: the chart's copies match alerts/ and dashboards/"
exit 0

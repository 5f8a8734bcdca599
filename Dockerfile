# syntax=docker/dockerfile:1
# gpu-fleet-exporter's container image, for the Helm chart (helm/gpu-fleet-exporter) or any
# container runtime. Build and run: docs/deploy-kubernetes.md ("Build the image").
#
#   docker build --build-arg VARIANT=cuda13 -t REGISTRY/gpu-fleet-exporter:0.1.0-cuda13 .
#   docker build --build-arg VARIANT=cuda12 -t REGISTRY/gpu-fleet-exporter:0.1.0-cuda12 .
#   docker build --build-arg VARIANT=rocm   -t REGISTRY/gpu-fleet-exporter:0.1.0-rocm .
#
# VARIANT picks the base image and the package's extras (pyproject.toml):
#   cuda13  NVML + CuPy for CUDA 13 (probes-cuda13); NVIDIA driver R580 or newer on the nodes
#   cuda12  NVML + CuPy for CUDA 12 (probes-cuda12); R525 or newer
#   rocm    amdsmi (amd); the probes are not run (no CuPy build for ROCm is installed)
# The CUDA images' base has the CUDA runtime libraries CuPy loads (cudart, NVRTC, cuBLAS); the
# driver's own libraries (libcuda, libnvidia-ml) are mounted by the NVIDIA container runtime.
# The ROCm image's base has ROCm, whose amdsmi Python package and libamd_smi.so
# (/opt/rocm/share/amd_smi, /opt/rocm/lib) the exporter imports before any pip-installed amdsmi:
# the package's ctypes structures must match the library of the same ROCm release (docs/amd.md).

ARG VARIANT=cuda13
ARG CUDA13_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04
ARG CUDA12_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG ROCM_IMAGE=rocm/dev-ubuntu-24.04:6.4.1

# --- one base per variant; BuildKit builds only the one VARIANT names --------------------------
FROM ${CUDA13_IMAGE} AS base-cuda13
ENV GFE_EXTRAS=nvidia,probes-cuda13,kubernetes

FROM ${CUDA12_IMAGE} AS base-cuda12
ENV GFE_EXTRAS=nvidia,probes-cuda12,kubernetes

FROM ${ROCM_IMAGE} AS base-rocm
ENV GFE_EXTRAS=amd,kubernetes
ENV ROCM_PATH=/opt/rocm
# amd-smi-lib from the base image's ROCm repository where the base lacks it; then fail the
# build, not the pod, if its Python package is still missing. DL3008: amd-smi-lib's version is
# the base image's ROCm release (its repository), which must match the rest of that ROCm.
# hadolint ignore=DL3008
RUN if [ ! -d /opt/rocm/share/amd_smi/amdsmi ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends amd-smi-lib \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && test -d /opt/rocm/share/amd_smi/amdsmi

# --- the Python the venv is built with and runs on (Ubuntu 24.04: 3.12) -----------------------
# DL3006: base-${VARIANT} is one of the stages above, whose images are pinned by tag.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS base
# DL3008: the versions are those of the base image's Ubuntu release, pinned by its tag; a rebuild
# picks up that release's security updates, which a pinned package version would refuse.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*

# --- build: the same install CI tests (tests/run.sh: pip install '.[extras]') -----------------
FROM base AS build
# DL3008: as above (the base release's python3-venv, matching its python3).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter/ exporter/
COPY probes/ probes/
RUN python3 -m venv /opt/gpu-fleet-exporter \
    && /opt/gpu-fleet-exporter/bin/python -m pip install --no-cache-dir ".[${GFE_EXTRAS}]" \
    && /opt/gpu-fleet-exporter/bin/gpu-fleet-exporter check-config /dev/null >/dev/null

# --- runtime: the venv on the same base, no compilers, no pip cache, a non-root default user ---
FROM base AS runtime
COPY --from=build /opt/gpu-fleet-exporter /opt/gpu-fleet-exporter
# The chart runs the daemon as UID 0 with every capability dropped (the kubelet's socket and the
# host state directory are root's: docs/deploy-kubernetes.md); anything else runs unprivileged.
RUN groupadd --system --gid 65532 gpu-fleet-exporter \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gpu-fleet-exporter
ENV PATH=/opt/gpu-fleet-exporter/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1
USER 65532:65532
EXPOSE 9472
ENTRYPOINT ["gpu-fleet-exporter"]
CMD ["serve"]

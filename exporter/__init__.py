"""gpu-fleet-exporter: one daemon per GPU node; telemetry, probes and a verdict on /metrics."""

__version__ = "0.1.0"

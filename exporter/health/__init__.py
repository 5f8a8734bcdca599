"""The health verdict per GPU: reasons from telemetry, events and probes (docs/health.md)."""

"""Active probes: verified GPU micro-benchmarks run in a short-lived child process.

Usable alone (`gpu-fleet-exporter probe`) and from the daemon's scheduler. Nothing here imports
the exporter's HTTP server; CuPy is imported only inside the child process.
"""

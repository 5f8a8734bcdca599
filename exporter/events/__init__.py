"""Kernel-log events: NVIDIA Xid records, GPUs fallen off the bus, and the Xid catalog."""

"""Kernel-log Xid parsing and the Xid catalog.

Every sample line names where its form comes from. "Real" means copied from a log someone posted
or from NVIDIA's own documents and tests; "constructed" means built from the driver's format
string (open-gpu-kernel-modules, src/nvidia/src/kernel/gpu/rc/kernel_rc.c) or from NVIDIA's
written description of the format, because no posted log of that form was found.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from exporter.events import xid_catalog
from exporter.events.xid_catalog import ACTIONS, CAUSES, SEVERITIES, lookup, resolve_action
from exporter.events.xid_parse import (
    BusEvent,
    KmsgRecord,
    Nvlink5Detail,
    Unparsed,
    XidEvent,
    join_continuations,
    normalize_bus_id,
    parse_kmsg_record,
    parse_line,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (line, bus_id, xid, pid, name, message, mig_gpu_instance, caused_by)
XID_LINES = [
    # Real: gpud docs, dmesg --ctime on an H100 node (leptonai/gpud, accelerator-nvidia-error-xid).
    ("[Fri Aug 30 11:43:09 2024] NVRM: Xid (PCI:0000:cb:00): 13, pid='<unknown>', name=<unknown>, "
     "Graphics SM Warp Exception on (GPC 7, TPC 7, SM 0): Illegal Instruction Parameter",
     "00000000:cb:00.0", 13, None, None,
     "Graphics SM Warp Exception on (GPC 7, TPC 7, SM 0): Illegal Instruction Parameter",
     None, None),
    ("[Fri Aug 30 11:43:14 2024] NVRM: Xid (PCI:0000:cb:00): 109, pid=1797828, name=pt_main_thread,"
     " Ch 00000008, errorString CTX SWITCH TIMEOUT, Info 0x58005",
     "00000000:cb:00.0", 109, 1797828, "pt_main_thread",
     "Ch 00000008, errorString CTX SWITCH TIMEOUT, Info 0x58005", None, None),
    # Real: journalctl of a desktop (nixos) posted with a bug report; pid numeric, name present.
    ("Sep 09 12:24:31 nixos kernel: NVRM: Xid (PCI:0000:01:00): 8, pid=4270, name=wezterm-gui, "
     "Channel 00000028", "00000000:01:00.0", 8, 4270, "wezterm-gui", "Channel 00000028",
     None, None),
    # Real: open-gpu-kernel-modules issue #1151 (journal), Xid 79 without pid/name (newer driver).
    ("May 18 19:02:39 kernel: NVRM: Xid (PCI:0000:2b:00): 79, GPU has fallen off the bus.",
     "00000000:2b:00.0", 79, None, None, "GPU has fallen off the bus.", None, None),
    # Real form, brief's example: pid='<unknown>', name=<unknown> (gpud's Xid 79 sample).
    ("NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
     "00000000:3b:00.0", 79, None, None, "GPU has fallen off the bus.", None, None),
    # Real: NVIDIA's Xid documentation, older drivers: no "PCI:" prefix, no pid/name.
    ("[...] NVRM: Xid (0000:03:00): 14, Channel 00000001",
     "00000000:03:00.0", 14, None, None, "Channel 00000001", None, None),
    # Real: pastebin kernel log, older driver without "PCI:".
    ("Jan 18 11:38:05 localhost kernel: [ 269.517039] NVRM: Xid (0000:01:00): 3, C 00000005 SC "
     "00000007 M 00001ffc Data ffffffff", "00000000:01:00.0", 3, None, None,
     "C 00000005 SC 00000007 M 00001ffc Data ffffffff", None, None),
    # Real: stas00/ml-engineering debug guide; pid without name, row remapper.
    ("NVRM: Xid (PCI:0000:10:1c): 63, pid=1896, Row Remapper: New row marked for remapping, reset "
     "gpu to activate.", "00000000:10:1c.0", 63, 1896, None,
     "Row Remapper: New row marked for remapping, reset gpu to activate.", None, None),
    # Real: NVIDIA driver source comment (error containment) and NVIDIA's A100 memory error
    # management guide: pid without name, and the MIG form with GPU-I inside the parentheses.
    ("NVRM: Xid (PCI:0000:01:00): 94, pid=7062, Contained: CE User Channel (0x9). RST: No, "
     "D-RST: No",
     "00000000:01:00.0", 94, 7062, None, "Contained: CE User Channel (0x9). RST: No, D-RST: No",
     None, None),
    ("NVRM: Xid (PCI:0000:01:00 GPU-I:05): 94, pid=7194, Contained: CE User Channel (0x9). RST: No,"
     " D-RST: No", "00000000:01:00.0", 94, 7194, None,
     "Contained: CE User Channel (0x9). RST: No, D-RST: No", 5, None),
    # Constructed: the brief's MIG line with a process, per kernel_rc.c's format string.
    ("NVRM: Xid (PCI:0000:17:00 GPU-I:05): 31, pid=2468, name=trainer, Ch 00000010, intr 10000000",
     "00000000:17:00.0", 31, 2468, "trainer", "Ch 00000010, intr 10000000", 5, None),
    # Real: open-gpu-kernel-modules issue #1150 (GB200 journal): "caused by previous Xid N".
    ("kernel: NVRM: Xid (PCI:0000:dc:00): 45, pid=1818990, name=python3, Ch 00000001 caused by "
     "previous Xid 149", "00000000:dc:00.0", 45, 1818990, "python3",
     "Ch 00000001 caused by previous Xid 149", None, 149),
    # Real: NVIDIA NVSentinel tests: minimal line, and Xid 154 with its action.
    ("NVRM: Xid (PCI:0000:3f:00): 46", "00000000:3f:00.0", 46, None, None, "", None, None),
    ("NVRM: Xid (PCI:0008:01:00): 154, GPU recovery action changed from 0x0 (None) to 0x1 (GPU "
     "Reset Required)", "00000008:01:00.0", 154, None, None,
     "GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)", None, None),
    ("NVRM: Xid (PCI:0003:00:00): 74, pid='<unknown>', name=<unknown>, NVLink: fatal error detected"
     " on link 14(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)", "00000003:00:00.0", 74, None, None,
     "NVLink: fatal error detected on link 14(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)", None, None),
    # Constructed (kernel_rc.c): process context present but the message empty.
    ("NVRM: Xid (PCI:0000:01:00): 79, ", "00000000:01:00.0", 79, None, None, "", None, None),
]


@pytest.mark.parametrize(("line", "bus", "xid", "pid", "name", "message", "gi", "caused"),
                         XID_LINES)
def test_driver_xid_forms(line, bus, xid, pid, name, message, gi, caused):
    event = parse_line(line)
    assert event == XidEvent(bus, xid, pid, name, message, gi, caused)
    assert parse_line(line.encode()) == event  # bytes in, same answer


def test_mig_compute_instance():
    # Constructed from kernel_rc.c: "PCI:%04x:%02x:%02x GPU-I:%02u GPU-CI:%02u".
    event = parse_line("NVRM: Xid (PCI:0000:3b:00 GPU-I:01 GPU-CI:02): 13, pid=9, name=a, Graphics"
                       " Exception")
    assert isinstance(event, XidEvent)
    assert (event.mig_gpu_instance, event.mig_compute_instance, event.pid) == (1, 2, 9)


NVLINK5 = [
    # Real: NVIDIA NVSentinel test (GB200), note the driver's double spaces.
    ("NVRM: Xid (PCI:0018:01:00): 149, NETIR_LINK_EVT  Fatal   XC0 i0 Link 09 (0x025525c6 "
     "0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)",
     "00000018:01:00.0", 149, Nvlink5Detail("NETIR_LINK_EVT", True, False, False, 9, 0x025525C6, 0,
                                            (0, 0, 0, 0))),
    # Real: leptonai/gpud PR #1160 and #1174 (kmsg input from GB200 nodes).
    ("NVRM: Xid (PCI:0000:01:00): 144, SAW_MVB Nonfatal XC0 i0 Link 0 (0x00000001 0x00000008 "
     "0x00000000 0x00000000 0x00000000 0x00000000)",
     "00000000:01:00.0", 144, Nvlink5Detail("SAW_MVB", False, False, False, 0, 1, 8, (0, 0, 0, 0))),
    ("NVRM: Xid (PCI:0019:01:00): 149, NETIR Fatal XC0 i0 Link -1 (0x000fe406 0x00000000 "
     "0x00000000 0x00000000 0x00000000 0x00000000)",
     "00000019:01:00.0", 149, Nvlink5Detail("NETIR", True, False, False, -1, 0x000FE406, 0,
                                            (0, 0, 0, 0))),
    ("NVRM: Xid (PCI:0018:01:00): 145, RLW_RXPIPE Nonfatal XC0 i0 Link 13 (0x0409a0c2 0x00000008 "
     "0x00000001 0x00000000 0x00100000 0x00000004)",
     "00000018:01:00.0", 145, Nvlink5Detail("RLW_RXPIPE", False, False, False, 13, 0x0409A0C2, 8,
                                            (1, 0, 0x00100000, 4))),
    # NVSentinel test: the bus id carries a function, and XC1 (cross-contained).
    ("NVRM: Xid (PCI:0000:00:08.0): 145, RLW_REMAP Nonfatal XC1 i0 Link 10 (0x00000082 0x00000040 "
     "0x00000000 0x00000000 0x00000000 0x00000000)",
     "00000000:00:08.0", 145, Nvlink5Detail("RLW_REMAP", False, True, False, 10, 0x82, 0x40,
                                            (0, 0, 0, 0))),
    # Constructed from the catalog's WORKFLOW_NVLINK5_ERR format ("<Xid> <sub component> <fatal vs
    # nonfatal> <Crosscontain> <injected> <link> (<intrInfo> <errorStatus> <errorDebugData>)")
    # for 146/147/148/150, with sub-codes from the catalog's decode sheet; no posted log found.
    ("NVRM: Xid (PCI:0000:01:00): 146, TLW_RX_PIPE0 Fatal XC0 i1 Link 03 (0x0000000a 0x00000004 "
     "0x0 0x0 0x0 0x0)",
     "00000000:01:00.0", 146, Nvlink5Detail("TLW_RX_PIPE0", True, False, True, 3, 0xA, 4,
                                            (0, 0, 0, 0))),
    ("NVRM: Xid (PCI:0000:01:00): 147, TREX Nonfatal XC0 i0 Link 05 (0x0000000e 0x80000000)",
     "00000000:01:00.0", 147, Nvlink5Detail("TREX", False, False, False, 5, 0xE, 0x80000000)),
    ("NVRM: Xid (PCI:0000:01:00): 148, NVLPW_CTRL Nonfatal XC0 i0 Link 02 (0x0000000f 0x80000000 "
     "0x00000000 0x00000000 0x00000000 0x00000000)",
     "00000000:01:00.0", 148, Nvlink5Detail("NVLPW_CTRL", False, False, False, 2, 0xF, 0x80000000,
                                            (0, 0, 0, 0))),
    ("NVRM: Xid (PCI:0000:01:00): 150, MSE_WATCHDOG Fatal XC0 i0 Link -1 (0x00000000 0x00000000 "
     "0x00000000 0x00000000 0x00000000 0x00000000)",
     "00000000:01:00.0", 150, Nvlink5Detail("MSE_WATCHDOG", True, False, False, -1, 0, 0,
                                            (0, 0, 0, 0))),
]


@pytest.mark.parametrize(("line", "bus", "xid", "detail"), NVLINK5)
def test_nvlink5_extended_forms(line, bus, xid, detail):
    event = parse_line(line)
    assert isinstance(event, XidEvent)
    assert (event.bus_id, event.xid, event.nvlink5) == (bus, xid, detail)
    assert lookup(xid).action == "check_link"


def test_nvlink5_code_in_an_older_format_still_counts():
    event = parse_line("NVRM: Xid (PCI:0000:01:00): 149, pid='<unknown>', name=<unknown>, "
                       "link down")
    assert isinstance(event, XidEvent) and event.nvlink5 is None and event.xid == 149


# --- /dev/kmsg ----------------------------------------------------------------------------------

def test_kmsg_record_from_the_kernel_abi_document():
    # Real: Documentation/ABI/testing/dev-kmsg (the kernel's own example).
    raw = (b"7,160,424069,-;pci_root PNP0A03:00: host bridge window [io  0x0000-0x0cf7] (ignored)\n"
           b" SUBSYSTEM=acpi\n DEVICE=+acpi:PNP0A03:00\n")
    record = parse_kmsg_record(raw)
    assert record == KmsgRecord(160, 424069,
                                "pci_root PNP0A03:00: host bridge window [io  0x0000-0x0cf7] "
                                "(ignored)", ("SUBSYSTEM=acpi", "DEVICE=+acpi:PNP0A03:00"), 7)
    assert record.fields == {"SUBSYSTEM": "acpi", "DEVICE": "+acpi:PNP0A03:00"}
    assert parse_line(raw) is None


def test_kmsg_xid_record_with_header_and_dictionary():
    # Constructed: the ABI format around a real Xid message; DEVICE= as the kernel writes it.
    raw = (b"4,98312,5678901234,-,caller=T4121;NVRM: Xid (PCI:0000:3b:00): 48, pid=2411, "
           b"name=python3, Ch 00000008\n SUBSYSTEM=pci\n DEVICE=+pci:0000:3b:00.0\n")
    record = parse_kmsg_record(raw)
    assert record is not None
    assert (record.seq, record.usec, record.priority) == (98312, 5678901234, 4)
    assert record.fields["DEVICE"] == "+pci:0000:3b:00.0"
    assert parse_line(raw) == XidEvent("00000000:3b:00.0", 48, 2411, "python3", "Ch 00000008",
                                       None, None)
    assert parse_line(raw.decode()) == parse_line(record.message)


def test_kmsg_escapes_are_undone():
    # The driver's probe-time message is one printk with two newlines; /dev/kmsg escapes them
    # (and any byte >= 0x7f) as \xNN. Constructed from nv.c's format string.
    raw = (rb"3,1203,1843308145,-;NVRM: The NVIDIA GPU 0000:b3:00.0\x0aNVRM: (PCI ID: 10de:26b5) "
           rb"installed in this system has\x0aNVRM: fallen off the bus and is not responding to "
           rb"commands.")
    record = parse_kmsg_record(raw)
    assert record is not None and record.message.count("\n") == 2
    assert parse_line(raw) == BusEvent("00000000:b3:00.0")
    assert parse_kmsg_record(rb"6,1,2,-;caf\xc3\xa9 \x5cx41").message == "café \\x41"


@pytest.mark.parametrize("raw", [b"", b"no header here", b"6,1,2;short header", b"a,b,c,-;x",
                                 b"6,1,2,-", b"\xff\xfe\x00;;;", b"6,-1,2,-;negative"])
def test_kmsg_malformed_headers(raw):
    assert parse_kmsg_record(raw) is None


# --- fell off the bus without an Xid ------------------------------------------------------------

BUS_LINES = [
    # Real: open-gpu-kernel-modules issue #1151 (journal), printed right after the Xid 79 line.
    ("May 18 19:02:39 kernel: NVRM: GPU 0000:2b:00.0: GPU has fallen off the bus.",
     "00000000:2b:00.0"),
    # Real: pastebin kernel logs, older drivers.
    ("Jan 18 11:38:05 localhost kernel: [ 269.516977] NVRM: GPU at 0000:01:00.0 has fallen off the "
     "bus.", "00000000:01:00.0"),
    # Real: NVSentinel issue #155 (dmesg, driver 570.158.01), rejoined into one record.
    ("[ 1843.308145] NVRM: The NVIDIA GPU 0000:b3:00.0\n               NVRM: (PCI ID: 10de:26b5) "
     "installed in this system has\n               NVRM: fallen off the bus and is not responding "
     "to commands.", "00000000:b3:00.0"),
    # Real: a homelab incident note (older driver: "installed in this / system has").
    ("NVRM: The NVIDIA GPU 0000:01:00.0 (PCI ID: 10de:1e07) installed in this\nNVRM: system has "
     "fallen off the bus and is not responding to commands.", "00000000:01:00.0"),
]


@pytest.mark.parametrize(("line", "bus"), BUS_LINES)
def test_fell_off_the_bus_without_xid(line, bus):
    assert parse_line(line) == BusEvent(bus)


def test_dmesg_text_is_rejoined_before_parsing():
    # Real: NVSentinel issue #155, as dmesg prints it, with the next record after it.
    text = ("[ 1843.308145] NVRM: The NVIDIA GPU 0000:b3:00.0\n"
            "               NVRM: (PCI ID: 10de:26b5) installed in this system has\n"
            "               NVRM: fallen off the bus and is not responding to commands.\n"
            "[ 1843.439662] NVRM: The NVIDIA probe routine failed for 1 device(s).\n")
    records = list(join_continuations(text.splitlines(keepends=True)))
    assert len(records) == 2
    assert [parse_line(r) for r in records] == [BusEvent("00000000:b3:00.0"), None]
    # Read line by line instead, the last line is counted as unparsed, not silently dropped.
    assert isinstance(parse_line(text.splitlines()[2]), Unparsed)
    assert list(join_continuations([])) == []


# --- not GPU Xids, and unreadable ones -----------------------------------------------------------

NOT_OURS = [
    # Real: NVSwitch SXid lines (NVSentinel e2e test, gpud test): switch errors, not GPU Xids.
    "kernel: [123.456789] nvidia-nvswitch0: SXid (PCI:0000:c3:00.0): 20009, Non-fatal, Link 28 RX "
    "Short Error Rate",
    "nvidia-nvswitch3: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 32 egress non-posted PRIV "
    "error (First)",
    "4,9921,9370042162,-;nvidia-nvswitch0: SXid (PCI:0000:00:00.0): 11001, Fatal, ingress invalid "
    "command",
    # Real: the GPU UUID line the driver prints before the first Xid, and other kernel lines.
    "NVRM: GPU at PCI:0000:66:00: GPU-12345678-1234-5678-9abc-def012345678",
    "[Wed Dec 11 13:23:01 2024] Linux version 5.15.0-117-generic",
    "[ 1843.439662] NVRM: The NVIDIA probe routine failed for 1 device(s).",
    "",
]


@pytest.mark.parametrize("line", NOT_OURS)
def test_unrelated_lines_and_sxid_are_none(line):
    assert parse_line(line) is None


UNREADABLE = [
    "NVRM: Xid : 32, pid=2280636",  # NVSentinel's malformed cases
    "NVRM: Xid (PCI:0000:66:00): abc, pid=2280636",
    "NVRM: Xid (PCI:0000:3b:0",  # truncated
    "NVRM: Xid (PCI:0000:3b:40): 79, GPU has fallen off the bus.",  # device 0x40 > 31
    "NVRM: Xid (PCI:zz:yy:xx): 13, x",
    "NVRM: Xid (PCI:0000:01:00): 154 (",
    "               NVRM: fallen off the bus and is not responding to commands.",
]


@pytest.mark.parametrize("line", UNREADABLE)
def test_unreadable_lines_are_counted_not_dropped(line):
    result = parse_line(line)
    assert isinstance(result, Unparsed) and result.reason


def test_parse_line_rejects_non_text():
    assert parse_line(None) is None  # type: ignore[arg-type]
    assert parse_line(12) is None  # type: ignore[arg-type]


# --- bus ids -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "normal"), [
    ("PCI:0000:3b:00", "00000000:3b:00.0"),  # the driver's Xid form
    ("0000:3b:00", "00000000:3b:00.0"),  # older drivers
    ("0000:3b:00.0", "00000000:3b:00.0"),  # lspci / sysfs
    ("00000000:3B:00.0", "00000000:3b:00.0"),  # NVML (pynvml busId)
    ("0000:3B:00.0", "00000000:3b:00.0"),  # NVML busIdLegacy
    ("3b:00.0", "00000000:3b:00.0"),  # lspci without -D
    ("pci:0018:01:00", "00000018:01:00.0"),  # GB200: domain 0x18
    ("0001:c8:00.0", "00000001:c8:00.0"),
    ("10000:01:00.0", "00010000:01:00.0"),  # VMD domains exceed four digits
    (" 0000:00:1E.0 ", "00000000:00:1e.0"),
    ("0000:00:08.3", "00000000:00:08.3"),
])
def test_normalize_bus_id(raw, normal):
    assert normalize_bus_id(raw) == normal
    assert normalize_bus_id(normal) == normal  # idempotent


@pytest.mark.parametrize("bad", ["", "GPU-0b11d014", "0000:3b", "0000:3b:20.0", "0000:3b:00.8",
                                 "000000000:3b:00.0", "0000:3b:00.0.0", "x:y:z"])
def test_normalize_bus_id_rejects(bad):
    with pytest.raises(ValueError):
        normalize_bus_id(bad)


# --- fuzzing -------------------------------------------------------------------------------------

ALLOWED = (XidEvent, BusEvent, Unparsed, type(None))


@FUZZ
@given(st.text(max_size=600))
def test_random_text_never_raises(text):
    assert isinstance(parse_line(text), ALLOWED)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data):
    assert isinstance(parse_line(data), ALLOWED)
    assert isinstance(parse_kmsg_record(data), KmsgRecord | None)


@FUZZ
@given(st.sampled_from([x[0] for x in XID_LINES + NVLINK5] + [b[0] for b in BUS_LINES]),
       st.integers(0, 400), st.text(max_size=20))
def test_truncated_or_spliced_real_lines_never_raise(line, cut, junk):
    assert isinstance(parse_line(line[:cut]), ALLOWED)
    assert isinstance(parse_line(line[:cut] + junk + line[cut:]), ALLOWED)


PREFIXES = ["", "[12345.678901] ", "[ 1843.308145] ", "[Fri Aug 30 11:43:09 2024] ",
            "May 18 19:02:39 gpu-7 kernel: ", "2026-06-19T14:32:07,000000+00:00 gpu-7 kernel: ",
            "kernel: [123.456789] ", "<4>", "6,1234,5678901,-;", "4,99,17,c;"]


@st.composite
def driver_lines(draw):
    """A line as kernel_rc.c (or an older driver) would print it, and what it should parse to."""
    domain, bus = draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 255))
    dev = draw(st.integers(0, 31))
    xid = draw(st.integers(1, 999))
    gi = draw(st.none() | st.integers(0, 14))
    ci = None if gi is None else draw(st.none() | st.integers(0, 7))
    attr = draw(st.sampled_from(["PCI:", ""])) + f"{domain:04x}:{bus:02x}:{dev:02x}"
    attr += "" if gi is None else f" GPU-I:{gi:02d}" + ("" if ci is None else f" GPU-CI:{ci:02d}")
    process = draw(st.sampled_from(["none", "unknown", "pid", "pid_name"]))
    pid = draw(st.integers(0, 4_194_304))
    name = draw(st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,14}", fullmatch=True))
    message = draw(st.from_regex(r"[A-Za-z][A-Za-z0-9 .:()_\-]{0,60}", fullmatch=True)).rstrip()
    assume("caused by previous Xid" not in message)
    caused = draw(st.none() | st.integers(1, 999))
    text = message + ("" if caused is None else f" caused by previous Xid {caused}")
    head = {"none": "", "unknown": "pid='<unknown>', name=<unknown>, ", "pid": f"pid={pid}, ",
            "pid_name": f"pid={pid}, name={name}, "}[process]
    line = draw(st.sampled_from(PREFIXES)) + f"NVRM: Xid ({attr}): {xid}, {head}{text}"
    expected = XidEvent(
        bus_id=f"{domain:08x}:{bus:02x}:{dev:02x}.0", xid=xid,
        pid=pid if process in ("pid", "pid_name") else None,
        name=name if process == "pid_name" else None, message=text, mig_gpu_instance=gi,
        caused_by=caused, mig_compute_instance=ci)
    return line, expected


@FUZZ
@given(driver_lines())
def test_generated_driver_lines_round_trip(case):
    line, expected = case
    event = parse_line(line)
    assert isinstance(event, XidEvent)
    # Xids 144-150 may pick up an NVLink5 detail from a random message; that is tested above.
    assert replace(event, nvlink5=None) == expected


@FUZZ
@given(st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(0, 31), st.integers(0, 7))
def test_normalize_bus_id_agrees_across_spellings(domain, bus, dev, fn):
    spellings = [f"PCI:{domain:04x}:{bus:02x}:{dev:02x}.{fn}",
                 f"{domain:08X}:{bus:02X}:{dev:02X}.{fn}", f"{domain:x}:{bus:x}:{dev:x}.{fn}"]
    assert {normalize_bus_id(s) for s in spellings} == {f"{domain:08x}:{bus:02x}:{dev:02x}.{fn}"}


# --- the catalog ---------------------------------------------------------------------------------

REQUIRED = [8, 13, 31, 32, 38, 43, 45, 48, 54, 56, 57, 58, 61, 62, 63, 64, 68, 69, 73, 74, 79, 80,
            81, 92, 94, 95, 109, 110, 119, 120, 121, 122, 123, 136, 140, 143, *range(144, 151), 151,
            154, 155]


@pytest.mark.parametrize("code", REQUIRED)
def test_required_codes_are_catalogued(code):
    info = lookup(code)
    assert info.known and info.code == code and info.name and info.description
    assert info.action in ACTIONS and info.cause in CAUSES and info.severity in SEVERITIES


def test_every_entry_is_valid():
    entries = xid_catalog.catalog()
    assert set(entries) == set(range(1, 173))  # the catalog revision lists Xid 1-172
    for code, info in entries.items():
        assert code == info.code and info.action in ACTIONS and info.cause in CAUSES
        assert info.severity in SEVERITIES


@pytest.mark.parametrize(("code", "action"), [
    (13, "restart_app"), (31, "restart_app"), (43, "none"), (45, "none"), (48, "reset_gpu"),
    (63, "none"), (64, "reset_gpu"), (74, "check_link"), (79, "reboot_node"), (94, "restart_app"),
    (95, "reset_gpu"), (119, "reset_gpu"), (151, "reboot_node"), (54, "contact_support"),
])
def test_catalog_actions(code, action):
    assert lookup(code).action == action


def test_contained_and_informational_xids_never_demand_a_reset():
    for code in (43, 63, 94):
        assert lookup(code).action not in ("reset_gpu", "reboot_node")
    assert lookup(13).cause == lookup(31).cause == "application"
    assert lookup(45).cause == "sympathetic"


def test_unknown_code():
    info = lookup(999)
    assert (info.known, info.action, info.cause) == (False, "unknown", "unknown")
    assert resolve_action(999) == "unknown"


@pytest.mark.parametrize(("message", "action"), [
    ("GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)", "reset_gpu"),
    ("GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)", "reboot_node"),
    ("GPU recovery action changed from 0x1 (GPU Reset Required) to 0x0 (None)", "none"),
    ("GPU recovery action changed from 0x0 (None) to 0x3 (Drain P2P)", "restart_app"),
    ("GPU recovery action changed from 0x0 (None) to 0x4 (Drain and Reset)", "reset_gpu"),
    ("garbled", "unknown"),
])
def test_xid_154_action_comes_from_its_message(message, action):
    assert resolve_action(154, message) == action
    assert resolve_action(48, message) == "reset_gpu"


def _document() -> dict:
    path = Path(xid_catalog.__file__).with_name("xid_catalog.yaml")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["xids"][48].update(action="none"), "maps to"),
    (lambda d: d["xids"][48].update(action="drain"), "not one of"),
    (lambda d: d["xids"][48].update(cause="cosmic"), "not one of"),
    (lambda d: d["xids"][48].update(extra=1), "unknown field"),
    (lambda d: d["xids"][54].pop("note"), "needs a `note`"),
    (lambda d: d["xids"][48].update(nvidia_action="RESTART_FM"), "not in the map"),
    (lambda d: d.pop("xids"), "non-empty"),
])
def test_a_bad_catalog_fails_at_load(change, message):
    document = _document()
    change(document)
    with pytest.raises(ValueError, match=message):
        xid_catalog.parse_catalog(document)


def test_catalog_header_names_source_version_and_terms():
    head = Path(xid_catalog.__file__).with_name("xid_catalog.yaml").read_text().split("xids:")[0]
    assert "https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html" in head
    assert "Catalog version" in head and "LICENCE / TERMS" in head
    for bucket in ("RESTART_BM", "CHECK_MECHANICALS", "IGNORE", "XID_154_EVAL", "RESTART_APP"):
        assert bucket in _document()["nvidia_action_map"]


def test_catalog_yaml_is_packaged():
    assert '"events/*.yaml"' in (REPO / "pyproject.toml").read_text()

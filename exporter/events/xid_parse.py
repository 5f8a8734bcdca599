"""Parse one kernel-log record into an Xid event, a fell-off-the-bus event, or nothing.

The NVIDIA driver writes (src/nvidia/src/kernel/gpu/rc/kernel_rc.c, open-gpu-kernel-modules):

    NVRM: Xid (PCI:%04x:%02x:%02x): %d, pid=%s, name=%s, <message>[ caused by previous Xid %d]
    NVRM: Xid (PCI:%04x:%02x:%02x): %d, <message>           (no process context)
    NVRM: Xid (PCI:... GPU-I:%02u[ GPU-CI:%02u]): ...         (MIG: GPU / compute instance)

Older drivers print the bus id without "PCI:" and pid='<unknown>', name=<unknown> when no
process is known; NVLink5 Xids 144-150 carry a structured tail ("NETIR_LINK_EVT Fatal XC0 i0
Link 09 (0x025525c6 0x00000000 ...)"). A GPU that drops off PCIe may also be reported without
an Xid line: "NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus." or, at probe, a single
record spanning three lines ("NVRM: The NVIDIA GPU 0000:3b:00.0\\nNVRM: (PCI ID: 10de:2330)
installed in this system has\\nNVRM: fallen off the bus and is not responding to commands.").

What a record is: one /dev/kmsg record (raw, "6,1234,5678901,-;NVRM: ..."), or one line of
dmesg / journal / syslog text, whatever its timestamp or host prefix, since the parser finds
the "NVRM:" anchor wherever it is. dmesg and journalctl print a multi-line record as indented
continuation lines; `join_continuations` puts them back together before parsing.

The three answers, and why there are three:
- an event (XidEvent, BusEvent);
- None: the record is not about GPU Xids (most kernel lines; NVSwitch "SXid" lines, which are
  switch errors with their own catalog, not GPU Xids);
- Unparsed(reason): the record says "Xid" or "fallen off the bus" but we could not read it. The
  caller counts these, so a driver that changes its format shows up as a rising counter instead
  of silently missing events.
Nothing here raises on input, however malformed, truncated or binary.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Literal

# Longer than any kernel record (printk caps a line near 1 KiB), short enough that a hostile
# or corrupt line cannot make the regexes below expensive.
_MAX_CHARS: Final = 16 * 1024


@dataclass(frozen=True, slots=True)
class Nvlink5Detail:
    """The structured tail of an NVLink5 Xid (144-150), decoded by NVIDIA's 144-150 sheet."""

    subcode: str  # e.g. "NETIR_LINK_EVT", "RLW_REMAP", "TLW_RX/TLW_RX_PIPE0"
    fatal: bool
    cross_contained: bool  # XC1
    injected: bool  # i1: an injected (test) error
    link: int  # -1: not tied to one link
    intr_info: int
    error_status: int
    debug_data: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class XidEvent:
    bus_id: str  # normalize_bus_id form: 00000000:3b:00.0
    xid: int
    pid: int | None
    name: str | None
    message: str  # the driver's text after pid/name, as written
    mig_gpu_instance: int | None
    caused_by: int | None  # "caused by previous Xid N" (the driver adds it to Xid 45)
    kind: Literal["xid"] = "xid"
    mig_compute_instance: int | None = None
    nvlink5: Nvlink5Detail | None = None


@dataclass(frozen=True, slots=True)
class BusEvent:
    """A GPU reported fallen off the bus by a line that is not an Xid line.

    The driver often prints one next to "Xid ...: 79"; at probe time it prints one alone. The
    caller decides how to merge them with Xid 79: this parser only reports what it read.
    """

    bus_id: str
    kind: Literal["fell_off_bus"] = "fell_off_bus"


@dataclass(frozen=True, slots=True)
class Unparsed:
    """A record that names an Xid or a fallen GPU but could not be read; count it."""

    reason: str
    excerpt: str = ""


@dataclass(frozen=True, slots=True)
class KmsgRecord:
    """One /dev/kmsg record: "<prio>,<seq>,<usec>,<flags>[,...];<message>" + " KEY=VALUE" lines."""

    seq: int
    usec: int  # CLOCK_MONOTONIC microseconds at which the kernel logged it
    message: str  # unescaped: "\\x0a" is a newline again
    continuation: tuple[str, ...] = ()  # "SUBSYSTEM=pci", "DEVICE=+pci:0000:3b:00.0", ...
    priority: int | None = None  # facility * 8 + level

    @property
    def fields(self) -> dict[str, str]:
        """The continuation lines as a mapping (later keys win)."""
        return dict(line.split("=", 1) for line in self.continuation if "=" in line)


Parsed = XidEvent | BusEvent | Unparsed | None


# --- bus ids -------------------------------------------------------------------------------

_BDF = re.compile(
    r"(?:PCI:)?(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):"
    r"(?P<dev>[0-9a-fA-F]{1,2})(?:\.(?P<fn>[0-7]))?",
    re.IGNORECASE,
)


def normalize_bus_id(bus_id: str) -> str:
    """Any spelling of a PCI address -> NVML's form in lower case: "00000000:3b:00.0".

    Accepts the driver's "PCI:0000:3b:00" (no function: a GPU is function 0), "0000:3b:00.0",
    NVML's "00000000:3B:00.0" and a bare "3b:00.0". Raises ValueError for anything else,
    including a device number above 31, which PCI cannot have.
    """
    match = _BDF.fullmatch(bus_id.strip()) if isinstance(bus_id, str) else None
    if match is None:
        raise ValueError(f"not a PCI bus id: {bus_id!r}")
    domain = int(match["domain"] or "0", 16)
    dev = int(match["dev"], 16)
    if dev > 0x1F:
        raise ValueError(f"PCI device number above 31 in {bus_id!r}")
    return f"{domain:08x}:{int(match['bus'], 16):02x}:{dev:02x}.{match['fn'] or '0'}"


# --- /dev/kmsg -----------------------------------------------------------------------------

_KMSG_HEAD = re.compile(r"\d{1,3},\d{1,20},\d{1,20},[^;\n]{0,64};")
_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def _unescape(raw: str) -> str:
    # devkmsg escapes every byte < 0x20, >= 0x7f and the backslash itself as \xNN, so the
    # message is one line; undo it on bytes, then decode (escaped UTF-8 comes back whole).
    data = raw.encode("utf-8", "replace")
    return _ESCAPE.sub(lambda m: bytes((int(m[1], 16),)), data).decode("utf-8", "replace")


def parse_kmsg_record(record: bytes | str) -> KmsgRecord | None:
    """Split one read() of /dev/kmsg into sequence, timestamp, message and KEY=VALUE lines.

    None when the record does not have the kmsg header (never raises).
    """
    try:
        text = record.decode("utf-8", "replace") if isinstance(record, bytes) else str(record)
        text = text[:_MAX_CHARS]
        head, sep, body = text.partition(";")
        if not sep or _KMSG_HEAD.fullmatch(head + sep) is None:
            return None
        prio, seq, usec = (int(f) for f in head.split(",")[:3])
        first, *rest = body.split("\n")
        continuation = tuple(_unescape(line[1:]) for line in rest if line.startswith(" "))
        return KmsgRecord(seq, usec, _unescape(first), continuation, prio)
    except (ValueError, UnicodeError):  # pragma: no cover - the checks above should prevent it
        return None


# --- Xid lines -----------------------------------------------------------------------------

# The attribute part is bounded so that a line with many "NVRM: Xid (" and no ")" stays linear.
_XID = re.compile(r"NVRM:\s*Xid\s*\((?P<attr>[^()\n]{0,80})\)\s*:\s*(?P<code>[^,\s]*)(?P<tail>.*)",
                  re.DOTALL)
_ATTR = re.compile(
    r"\s*(?P<bdf>[0-9a-zA-Z:.]+)(?:\s+GPU-I:(?P<gi>\d{1,4}))?(?:\s+GPU-CI:(?P<ci>\d{1,4}))?\s*"
)
_PID = re.compile(r"pid=(?:'?(?P<pid>\d{1,10})'?|[^,]*)(?:,\s?|\s*$)")
_NAME = re.compile(r"name=(?P<name>[^,]*)(?:,\s?|\s*$)")
_CAUSED_BY = re.compile(r"\bcaused by previous Xid (\d{1,6})\s*$")
_UNKNOWN_NAMES: Final = frozenset({"", "<unknown>", "'<unknown>'"})
_NVL5 = re.compile(
    r"(?P<sub>[A-Za-z0-9_]+(?:/[A-Za-z0-9_]+)*)\s+(?P<sev>Non-?fatal|Fatal)\s+XC(?P<xc>[01])\s+"
    r"i(?P<inj>\d)\s+Link\s+(?P<link>-?\d{1,3})\s*\((?P<regs>[^()]{0,200})\)",
    re.IGNORECASE,
)


def _nvlink5(message: str) -> Nvlink5Detail | None:
    match = _NVL5.match(message)
    if match is None:
        return None
    try:
        regs = [int(word, 16) for word in match["regs"].replace(",", " ").split()]
    except ValueError:
        return None
    if len(regs) < 2:
        return None
    return Nvlink5Detail(
        subcode=match["sub"],
        fatal=match["sev"].lower() == "fatal",
        cross_contained=match["xc"] == "1",
        injected=match["inj"] != "0",
        link=int(match["link"]),
        intr_info=regs[0],
        error_status=regs[1],
        debug_data=tuple(regs[2:]),
    )


def _parse_xid(match: re.Match[str]) -> XidEvent | Unparsed:
    attr = _ATTR.fullmatch(match["attr"])
    if attr is None:
        return Unparsed("xid line: no bus id in the parentheses", _excerpt(match[0]))
    try:
        bus_id = normalize_bus_id(attr["bdf"])
    except ValueError:
        return Unparsed("xid line: unreadable bus id", _excerpt(match[0]))
    code = match["code"]
    if not (code.isascii() and code.isdigit()) or len(code) > 6:
        return Unparsed("xid line: the code is not a number", _excerpt(match[0]))
    tail = match["tail"].split("\n", 1)[0].rstrip()
    if tail and not tail.startswith(","):
        return Unparsed("xid line: no comma after the code", _excerpt(match[0]))
    rest = tail[1:].lstrip(" ")
    pid: int | None = None
    name: str | None = None
    pid_match = _PID.match(rest)
    if pid_match is not None:
        pid = int(pid_match["pid"]) if pid_match["pid"] else None
        rest = rest[pid_match.end():]
    name_match = _NAME.match(rest)
    if name_match is not None:
        # The driver prints the name unquoted and unescaped: a name with ", " in it is cut
        # there, and the rest lands in `message`.
        raw = name_match["name"].strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == "'":
            raw = raw[1:-1]
        name = None if raw in _UNKNOWN_NAMES else raw
        rest = rest[name_match.end():]
    message = rest.rstrip()
    caused = _CAUSED_BY.search(message)
    xid = int(code)
    return XidEvent(
        bus_id=bus_id,
        xid=xid,
        pid=pid,
        name=name,
        message=message,
        mig_gpu_instance=int(attr["gi"]) if attr["gi"] else None,
        caused_by=int(caused[1]) if caused else None,
        mig_compute_instance=int(attr["ci"]) if attr["ci"] else None,
        nvlink5=_nvlink5(message) if 144 <= xid <= 150 else None,
    )


# --- fell off the bus, without an Xid ------------------------------------------------------

# "NVRM: GPU 0000:2b:00.0: GPU has fallen off the bus." (current drivers, NV_DEV_PRINTF) and
# "NVRM: GPU at 0000:01:00.0 has fallen off the bus." (older drivers).
_BUS_ONE_LINE = re.compile(
    r"NVRM:\s*GPU\s+(?:at\s+)?(?:PCI:)?(?P<bdf>[0-9A-Fa-f:.]{5,20}?):?\s+(?:GPU\s+)?"
    r"has fallen off the bus"
)
# The probe-time record: bus id on the first line, "fallen off the bus" two lines later. The
# gap is bounded: it only has to cover the PCI ID line and dmesg's indentation.
_BUS_MULTI_LINE = re.compile(
    r"NVRM:\s*The NVIDIA GPU\s+(?:PCI:)?(?P<bdf>[0-9A-Fa-f:.]{5,20})(?![0-9A-Fa-f:])"
    r".{0,400}?fallen off the bus",
    re.DOTALL,
)
_FALLEN = "fallen off the bus"
_XID_WORD = re.compile(r"\bXid\b")  # \b: "SXid" (NVSwitch) is not a GPU Xid


def _bus_event(match: re.Match[str]) -> BusEvent | Unparsed:
    try:
        return BusEvent(normalize_bus_id(match["bdf"].rstrip(".:")))
    except ValueError:
        return Unparsed("fell off the bus: unreadable bus id", _excerpt(match[0]))


def _excerpt(text: str, limit: int = 160) -> str:
    flat = "".join(c if c.isprintable() else " " for c in text[:limit])
    return flat.strip()


def parse_line(record: str | bytes) -> Parsed:
    """One kernel-log record -> XidEvent | BusEvent | Unparsed | None. Never raises."""
    try:
        return _parse(record)
    except Exception as exc:  # a log line must never take the reader down
        return Unparsed(f"parser error: {type(exc).__name__}")


def _parse(record: str | bytes) -> Parsed:
    if isinstance(record, bytes):
        text = record[:_MAX_CHARS * 4].decode("utf-8", "replace")
    elif isinstance(record, str):
        text = record
    else:
        return None
    text = text[:_MAX_CHARS]
    if "Xid" not in text and _FALLEN not in text:
        return None  # the fast path: nearly every kernel line
    if _KMSG_HEAD.match(text):
        kmsg = parse_kmsg_record(text)
        if kmsg is not None:
            text = kmsg.message
    xid = _XID.search(text)
    if xid is not None:
        return _parse_xid(xid)
    for pattern in (_BUS_ONE_LINE, _BUS_MULTI_LINE):
        bus = pattern.search(text)
        if bus is not None:
            return _bus_event(bus)
    if _XID_WORD.search(text):
        return Unparsed("names an Xid but is not an 'NVRM: Xid (...): N' line", _excerpt(text))
    if _FALLEN in text:
        # Typically the last line of the three-line record, read on its own.
        return Unparsed("fell off the bus without a bus id (a split record?)", _excerpt(text))
    return None


def join_continuations(lines: Iterable[str]) -> Iterator[str]:
    """Rejoin dmesg / journalctl text where one record spans several lines.

    Both print the lines after the first of a multi-line record indented; an indented,
    non-blank line is glued to the one before with a newline. A record is yielded when the
    next one starts, so a live tail sees the last record one line late.
    """
    pending: str | None = None
    for line in lines:
        line = line.rstrip("\r\n")
        if pending is not None and line[:1] in (" ", "\t") and line.strip():
            pending = f"{pending}\n{line}"
            continue
        if pending is not None:
            yield pending
        pending = line
    if pending is not None:
        yield pending

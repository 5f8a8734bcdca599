"""Reading the small files an operator or a scenario author names: the config file, the web
config, scenario and threshold files, token files.

Every such read goes through here, so each gets the same guarantees:

- Only a regular file is read (or the null device, the conventional empty file:
  `check-config /dev/null`). A directory, a FIFO, a socket or a device such as /dev/zero is
  refused from its type before it is opened, and the open is non-blocking, so a FIFO swapped in
  after the check cannot block the start either.
- At most `MAX_BYTES` (less for a token): a larger file is refused, never truncated.
- YAML builds plain data only: PyYAML's safe loader, which has no constructor for
  `!!python/...` or any other object-building tag. A document may nest at most `MAX_DEPTH`
  levels and hold at most `MAX_NODES` values, aliases counted as what they expand to, so a
  "billion laughs" is refused while it is parsed rather than expanded by whoever walks it.
- Every problem is one line naming the file that never quotes its content: a token given as
  the config file must not end up in a log.
"""

from __future__ import annotations

import os
import reprlib
import stat
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20  # the shipped examples are a few KiB
MAX_DEPTH = 32  # a config nests 3 levels, a scenario 4
MAX_NODES = 100_000  # values after alias expansion; a config has a few hundred

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class FileRefused(ValueError):
    """A file that cannot be used: one line naming it, quoting none of it. A ValueError, so a
    pydantic validator that reads a file reports it like any other bad value."""


def read_bytes(path: Path, where: str, limit: int = MAX_BYTES) -> bytes:
    """The whole file, when it is a regular file of at most `limit` bytes."""
    try:
        _check_type(os.stat(path), where)  # before opening: opening a device can act on it
        fd = os.open(path, _FLAGS)
    except FileNotFoundError:
        raise FileRefused(f"{where}: not found") from None
    except OSError as e:
        raise FileRefused(f"{where}: cannot read it: {e.strerror or type(e).__name__}") from None
    try:
        st = os.fstat(fd)
        if _check_type(st, where) == "null":
            return b""
        if st.st_size > limit:
            raise FileRefused(f"{where}: larger than {_size(limit)} ({st.st_size} bytes)")
        chunks, size = [], 0
        while size <= limit:  # it may grow after fstat: read one byte past the limit at most
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefused(f"{where}: larger than {_size(limit)}")
        return b"".join(chunks)
    except OSError as e:
        raise FileRefused(f"{where}: cannot read it: {e.strerror or type(e).__name__}") from None
    finally:
        os.close(fd)


def read_text(path: Path, where: str, limit: int = MAX_BYTES) -> str:
    data = read_bytes(path, where, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:  # its message quotes the byte: say where it is instead
        raise FileRefused(f"{where}: not UTF-8 text (byte {e.start})") from None


def read_yaml(path: Path, where: str) -> Any:
    """The file's YAML document as plain data (None when empty)."""
    return parse_yaml(read_text(path, where), where)


def parse_yaml(text: str, where: str) -> Any:
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except _TooComplex as e:
        raise FileRefused(f"{where}: {e.args[0]} (line {e.args[1].line + 1})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise FileRefused(f"{where}: not valid YAML{at}: {problem}") from None
    finally:
        loader.dispose()


class _TooComplex(Exception):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader (plain data only) that bounds nesting and alias expansion while composing.

    Each node's expanded size (itself plus everything under it, an alias counting as the whole
    node it names) is worked out bottom-up as the node is finished, so the check costs one pass
    over the text whatever the aliases would expand to.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[yaml.Node, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            if node not in self._sizes:  # named from inside itself: a cycle
                raise _TooComplex("an alias refers to a node that contains it", mark)
            return node
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooComplex(f"nested deeper than {MAX_DEPTH} levels",
                                  self.peek_event().start_mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._sizes[child] for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(self._sizes[k] + self._sizes[v] for k, v in node.value)
        if size > MAX_NODES:
            raise _TooComplex(f"more than {MAX_NODES} values (aliases counted as what they "
                              "expand to)",
                              node.start_mark)
        self._sizes[node] = size
        return node


def _check_type(st: os.stat_result, where: str) -> str:
    """"file" or "null" (the null device reads as an empty file); FileRefused otherwise."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISCHR(mode) and st.st_rdev == os.stat(os.devnull).st_rdev:
        return "null"
    kind = next((name for test, name in _KINDS if test(mode)), "something else")
    raise FileRefused(f"{where}: not a regular file but {kind}")


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n % (1 << 20) == 0 else f"{n} bytes"


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 60
_SHOWN.maxlevel = 2


def shown(value: Any) -> str:
    """A value read from a file, for an error message: its repr, cut short (a value that is a
    whole document must not become a megabyte-long log line)."""
    return _SHOWN.repr(value)

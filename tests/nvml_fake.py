"""A pynvml look-alike that replays a recorded session, with faults a test can inject.

`FakeNvml.from_fixture(path)` answers each `nvml*` call from the recording made by
`nvml_recording.RecordingNvml` on a real GPU: the n-th call with a key gets the n-th recorded
outcome, then the last one again (a test may run more cycles than were recorded). Constants,
exception classes and struct classes are the real pynvml ones (it imports without a GPU).

Rebuilt values are the real pynvml types wherever pynvml has the class (c_nvmlMemory_v2_t,
c_nvmlFieldValue_t with its union, c_nvmlRowRemapperHistogramValues, nvmlFriendlyObject, c_uint),
so attribute access, auto-decoded strings and `bytes` units behave as on the GPU. Handles are real
ctypes pointers of pynvml's pointer types (so `mg.sample1 = sample` works) that compare and hash
by token ("dev0"); the fake maps their addresses back to tokens.

Modelled, not replayed: nvmlInit/nvmlShutdown (refcounted like the library; shutdown without init
raises Uninitialized; each fresh init starts a new generation and handles from an older one raise
InvalidArgument), calls before init (Uninitialized), nvmlErrorString. The fixture's "modelled"
answers are therefore not replayed. Stricter than the H100/580 driver, which revalidates an old
handle (same address) once GetHandleByIndex returns it again: here only the new object works, so
a backend must use what it re-obtained. Test bugs are
AssertionErrors, also kept in `violations` because a backend may swallow exceptions: an
unrecorded call, a call that would change the GPU, nvmlShutdown while another call is in
flight, a GPM sample or event set used after it was freed.
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import json
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
from nvml_codec import (
    FREE_FUNCTIONS,
    HANDLE_KINDS,
    LIFECYCLE,
    RESOURCE_KINDS,
    Decoder,
    address,
    bind_args,
    encode_arg,
    handle_kind,
    make_key,
    sample_source,
)
from nvml_recording import PURE_HELPERS, refuse_mutating

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "nvml"
_INIT = LIFECYCLE - {"nvmlShutdown"}
_MISSING = object()


def _handle_eq(self: Any, other: object) -> bool:
    return getattr(other, "token", _MISSING) == self.token


@functools.cache
def _handle_class(kind: str) -> type:
    """A subclass of pynvml's pointer type for `kind`, comparing and hashing by token."""
    struct_name = {v: k for k, v in HANDLE_KINDS.items()}.get(kind, "")
    target = getattr(pynvml, struct_name, None)
    if target is None:
        target = type(f"struct_fake_{kind}", (ctypes.Structure,), {})
    return type(f"FakeHandle_{kind}", (ctypes.POINTER(target),), {
        "_type_": target,
        "__eq__": _handle_eq,
        "__hash__": lambda self: hash(self.token),
        "__repr__": lambda self: f"<fake nvml handle {self.token}>",
    })


@dataclass
class _Entry:
    token: str
    kind: str
    generation: int
    handle: Any
    source: str | None = None  # GPM sample: where it was last taken ("dev0", "dev0/gi1")
    freed: bool = False

    @property
    def device(self) -> str | None:
        if self.kind in RESOURCE_KINDS:
            return self.source.split("/")[0] if self.source else None
        return self.token


@dataclass
class _Failure:
    fn: str
    code: int
    remaining: int | None
    gpu: str | None


_EVENT_FUNCTIONS = frozenset({"nvmlEventSetCreate", "nvmlEventSetFree", "nvmlEventSetWait_v2",
                              "nvmlEventSetWait", "nvmlDeviceRegisterEvents",
                              "nvmlDeviceGetSupportedEventTypes"})


class FakeNvml(types.ModuleType):
    def __init__(self, fixture: dict[str, Any], *, default_not_supported: bool = False) -> None:
        super().__init__("pynvml")
        # Internal names carry an _f_ prefix: the instance dict shadows the real module's names.
        self._f_calls: dict[str, list[dict[str, Any]]] = fixture["calls"]
        self._f_functions = {key.split("|", 1)[0] for key in self._f_calls}
        self._f_default_ns = default_not_supported
        self._f_lock = threading.RLock()
        self._f_next: dict[str, int] = {}
        self._f_refcount = 0
        self._f_generation = 0
        self._f_in_flight = 0
        self._f_serial = 0
        self._f_entries: dict[int, _Entry] = {}  # handle address -> entry
        self._f_by_token: dict[tuple[str, int], _Entry] = {}
        self._f_lost: set[str] = set()
        self._f_library_missing = False
        self._f_not_found: set[str] = set()
        self._f_failures: list[_Failure] = []
        self._f_blocks: list[tuple[str, str | None, threading.Event]] = []
        self._f_entered: dict[str, threading.Event] = {}
        self._f_codec = Decoder(self._f_handle)
        self.meta: dict[str, Any] = fixture.get("meta", {})
        self.calls: list[str] = []  # every nvml* call made, in order
        self.violations: list[str] = []
        self.supported_event_types = 0xFF9F  # what an H100 with driver 580 answered
        self._f_events = threading.Condition()
        self._f_queue: list[Any] = []
        self._f_registered: dict[str, Any] = {}
        self._f_event_set: Any = None
        self.init_count = 0  # attempts, failed ones included
        self.shutdown_count = 0

    @classmethod
    def from_fixture(cls, path: str | Path, **options: Any) -> FakeNvml:
        return cls(json.loads(Path(path).read_text()), **options)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_f_"):
            raise AttributeError(name)
        real = getattr(pynvml, name, _MISSING)
        is_call = inspect.isfunction(real) or (real is _MISSING and name in self._f_functions)
        if name.startswith("nvml") and name not in PURE_HELPERS and is_call:

            def replayed(*args: Any, **kwargs: Any) -> Any:
                return self._f_call(name, args, kwargs)

            replayed.__name__ = replayed.__qualname__ = name
            self.__dict__[name] = replayed
            return replayed
        if real is _MISSING:
            raise AttributeError(f"module 'pynvml' has no attribute {name!r}")
        return real

    # -- fault injection (all thread-safe) -------------------------------------------------
    def lose(self, gpu_token: str) -> None:
        """Every call on that GPU (or returning it) raises GpuIsLost until restore()."""
        with self._f_lock:
            self._f_lost.add(gpu_token)

    def restore(self, gpu_token: str) -> None:
        with self._f_lock:
            self._f_lost.discard(gpu_token)

    def block(self, fn_name: str, gpu_token: str | None = None) -> threading.Event:
        """The next calls of fn_name (on that GPU) wait until the returned Event is set."""
        gate = threading.Event()
        with self._f_lock:
            self._f_blocks.append((fn_name, gpu_token, gate))
            self._f_entered[fn_name] = threading.Event()
        return gate

    def entered(self, fn_name: str) -> threading.Event:
        """Set once a call of fn_name waits on a block() gate (each block() starts a new one)."""
        with self._f_lock:
            return self._f_entered.setdefault(fn_name, threading.Event())

    def release_all(self) -> None:
        with self._f_lock:
            for _, _, gate in self._f_blocks:
                gate.set()

    def missing_library(self) -> None:
        with self._f_lock:
            self._f_library_missing = True

    def library_present(self) -> None:
        with self._f_lock:
            self._f_library_missing = False

    def function_not_found(self, fn_name: str) -> None:
        """fn_name raises FunctionNotFound, as with a driver older than the symbol."""
        with self._f_lock:
            self._f_not_found.add(fn_name)

    def fail(
        self, fn_name: str, code: int, times: int | None = None, gpu_token: str | None = None
    ) -> None:
        """fn_name (on that GPU) raises NVMLError(code) `times` times, or until clear_faults()."""
        with self._f_lock:
            self._f_failures.append(_Failure(fn_name, code, times, gpu_token))

    def clear_faults(self) -> None:
        with self._f_lock:
            self._f_lost.clear()
            self._f_not_found.clear()
            self._f_failures.clear()
            self._f_library_missing = False
        self.release_all()

    # -- observation -----------------------------------------------------------------------
    def calls_in_flight(self) -> int:
        with self._f_lock:
            return self._f_in_flight

    def live_resources(self) -> list[str]:
        """Tokens of GPM samples / event sets allocated and not freed (a leak if non-empty)."""
        with self._f_lock:
            entries = self._f_entries.values()
            return [e.token for e in entries if e.kind in RESOURCE_KINDS and not e.freed]

    def assert_clean(self) -> None:
        if self.violations:
            raise AssertionError("fake NVML saw misuse:\n" + "\n".join(self.violations))

    # -- replay ----------------------------------------------------------------------------
    def _f_call(self, name: str, args: tuple, kwargs: dict) -> Any:
        with self._f_lock:
            self._f_in_flight += 1
            self.calls.append(name)
            self.init_count += name in _INIT
            self.shutdown_count += name == "nvmlShutdown"
        try:
            return self._f_dispatch(name, args, kwargs)
        except AssertionError as exc:
            with self._f_lock:
                self.violations.append(str(exc))
            raise
        finally:
            with self._f_lock:
                self._f_in_flight -= 1

    # -- an emulated event set: the recorder cannot record events (it refuses Create/Register
    #    calls, and an idle GPU fires none), so the fake plays the driver's part here.
    def emit(self, gpu_token: str, event_type: int, data: int = 0) -> None:
        """Deliver an NVML event for a registered GPU (e.g. nvmlEventTypeXidCriticalError)."""
        with self._f_events:
            handle = self._f_registered[gpu_token]
            self._f_queue.append(SimpleNamespace(device=handle, eventType=event_type,
                                                 eventData=data))
            self._f_events.notify_all()

    def _f_event(self, name: str, args: tuple) -> Any:
        if self._f_refcount == 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        if name == "nvmlEventSetCreate":
            self._f_event_set = SimpleNamespace(freed=False)
            return self._f_event_set
        if name == "nvmlEventSetFree":
            args[0].freed = True
            return None
        if name == "nvmlDeviceGetSupportedEventTypes":
            if self._f_entry(args[0]).token in self._f_lost:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
            return self.supported_event_types
        if name == "nvmlDeviceRegisterEvents":
            with self._f_events:
                self._f_registered[self._f_entry(args[0]).token] = args[0]
            return None
        event_set, timeout_ms = args  # nvmlEventSetWait_v2 / nvmlEventSetWait
        if event_set.freed:
            raise AssertionError("nvmlEventSetWait on a freed event set")
        with self._f_events:
            if not self._f_queue:
                self._f_events.wait(timeout_ms / 1000)  # blocks like the driver: no sleep
            if not self._f_queue:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
            return self._f_queue.pop(0)

    def _f_dispatch(self, name: str, args: tuple, kwargs: dict) -> Any:
        if name in _EVENT_FUNCTIONS:
            return self._f_event(name, args)
        refuse_mutating(name)
        real = getattr(pynvml, name, None)
        values = bind_args(name, real if callable(real) else None, args, kwargs)
        if name == "nvmlErrorString":
            return str(pynvml.NVMLError(values[0]))
        seen: list[_Entry] = []
        unknown: list[int] = []

        def token_of(addr: int, kind: str) -> str:
            entry = self._f_entries.get(addr)
            if entry is None:
                unknown.append(addr)
                return "?"
            seen.append(entry)
            return entry.token

        def source_of(addr: int) -> str | None:
            entry = self._f_entries.get(addr)
            if entry is not None:
                seen.append(entry)
            return entry.source if entry else None

        with self._f_lock:
            key = make_key(name, [encode_arg(v, token_of, source_of) for v in values])
        gpus = {e.device for e in seen} - {None}
        self._f_wait_gates(name, gpus)
        with self._f_lock:
            if name == "nvmlShutdown" and self._f_in_flight > 1:
                raise AssertionError(
                    f"nvmlShutdown while {self._f_in_flight - 1} other NVML call(s) in flight"
                )
            self._f_inject(name, gpus)
            if name in LIFECYCLE:
                return self._f_lifecycle(name)
            if self._f_refcount == 0:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
            # Freeing a GPM buffer or an event set is host memory: it works for a lost GPU too.
            if gpus & self._f_lost and name not in FREE_FUNCTIONS:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
            for entry in seen:
                if entry.freed:
                    raise AssertionError(f"{name}: {entry.token} used after it was freed")
            # What NVML answers for a handle from before shutdown+init (H100/580 probe). Freeing
            # an old buffer is allowed: it is host memory, and refusing would make a leak.
            stale = any(e.generation != self._f_generation for e in seen)
            if unknown or (stale and name not in FREE_FUNCTIONS):
                raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            outcome = self._f_outcome(name, key, args, kwargs)
            return self._f_apply(name, outcome, values)

    def _f_wait_gates(self, name: str, gpus: set[str]) -> None:
        with self._f_lock:
            self._f_blocks = [b for b in self._f_blocks if not b[2].is_set()]
            gates = [
                g for fn, gpu, g in self._f_blocks if fn == name and (gpu is None or gpu in gpus)
            ]
            entered = self._f_entered.setdefault(name, threading.Event())
        if gates:
            entered.set()
            for gate in gates:
                gate.wait()  # an Event the test sets: never a sleep

    def _f_inject(self, name: str, gpus: set[str]) -> None:
        if name in _INIT and self._f_library_missing:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        if name in self._f_not_found:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        for rule in self._f_failures:
            if rule.fn == name and (rule.gpu is None or rule.gpu in gpus) and rule.remaining != 0:
                if rule.remaining is not None:
                    rule.remaining -= 1
                raise pynvml.NVMLError(rule.code)

    def _f_lifecycle(self, name: str) -> None:
        if name in _INIT:
            if self._f_refcount == 0:
                self._f_generation += 1  # a real (re-)init: earlier handles are now invalid
            self._f_refcount += 1
            return None
        if self._f_refcount == 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        self._f_refcount -= 1
        return None

    def _f_outcome(self, name: str, key: str, args: tuple, kwargs: dict) -> dict[str, Any]:
        outcomes = self._f_calls.get(key)
        if not outcomes:
            if self._f_default_ns:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
            near = [k for k in self._f_calls if k.startswith(name + "|")][:5]
            raise AssertionError(
                f"unrecorded NVML call {name}(args={args!r}, kwargs={kwargs!r}): key {key}; "
                f"recorded keys for {name}: {near or 'none'}"
            )
        n = self._f_next.get(key, 0)
        self._f_next[key] = n + 1
        return outcomes[min(n, len(outcomes) - 1)]

    def _f_apply(self, name: str, outcome: dict[str, Any], values: list[Any]) -> Any:
        if "error" in outcome:
            raise pynvml.NVMLError(outcome["error"])  # __new__ picks the NVMLError_* subclass
        if "exception" in outcome:
            raise getattr(pynvml, outcome["exception"])(outcome["message"])
        if self._f_tokens_in(outcome.get("return")) & self._f_lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)  # enumerating a lost GPU
        for index, data in outcome.get("out", {}).items():
            target = values[int(index)]
            target = target._obj if type(target).__name__ == "CArgObject" else target
            self._f_codec.fill(target, data)
        result = self._f_codec.value(outcome.get("return"), values)
        source = sample_source(name, values, lambda h: self._f_entry(h).token)
        if source is not None:
            self._f_entry(source[0]).source = source[1]
        if name in FREE_FUNCTIONS and values and handle_kind(values[0]):
            self._f_entry(values[0]).freed = True
        return result

    def _f_entry(self, handle: Any) -> _Entry:
        return self._f_entries[address(handle) or 0]

    def _f_tokens_in(self, data: Any) -> set[str]:
        if isinstance(data, list):
            return set().union(*(self._f_tokens_in(x) for x in data))
        if isinstance(data, dict):
            if "__handle__" in data:
                return {data["__handle__"]}
            return set().union(*(self._f_tokens_in(x) for x in data.values()))
        return set()

    # -- rebuilding values -----------------------------------------------------------------
    def _f_handle(self, token: str) -> Any:
        kind = token.rstrip("0123456789")
        if kind in RESOURCE_KINDS:
            # Each allocation is a new buffer; the recorded token only says which kind.
            token = f"{kind}{self._f_serial}"
            self._f_serial += 1
        else:
            existing = self._f_by_token.get((token, self._f_generation))
            if existing is not None:
                return existing.handle  # the library returns the same handle within one init
        buffer = ctypes.create_string_buffer(1)  # a unique, live address for the pointer
        handle = ctypes.cast(buffer, _handle_class(kind))
        handle.token = token
        handle.fake_buffer = buffer
        entry = _Entry(token, kind, self._f_generation, handle)
        self._f_entries[ctypes.addressof(buffer)] = entry
        self._f_by_token[(token, self._f_generation)] = entry
        return handle

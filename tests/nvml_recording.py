"""Record what a real pynvml answers, call by call, so fakes replay what the library returns.

`RecordingNvml(pynvml)` stands in for the pynvml module. Constants, exception classes and struct
classes come straight from the real module; every `nvml*` function is wrapped to store
(function, normalized arguments, outcome) and then behave exactly as the real call did (same
return object, same exception). `save(path)` writes the JSON fixture that `nvml_fake.FakeNvml`
replays; nvml_codec describes keys and values.

The fake models init/shutdown itself (refcount, Uninitialized, stale handles after a re-init).
Answers caused by that state are therefore kept apart, under "modelled", with what the model
predicted: replayed, they would shift the per-key sequence of real answers. On the H100/580 a
device handle keeps its address across shutdown+init, yet is InvalidArgument until
nvmlDeviceGetHandleByIndex hands it out again: state, not the arguments, decides the answer.
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import inspect
import json
import re
import threading
import types
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pynvml
from nvml_codec import (
    FREE_FUNCTIONS,
    LIFECYCLE,
    RESOURCE_KINDS,
    address,
    bind_args,
    encode_arg,
    encode_value,
    handle_kind,
    make_key,
    out_params,
    sample_source,
)

# Functions named nvml* that never reach the C library: pure helpers, nothing to record.
PURE_HELPERS = frozenset(
    {"nvmlExceptionClass", "nvmlStructToFriendlyObject", "nvmlFriendlyObjectToStruct"}
)

# An exporter must never change a GPU. A name holding one of these words changes state, unless it
# is a getter: every pynvml Get/Query function that holds one of them uses it as a noun
# ("GpuSet", "EventSetGetContextCount"). "EventSet" is a noun everywhere.
_MUTATING_WORDS = frozenset(
    {"Set", "Reset", "Clear", "Enable", "Disable", "Register", "Create", "Destroy", "Remove",
     "Discover", "Modify", "Freeze", "Activate", "Update", "Write", "Force", "Request"}
)
_READ_WORDS = frozenset({"Get", "Query"})
# Event sets are host-side objects; creating one changes nothing on a GPU.
_HARMLESS = frozenset({"nvmlEventSetCreate", "nvmlSystemEventSetCreate"})


def is_mutating(name: str) -> bool:
    if name in _HARMLESS:
        return False
    words = set(re.findall(r"[A-Z][a-z]+", name.replace("EventSet", "Eventset")))
    return not (words & _READ_WORDS) and bool(words & _MUTATING_WORDS)


def refuse_mutating(name: str) -> None:
    if is_mutating(name):
        raise AssertionError(f"{name} would change GPU state; the exporter only reads")


def pynvml_version(module: Any = pynvml) -> str:
    """The nvidia-ml-py version of the pynvml file actually imported (not of another install)."""
    if not getattr(module, "__file__", None):
        return "unknown (not a module file)"
    path = Path(module.__file__).resolve()
    for dist in importlib.metadata.distributions(path=[str(path.parent)]):
        if dist.metadata["Name"] == "nvidia-ml-py":
            return dist.version
    return f"unknown ({path})"


class RecordingNvml(types.ModuleType):
    """A pynvml look-alike that records every nvml* call on its way to `real`."""

    def __init__(self, real: Any = pynvml) -> None:
        super().__init__("pynvml")
        # Internal names carry a _rec_ prefix: the instance dict shadows the real module's names.
        self._rec_real = real
        self._rec_lock = threading.Lock()
        self._rec_calls: dict[str, list[dict[str, Any]]] = {}
        self._rec_modelled: dict[str, list[dict[str, Any]]] = {}
        self._rec_tokens: dict[tuple[str, int], str] = {}
        self._rec_counts: Counter[str] = Counter()
        self._rec_sources: dict[int, str] = {}
        self._rec_returned: dict[str, str] = {}  # key -> handle token it returned last time
        # The same init/shutdown model as the fake, to tell state-caused answers apart.
        self._rec_refcount = 0
        self._rec_generation = 0
        self._rec_born: dict[str, int] = {}  # token -> generation that handed it out
        self.meta: dict[str, Any] = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "pynvml_version": pynvml_version(real),
            "synthesized": False,
        }

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_rec_"):
            raise AttributeError(name)
        value = getattr(self._rec_real, name)
        if not (name.startswith("nvml") and callable(value)) or inspect.isclass(value):
            return value
        if name in PURE_HELPERS:
            return value

        @functools.wraps(value)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            return self._rec_call(name, value, args, kwargs)

        self.__dict__[name] = recorded  # later lookups skip __getattr__
        return recorded

    # -- recording -------------------------------------------------------------------------
    def _rec_token(self, addr: int, kind: str) -> str:
        token = self._rec_tokens.get((kind, addr))
        if token is None:
            token = f"{kind}{self._rec_counts[kind]}"
            self._rec_counts[kind] += 1
            self._rec_tokens[(kind, addr)] = token
        return token

    def _rec_token_of_handle(self, handle: Any) -> str:
        kind = handle_kind(handle)
        addr = address(handle) if kind else None
        return self._rec_token(addr, kind) if kind and addr is not None else "?"

    def _rec_call(self, name: str, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        if name == "nvmlDeviceRegisterEvents":
            # Not recorded (the fake plays the driver's part for events) and not made: answered
            # as on a GPU without events, so the backend starts and carries on without them.
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        refuse_mutating(name)
        values = bind_args(name, fn, args, kwargs)
        used: list[str] = []

        def token_of(addr: int, kind: str) -> str:
            used.append(self._rec_token(addr, kind))
            return used[-1]

        def source_of(addr: int) -> str | None:
            if ("gpm", addr) in self._rec_tokens:
                used.append(self._rec_tokens[("gpm", addr)])
            return self._rec_sources.get(addr)

        with self._rec_lock:
            key = make_key(name, [encode_arg(v, token_of, source_of) for v in values])
            predicted = self._rec_predict(name, used)
        try:
            result = fn(*args, **kwargs)
        except pynvml.NVMLError as exc:
            self._rec_store(key, {"error": exc.value, "name": type(exc).__name__}, predicted)
            raise
        except pynvml.NVMLLibraryMismatchError as exc:
            outcome = {"exception": type(exc).__name__, "message": str(exc)}
            self._rec_store(key, outcome, predicted)
            raise
        with self._rec_lock:
            self._rec_after(name, key, values, result)
            outcome: dict[str, Any] = {"return": encode_value(result, self._rec_token, values)}
            outs = {str(i): encode_value(s, self._rec_token) for i, s in out_params(values)}
            if outs:
                outcome["out"] = outs
        self._rec_store(key, outcome, predicted)
        return result

    def _rec_predict(self, name: str, used: list[str]) -> int | None:
        """The error the fake's model gives for this call now, if any."""
        if name in LIFECYCLE or name == "nvmlErrorString":
            return None
        if self._rec_refcount == 0:
            return pynvml.NVML_ERROR_UNINITIALIZED
        current = self._rec_generation
        if name not in FREE_FUNCTIONS and any(self._rec_born.get(t, current) != current
                                              for t in used):
            return pynvml.NVML_ERROR_INVALID_ARGUMENT
        return None

    def _rec_after(self, name: str, key: str, values: list[Any], result: Any) -> None:
        """Bookkeeping after a successful call (under the lock)."""
        if name in LIFECYCLE:
            if name != "nvmlShutdown":
                self._rec_generation += self._rec_refcount == 0
                self._rec_refcount += 1
            else:
                self._rec_refcount = max(0, self._rec_refcount - 1)
        kind = handle_kind(result)
        addr = address(result) if kind else None
        if kind is not None and addr is not None:
            # The same device may come back at a new address after a re-init; the call that
            # returned it (GetHandleByIndex(0), ...) says which device it is: keys stay stable.
            identity = kind not in RESOURCE_KINDS
            if identity and (kind, addr) not in self._rec_tokens and key in self._rec_returned:
                self._rec_tokens[(kind, addr)] = self._rec_returned[key]
            token = self._rec_token(addr, kind)
            self._rec_returned[key] = token
            self._rec_born[token] = self._rec_generation
        source = sample_source(name, values, self._rec_token_of_handle)
        if source is not None and address(source[0]) is not None:
            self._rec_sources[address(source[0])] = source[1]
        if name in FREE_FUNCTIONS and values and handle_kind(values[0]):
            # A freed buffer's address may come back from the next alloc: a new token then.
            self._rec_tokens.pop((handle_kind(values[0]), address(values[0])), None)

    def _rec_store(self, key: str, outcome: dict[str, Any], predicted: int | None) -> None:
        with self._rec_lock:
            if predicted is None:
                self._rec_calls.setdefault(key, []).append(outcome)
            else:
                kept = {**outcome, "predicted": predicted}
                self._rec_modelled.setdefault(key, []).append(kept)

    # -- results ---------------------------------------------------------------------------
    def collect_meta(self) -> None:
        """Driver and GPU facts for the fixture's meta, read without recording (needs init)."""
        real = self._rec_real
        self.meta["driver"] = real.nvmlSystemGetDriverVersion()
        self.meta["nvml_version"] = real.nvmlSystemGetNVMLVersion()
        self.meta["cuda_driver_version"] = real.nvmlSystemGetCudaDriverVersion_v2()
        count = real.nvmlDeviceGetCount()
        self.meta["gpus"] = [
            real.nvmlDeviceGetName(real.nvmlDeviceGetHandleByIndex(i)) for i in range(count)
        ]

    def fixture(self) -> dict[str, Any]:
        with self._rec_lock:
            calls = {k: list(v) for k, v in self._rec_calls.items()}
            modelled = {k: list(v) for k, v in self._rec_modelled.items()}
        return {
            "meta": dict(self.meta),
            "counts": {k: len(v) for k, v in calls.items()},
            "calls": calls,
            "modelled": modelled,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        # NaN is written as JSON's NaN extension: GPM really returns it, json reads it back.
        path.write_text(json.dumps(self.fixture(), indent=1, sort_keys=True) + "\n")
        return path

    def summary(self) -> str:
        fixture = self.fixture()
        errors: Counter[str] = Counter()
        for outcomes in fixture["calls"].values():
            for outcome in outcomes:
                if "error" in outcome:
                    errors[f"{outcome['name']}({outcome['error']})"] += 1
        total = sum(fixture["counts"].values())
        listed = ", ".join(f"{k}={v}" for k, v in sorted(errors.items())) or "none"
        modelled = [o for outs in fixture["modelled"].values() for o in outs]
        wrong = sum(o.get("error") != o["predicted"] for o in modelled)
        return (f"{total} calls recorded, {len(fixture['calls'])} distinct keys, errors: {listed}"
                f"; {len(modelled)} answered by init/shutdown state ({wrong} not as the fake's"
                " model predicts)")

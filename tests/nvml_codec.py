"""How pynvml calls and values become JSON fixture data, and back into real pynvml types.

Shared by the recorder (nvml_recording) and the fake (nvml_fake), so both build the same keys.

A key is `"<function>|<json of the bound arguments>"`: arguments are bound against pynvml's own
signature with defaults applied, so `f(h, version=v)` and `f(h, v)` are one key. Opaque handles
become tokens: devices (MIG devices too) "dev0", "dev1"... in order of first appearance, GPU /
compute instances "gi0"/"ci0". GPM samples and event sets are host-side buffers whose identity
carries no information, so in keys they are only their kind ("gpm"); a GPM metrics request is
keyed by its metric ids and by the device each sample was taken from instead. A struct passed
in (byref or directly) is keyed by its class and version only: the rest of it is output.

Values: int/float/str/bool/None as is, tuples as lists, bytes {"__bytes__": latin-1},
structs and unions {"__struct__": class, field: value...} (every union member; char arrays and
c_char_p decoded), ctypes scalars {"__ctype__": "c_uint", "value": 0}, handles
{"__handle__": "dev0"}, and {"__arg__": i} when a call returns its own argument i.
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import json
import types
from collections.abc import Callable, Sequence
from typing import Any

import pynvml

# Opaque handle kinds, by the name of the struct pynvml's pointer type points to.
HANDLE_KINDS = {
    "struct_c_nvmlDevice_t": "dev",
    "struct_c_nvmlGpuInstance_t": "gi",
    "struct_c_nvmlComputeInstance_t": "ci",
    "struct_c_nvmlUnit_t": "unit",
    "struct_c_nvmlGpmSample_t": "gpm",
    "struct_c_nvmlEventSet_t": "evset",
    "struct_c_nvmlSystemEventSet_t": "sysevset",
}
RESOURCE_KINDS = frozenset({"gpm", "evset", "sysevset"})  # allocations, keyed by kind only
FREE_FUNCTIONS = frozenset({"nvmlGpmSampleFree", "nvmlEventSetFree", "nvmlSystemEventSetFree"})
LIFECYCLE = frozenset({"nvmlInit", "nvmlInitWithFlags", "nvmlShutdown"})
GPM_GET = "c_nvmlGpmMetricsGet_t"
_CDATA = (ctypes.Structure, ctypes.Union, ctypes.Array, ctypes._Pointer, ctypes._SimpleCData)

TokenOf = Callable[[int, str], str]  # (address, kind) -> token
SourceOf = Callable[[int], "str | None"]  # GPM sample address -> "dev0" or "dev0/gi1"


def handle_kind(obj: object) -> str | None:
    """Kind of an opaque-handle pointer, or None when `obj` is not one."""
    if not isinstance(obj, ctypes._Pointer):
        return None
    target = type(obj)._type_
    opaque = not getattr(target, "_fields_", None)
    if isinstance(target, type) and issubclass(target, ctypes.Structure) and opaque:
        return HANDLE_KINDS.get(target.__name__, "h")
    return None


def address(pointer: object) -> int | None:
    return ctypes.cast(pointer, ctypes.c_void_p).value


def field_list(struct_type: type) -> list[tuple[str, Any]]:
    return [(f[0], f[1]) for f in getattr(struct_type, "_fields_", [])]


def is_text_type(ctype: Any) -> bool:
    if ctype is ctypes.c_char_p:
        return True
    is_array = isinstance(ctype, type) and issubclass(ctype, ctypes.Array)
    return is_array and ctype._type_ is ctypes.c_char


def _text(value: Any) -> Any:
    # surrogateescape: any byte string survives the JSON round trip unchanged.
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


@functools.cache
def _signature_of(name: str, fallback: Callable[..., Any] | None) -> inspect.Signature | None:
    # pynvml's own signature wins, so a stand-in module and the fake produce the same keys.
    fn = getattr(pynvml, name, None) if name.startswith("nvml") else None
    for candidate in (fn, fallback):
        if candidate is not None:
            try:
                return inspect.signature(candidate)
            except (TypeError, ValueError):
                continue
    return None


def bind_args(name: str, fn: Callable[..., Any] | None, args: tuple, kwargs: dict) -> list[Any]:
    """Arguments in parameter order, defaults applied. Raises TypeError like a bad call would."""
    sig = _signature_of(name, fn)
    if sig is None:
        return [*args, *(v for _, v in sorted(kwargs.items()))]
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    values: list[Any] = []
    for param, value in bound.arguments.items():
        kind = sig.parameters[param].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            values.extend(value)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            values.extend(v for _, v in sorted(value.items()))
        else:
            values.append(value)
    return values


def make_key(name: str, encoded_args: list[Any]) -> str:
    return f"{name}|{json.dumps(encoded_args, sort_keys=True, separators=(',', ':'))}"


def encode_arg(obj: Any, token_of: TokenOf, source_of: SourceOf) -> Any:
    """An argument as it appears in a replay key: what determines the answer, nothing else."""
    kind = handle_kind(obj)
    if kind is not None:
        addr = address(obj)
        if addr is None:
            return None
        token = token_of(addr, kind)  # also how the fake sees which handles a call uses
        return {"__handle__": kind if kind in RESOURCE_KINDS else token}
    if type(obj).__name__ == "CArgObject":  # ctypes.byref(x)
        return {"__byref__": encode_arg(obj._obj, token_of, source_of)}
    if isinstance(obj, (ctypes.Structure, ctypes.Union)):
        # Only class and version (the library rejects unknown versions) select the answer; the
        # rest is output, often left over from the previous call.
        key: dict[str, Any] = {"__struct__": type(obj).__name__}
        if "version" in dict(field_list(type(obj))):
            key["version"] = obj.version
        if type(obj).__name__ == GPM_GET:
            count = min(obj.numMetrics, len(obj.metrics))
            key["metricIds"] = [obj.metrics[i].metricId for i in range(count)]
            key["samples"] = [source_of(address(s) or 0) for s in (obj.sample1, obj.sample2)]
        return key
    if isinstance(obj, ctypes.Array):
        return {"__array__": type(obj).__name__}
    if isinstance(obj, ctypes._SimpleCData):
        return {"__ctype__": type(obj).__name__, "value": _text(obj.value)}
    if isinstance(obj, (list, tuple)):
        return [encode_arg(x, token_of, source_of) for x in obj]
    if isinstance(obj, bytes):
        return {"__bytes__": obj.decode("latin-1")}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return {"__repr__": type(obj).__name__}


def encode_value(obj: Any, token_of: TokenOf, args: Sequence[Any] = ()) -> Any:
    """A returned value (or out-param content) as JSON-able data that the fake can rebuild."""
    if isinstance(obj, _CDATA):
        for i, arg in enumerate(args):
            if obj is arg:  # nvmlGpmMetricsGet / nvmlGpmSampleGet hand back their argument
                return {"__arg__": i}
    kind = handle_kind(obj)
    if kind is not None:
        addr = address(obj)
        return None if addr is None else {"__handle__": token_of(addr, kind)}
    if isinstance(obj, (ctypes.Structure, ctypes.Union)):
        out: dict[str, Any] = {"__struct__": type(obj).__name__}
        for name, ctype in field_list(type(obj)):
            value = getattr(obj, name)
            if name == "metrics" and type(obj).__name__ == GPM_GET:
                value = [value[i] for i in range(min(obj.numMetrics, len(value)))]  # of 477
            out[name] = _text(value) if is_text_type(ctype) else encode_value(value, token_of)
        return out
    if isinstance(obj, pynvml.nvmlFriendlyObject):
        fields = {k: encode_value(v, token_of) for k, v in vars(obj).items()}
        return {"__struct__": "nvmlFriendlyObject", **fields}
    if isinstance(obj, ctypes.Array):
        return [encode_value(x, token_of) for x in obj]
    if isinstance(obj, ctypes._Pointer):
        return {"__pointer__": type(obj).__name__}  # not followed: no call we replay needs it
    if isinstance(obj, ctypes._SimpleCData):
        return {"__ctype__": type(obj).__name__, "value": _text(obj.value)}
    if isinstance(obj, (list, tuple)):
        return [encode_value(x, token_of) for x in obj]
    if isinstance(obj, bytes):
        return {"__bytes__": obj.decode("latin-1")}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return {"__unserializable__": type(obj).__name__, "repr": repr(obj)}


def out_params(values: Sequence[Any]) -> list[tuple[int, Any]]:
    """(position, struct) of every argument the library writes into."""
    found = []
    for i, value in enumerate(values):
        target = value._obj if type(value).__name__ == "CArgObject" else value
        if isinstance(target, (ctypes.Structure, ctypes.Union)):
            found.append((i, target))
    return found


def sample_source(name: str, values: Sequence[Any], token: Callable[[Any], str]) -> Any:
    """For a successful GPM sample call: (sample, where it was taken), else None."""
    if name == "nvmlGpmSampleGet" and len(values) == 2:
        return values[1], token(values[0])
    if name == "nvmlGpmMigSampleGet" and len(values) == 3:
        return values[2], f"{token(values[0])}/gi{int(values[1])}"
    return None


class RecordedStruct(types.SimpleNamespace):
    """A recorded struct whose class pynvml does not have (e.g. a test's own)."""


@functools.cache
def _recorded_struct_class(name: str) -> type:
    return type(name, (RecordedStruct,), {})


def _union_member(fields: list[tuple[str, Any]], data: dict[str, Any]) -> tuple[str, Any]:
    # All members view the same bytes; writing the widest integer member restores them exactly.
    present = [(n, t) for n, t in fields if n in data]
    ints = [(n, t) for n, t in present if getattr(t, "_type_", None) in tuple("bBhHiIlLqQ")]
    return max(ints or present, key=lambda f: ctypes.sizeof(f[1]))


def _get(container: Any, key: str | int) -> Any:
    return container[key] if isinstance(key, int) else getattr(container, key)


def _set(container: Any, key: str | int, value: Any) -> None:
    if isinstance(key, int):
        container[key] = value
    else:
        setattr(container, key, value)


class Decoder:
    """Rebuilds recorded values as the real pynvml types, so attribute access, auto-decoded
    strings and bytes-valued units behave as on the GPU. `make_handle(token)` supplies handles."""

    def __init__(self, make_handle: Callable[[str], Any]) -> None:
        self.make_handle = make_handle

    def value(self, data: Any, args: Sequence[Any] = ()) -> Any:
        if isinstance(data, list):
            return [self.value(x, args) for x in data]
        if not isinstance(data, dict):
            return data
        if "__arg__" in data:
            return args[data["__arg__"]]
        if "__handle__" in data:
            return self.make_handle(data["__handle__"])
        if "__ctype__" in data:
            ctype = getattr(ctypes, data["__ctype__"], None) or getattr(pynvml, data["__ctype__"])
            raw = data["value"]
            return ctype(raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw)
        if "__bytes__" in data:
            return data["__bytes__"].encode("latin-1")
        if "__struct__" in data:
            return self.build(data)
        raise AssertionError(f"the recording holds a value the fake cannot rebuild: {data!r}")

    def build(self, data: dict[str, Any]) -> Any:
        name = data["__struct__"]
        fields = {k: v for k, v in data.items() if k != "__struct__"}
        if name == "nvmlFriendlyObject":
            return pynvml.nvmlFriendlyObject({k: self.value(v) for k, v in fields.items()})
        cls = getattr(pynvml, name, None)
        if isinstance(cls, type) and issubclass(cls, (ctypes.Structure, ctypes.Union)):
            obj = cls.__new__(cls)  # skips an __init__ that would set a version: data has it
            self.fill(obj, data)
            return obj
        return _recorded_struct_class(name)(**{k: self.value(v) for k, v in fields.items()})

    def fill(self, obj: Any, data: dict[str, Any]) -> None:
        """Write recorded content into a struct: a new one, or the caller's out-param."""
        if type(obj).__name__ == GPM_GET:
            # By the metric ids the caller put in; its samples and counts stay its own.
            by_id = {m["metricId"]: m for m in data.get("metrics", [])}
            for i in range(min(obj.numMetrics, len(obj.metrics))):
                recorded = by_id.get(obj.metrics[i].metricId)
                if recorded is not None:
                    self.fill(obj.metrics[i], recorded)
            return
        fields = field_list(type(obj))
        if isinstance(obj, ctypes.Union):
            fields = [_union_member(fields, data)]
        for name, ctype in fields:
            if name in data:
                self._put(obj, name, ctype, data[name])

    def _put(self, container: Any, key: str | int, ctype: Any, value: Any) -> None:
        is_type = isinstance(ctype, type)
        if is_type and issubclass(ctype, (ctypes.Structure, ctypes.Union)):
            if value is not None:
                self.fill(_get(container, key), value)
        elif is_text_type(ctype):
            text = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            _set(container, key, text)
        elif is_type and issubclass(ctype, ctypes.Array):
            array = _get(container, key)
            for i, item in enumerate(value):
                self._put(array, i, ctype._type_, item)
        elif is_type and issubclass(ctype, ctypes._Pointer):
            if value is None or "__handle__" in value:  # other pointers were not recorded
                _set(container, key, None if value is None else self.value(value))
        else:
            _set(container, key, value)

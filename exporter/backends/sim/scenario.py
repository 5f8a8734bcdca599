"""The fault-injection scenario file of the simulated node: format, validation and queries.

A scenario is a YAML mapping with one key, `faults`: a list of faults, each with a `kind`, the
GPU(s) it hits and when (`at`, seconds or a duration like 30s/2m/1h after the daemon started).
Window faults last `duration` (omitted: until the end of the run); instant faults (xid, error
counts) happen once at `at`. `docs/scenario.md` describes every kind and the metric it moves.

Validation follows the configuration's rules: unknown keys are errors, and every problem is one
line that names the file and the key path, so `gpu-fleet-exporter` can print it and exit 2.
"""

from __future__ import annotations

import difflib
import math
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    model_validator,
)

from ...config import ConfigError, read_yaml
from ...durations import parse_duration
from ...safefiles import shown


class ScenarioError(ConfigError):
    """A bad scenario: one line naming the file and the key; a configuration error (exit 2)."""


def _gpus(value: Any) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or any(isinstance(g, bool) or not isinstance(g, int) or g < 0 for g in items):
        raise ValueError("must be a GPU index (an integer >= 0) or a list of them")
    return tuple(items)


Seconds = Annotated[float, BeforeValidator(parse_duration)]
Gpus = Annotated[tuple[int, ...], BeforeValidator(_gpus)]
Count = Annotated[int, Field(ge=1)]
ClockReason = Literal[
    "hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown", "sw_thermal_slowdown",
    "sw_power_cap",
]


class _Fault(BaseModel):
    # strict: YAML already gives numbers and booleans their types; "79" for an Xid is a mistake.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: str
    at: Seconds = Field(0.0, ge=0)
    gpu: Gpus

    @property
    def end(self) -> float:
        """When the fault stops acting: instant faults end where they start."""
        return self.at

    def active_at(self, t: float) -> bool:
        return self.at <= t < self.end


class _Window(_Fault):
    duration: Seconds | None = Field(None, gt=0)  # None: until the end of the run

    @property
    def end(self) -> float:
        return math.inf if self.duration is None else self.at + self.duration


class Xid(_Fault):
    kind: Literal["xid"]
    xid: int = Field(ge=1)
    pid: int | None = Field(None, ge=1)  # the process the driver names (application Xids)
    process: str | None = Field(None, min_length=1, max_length=64)


class Lost(_Window):
    kind: Literal["lost"]
    fell_off_bus: bool = False


class Hang(_Window):
    kind: Literal["hang"]


class EccUncorrectable(_Fault):
    kind: Literal["ecc_uncorrectable"]
    count: Count = 1
    location: Literal["dram", "sram"] = "dram"


class EccCorrected(_Fault):
    kind: Literal["ecc_corrected"]
    count: Count = 1
    location: Literal["dram", "sram"] = "dram"


class RowRemapPending(_Window):
    kind: Literal["row_remap_pending"]


class RowRemapFailure(_Window):
    kind: Literal["row_remap_failure"]


class SramThreshold(_Window):
    kind: Literal["sram_threshold"]


class ClockEvent(_Window):
    kind: Literal["clock_event"]
    reason: ClockReason


class PcieDowntrain(_Window):
    kind: Literal["pcie_downtrain"]
    generation: int | None = Field(None, ge=1, le=6)
    width: Literal[1, 2, 4, 8, 16] | None = None

    @model_validator(mode="after")
    def _something_drops(self) -> PcieDowntrain:
        if self.generation is None and self.width is None:
            raise ValueError("needs generation, width or both")
        return self


class PcieReplays(_Fault):
    kind: Literal["pcie_replays"]
    count: Count


class NvlinkDown(_Window):
    kind: Literal["nvlink_down"]
    link: int = Field(ge=0)


class NvlinkErrors(_Fault):
    kind: Literal["nvlink_errors"]
    link: int = Field(ge=0)
    type: Literal["crc_flit", "crc_data", "replay", "recovery"]
    count: Count


class RecoveryAction(_Window):
    kind: Literal["recovery_action"]
    action: int = Field(ge=0, le=4)  # 0 none, 1 reset GPU, 2 reboot, 3 drain P2P, 4 drain+reset


class Probe(_Window):
    kind: Literal["probe"]
    probe: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    # Lax floats: PyYAML reads 20e9 (no dot, unsigned exponent) as a string.
    values: dict[str, Annotated[float, Strict(False)]] = Field(default_factory=dict)
    # How the probe child itself breaks instead of measuring, as a real one can: killed by a
    # signal (a segfault in a driver library), hung past its deadline, garbage on stdout, out
    # of GPU memory.
    behaviour: Literal["crash", "hang", "garbage", "oom"] | None = None

    @model_validator(mode="after")
    def _says_something(self) -> Probe:
        if not self.values and self.behaviour is None:
            raise ValueError("a probe fault needs `values` or a `behaviour`")
        return self


class Busy(_Window):
    kind: Literal["busy"]


FAULT_TYPES: tuple[type[_Fault], ...] = (
    Xid, Lost, Hang, EccUncorrectable, EccCorrected, RowRemapPending, RowRemapFailure,
    SramThreshold, ClockEvent, PcieDowntrain, PcieReplays, NvlinkDown, NvlinkErrors,
    RecoveryAction, Probe, Busy,
)
KINDS: dict[str, type[_Fault]] = {get_args(t.model_fields["kind"].annotation)[0]: t
                                   for t in FAULT_TYPES}
Fault = Annotated[
    Xid | Lost | Hang | EccUncorrectable | EccCorrected | RowRemapPending | RowRemapFailure
    | SramThreshold | ClockEvent | PcieDowntrain | PcieReplays | NvlinkDown | NvlinkErrors
    | RecoveryAction | Probe | Busy,
    Field(discriminator="kind"),
]


class Scenario(BaseModel):
    """A validated scenario, indexed by (GPU, kind) for the backend's per-read queries."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    faults: list[Fault] = Field(default_factory=list)
    _source: str = PrivateAttr("<scenario>")
    _index: dict[tuple[int, str], list[_Fault]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, _context: Any) -> None:
        index: dict[tuple[int, str], list[_Fault]] = defaultdict(list)
        for fault in self.faults:
            for gpu in fault.gpu:
                index[(gpu, fault.kind)].append(fault)
        for faults in index.values():
            faults.sort(key=lambda f: f.at)
        self._index = dict(index)

    @property
    def source(self) -> str:
        return self._source

    def faults_of(self, gpu: int, kind: str) -> list[_Fault]:
        """Every fault of this kind on this GPU, in order of time."""
        return self._index.get((gpu, kind), [])

    def active(self, gpu: int, kind: str, t: float) -> list[Any]:
        """Window faults of this kind acting on this GPU at time t."""
        return [f for f in self.faults_of(gpu, kind) if f.active_at(t)]

    def instant_events(self, gpu: int, kind: str, until_t: float) -> list[Any]:
        """Faults of this kind on this GPU that began at or before until_t (counts so far)."""
        return [f for f in self.faults_of(gpu, kind) if f.at <= until_t]

    def probe_values(self, gpu: int, probe: str, t: float) -> dict[str, float | str]:
        """Results the named probe should report at t, and a `behaviour` if the child is to
        break instead; later faults win on the same key."""
        values: dict[str, float | str] = {}
        for fault in self.active(gpu, "probe", t):
            if fault.probe == probe:
                values.update(fault.values)
                if fault.behaviour is not None:
                    values["behaviour"] = fault.behaviour
        return values

    def check_gpus(self, n: int) -> None:
        """Reject faults on GPUs the simulated node does not have."""
        for i, fault in enumerate(self.faults):
            for gpu in fault.gpu:
                if gpu >= n:
                    raise ScenarioError(
                        f"scenario {self._source}: faults[{i}].gpu: {gpu}, but the simulated node "
                        f"has {n} GPUs"
                    )

    def check_links(self, n: int, model: str) -> None:
        """Reject NVLink faults on links the model lacks (a model without NVLink ignores them)."""
        for i, fault in enumerate(self.faults):
            link = getattr(fault, "link", None)
            if n and link is not None and link >= n:
                raise ScenarioError(
                    f"scenario {self._source}: faults[{i}].link: {link}, but the simulated "
                    f"{model} has {n} NVLink links (0-{n - 1})"
                )


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raise ScenarioError with one line on any problem."""
    path = Path(path)
    data = read_yaml(path, f"scenario {path}", ScenarioError)
    return parse_scenario(data, source=str(path))


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    """Validate already-parsed data (a mapping with `faults`); tests and tools build these."""
    where = f"scenario {source}"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: must be a mapping with a 'faults' list, "
                            f"not {type(data).__name__}")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(f"{where}: {_describe(e)}") from None
    scenario._source = source
    return scenario


def _describe(error: ValidationError) -> str:
    """The first problem, as `key.path: message (got value)`, and how many more there are."""
    errors = error.errors()
    err = errors[0]
    loc = list(err["loc"])
    # A discriminated union puts the kind's tag in the path (faults.2.xid.xid): drop it.
    if len(loc) >= 3 and loc[0] == "faults" and isinstance(loc[1], int) and loc[2] in KINDS:
        del loc[2]
    msg = err["msg"].removeprefix("Value error, ")
    kind = err["type"]
    if kind == "union_tag_invalid":
        loc.append("kind")
        msg = f"unknown fault kind {err['ctx']['tag']!r}; known: {', '.join(KINDS)}"
    elif kind == "union_tag_not_found":
        loc.append("kind")
        msg = f"missing; every fault needs a kind: {', '.join(KINDS)}"
    elif kind == "extra_forbidden" and loc[-1] == "duration":
        msg = "unknown key: this kind happens once, at `at`, and takes no duration"
    elif kind == "extra_forbidden":
        msg = "unknown key" + _suggest(err["loc"])
    elif kind == "missing":
        msg = "required, missing"
    elif kind == "list_type" and loc == ["faults"]:
        msg = "must be a list of faults"
    elif "input" in err and not isinstance(err["input"], dict):
        msg = f"{msg} (got {shown(err['input'])})"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{_path(loc)}: {msg}{more}"


def _path(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _suggest(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = Scenario
    if len(loc) >= 3 and loc[0] == "faults" and loc[2] in KINDS:
        model = KINDS[loc[2]]
    known = [name for name in model.model_fields if name != "kind"]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"

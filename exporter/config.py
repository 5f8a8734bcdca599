"""Configuration: one YAML file, environment variables and flags, validated by pydantic.

Precedence: flags > environment (`GPU_FLEET_EXPORTER_<SECTION>__<KEY>`) > file > defaults.
Every problem becomes a `ConfigError` with one line that names the key and where it came from,
so the command line can print it and exit 2.
"""

from __future__ import annotations

import importlib.util
import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from . import safefiles
from .catalog import COLLECTORS
from .durations import Duration

ENV_PREFIX = "GPU_FLEET_EXPORTER_"
DEFAULT_PORT = 9472
MAX_TOKEN_BYTES = 4096  # a token is a line; a bigger file is something else named by mistake


# The parsed config file, handed to the settings class's sources while `load_settings` runs.
_file_values: ContextVar[dict[str, Any] | None] = ContextVar("file_values", default=None)


class ConfigError(Exception):
    """A bad setting: the message is one line naming the key, the value's origin and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebSettings(_Section):
    listen_address: str = Field(f":{DEFAULT_PORT}", description="host:port to listen on")
    telemetry_path: str = Field("/metrics", description="path that serves the metrics")
    config_file: Path | None = Field(
        None, description="TLS, basic auth and headers in the exporter-toolkit web config format "
        "(flag --web.config.file; docs/security.md)")

    @field_validator("listen_address")
    @classmethod
    def _address(cls, v: str) -> str:
        parse_listen_address(v)
        return v

    @field_validator("telemetry_path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9._~/-]*", v) or v.rstrip("/") in RESERVED_PATHS \
                or v in RESERVED_PATHS or v.startswith(("/probes/", "/admin/")):
            raise ValueError(f"must be an absolute URL path other than {', '.join(RESERVED_PATHS)}")
        return v


# Flags named otherwise than --<section>.<key-with-dashes>: the exporter-toolkit convention.
FLAG_NAMES = {("web", "config_file"): "web.config.file"}

RESERVED_PATHS = ("/", "/healthz", "/readyz", "/health", "/probes", "/probes/run", "/admin/release",
                  "/admin/resume", "/openapi.json")


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug, info, warning or error"
    )
    format: Literal["logfmt", "json"] = Field(
        "logfmt", description="logfmt or json, one line per event"
    )


class CollectionSettings(_Section):
    backend: Literal["auto", "nvml", "amdsmi", "sim"] = Field(
        "auto", description="vendor library to read: auto uses every one that initializes"
    )
    fast_interval: Duration = Field(5.0, gt=0, description="utilization, memory, power, clocks")
    slow_interval: Duration = Field(30.0, gt=0, description="energy, ECC, links, violations")
    call_deadline: Duration = Field(
        2.0, gt=0, description="a field read running longer marks its GPU down"
    )
    max_staleness: Duration | None = Field(
        None, gt=0, description="/readyz fails when data is older; default 3 x fast_interval"
    )

    def staleness_limit(self) -> float:
        return self.max_staleness if self.max_staleness is not None else 3 * self.fast_interval


class SimSettings(_Section):
    gpus: int = Field(8, ge=1, le=64, description="simulated GPUs")
    model: Literal["h100-sxm", "h200-sxm", "a100-sxm", "mi300x"] = Field(
        "h100-sxm", description="h100-sxm, h200-sxm, a100-sxm or mi300x"
    )
    seed: int = Field(1, description="same seed, same telemetry")
    scenario: Path | None = Field(None, description="fault-injection scenario file")


class CostSettings(_Section):
    gpu_hourly_price_dollars: float | None = Field(
        None, ge=0, description="price of one GPU hour, exported for cost panels"
    )


class AdminSettings(_Section):
    token_file: Path | None = Field(
        None, description="file holding the bearer token of POST /admin/*; unset disables them"
    )
    release_timeout: Duration = Field(
        600.0, gt=0, description="after a release, resume by itself after this long"
    )
    release_wait: Duration = Field(
        10.0, gt=0, description="how long a release waits for library calls in flight"
    )

    def token(self) -> str | None:
        """The admin token, read once at start; a configured but unusable file is an error."""
        return read_token(self.token_file, "admin.token_file") if self.token_file else None


def read_token(path: Path, key: str) -> str:
    try:
        token = safefiles.read_text(path, f"{key}: {path}", MAX_TOKEN_BYTES).strip()
    except safefiles.FileRefused as e:
        raise ConfigError(str(e)) from None
    if len(token) < 16:
        raise ConfigError(f"{key}: the token in {path} must be at least 16 characters")
    return token


class EventSettings(_Section):
    kmsg: bool = Field(True, description="follow the kernel log for Xid and bus events")
    kmsg_path: Path = Field(Path("/dev/kmsg"), description="the kernel log device")
    state_dir: Path | None = Field(
        Path("/var/lib/gpu-fleet-exporter"),
        description="where the kernel-log cursor and event counts persist; unset: memory only",
    )


class ProbeIntervals(_Section):
    """How often each probe runs on each GPU. The defaults keep the suite under 0.1 % of a
    GPU's time (docs/probes.md has the arithmetic)."""

    graph_replay: Duration = Field(4 * 3600.0, gt=0, description="graph replay + SDC check")
    pcie_bandwidth: Duration = Field(12 * 3600.0, gt=0, description="pinned H2D/D2H copies")
    memory_bandwidth: Duration = Field(12 * 3600.0, gt=0, description="device memory copy")
    gemm: Duration = Field(24 * 3600.0, gt=0, description="BF16/FP16 matrix products")
    p2p_bandwidth: Duration = Field(24 * 3600.0, gt=0, description="peer copies, every pair")
    ecc_xid_scan: Duration = Field(
        600.0, gt=0, description="new uncorrectable ECC, remap failure, severe Xid (no GPU work)"
    )


class ProbeSettings(_Section):
    enabled: bool = Field(True, description="run the probes on their schedule")
    runtime: Literal["auto", "cuda", "sim"] = Field(
        "auto", description="auto: sim on the simulated node, cuda (CuPy) elsewhere"
    )
    intervals: ProbeIntervals = ProbeIntervals()
    jitter: Duration = Field(
        600.0, ge=0, description="random delay added to each run, so a fleet never probes in step"
    )
    run_at_start: bool = Field(False, description="run every probe once right after start")
    timeout: Duration = Field(120.0, gt=0, description="a probe child is killed after this")
    max_utilization: float = Field(0.05, ge=0, le=1, description="idle gate: utilization ratio")
    max_memory_used_bytes: float = Field(
        2 * 2**30, ge=0, description="idle gate: device memory in use"
    )
    quiet_period: Duration = Field(
        120.0, ge=0, description="idle gate: utilization stayed low this long"
    )
    token_file: Path | None = Field(
        None, description="bearer token of POST /probes/run; unset disables it"
    )
    thresholds_file: Path | None = Field(
        None, description="overrides of the packaged thresholds (same YAML format)"
    )
    cache_dir: Path | None = Field(
        None, description="writable kernel cache of the probe child (default: a temp dir)"
    )
    skip_allocated: bool = Field(
        True, description="idle gate: never probe a GPU the kubelet allocated to a pod")

    @field_validator("thresholds_file")
    @classmethod
    def _thresholds(cls, v: Path | None) -> Path | None:
        # Checked now: a typo found at the first probe run would read as a failing GPU.
        if v is not None:
            data = read_yaml(v, f"thresholds file {v}", ValueError)
            if not isinstance(data, dict) or not set(data) <= {
                    "warn_band", "peer_tolerance", "links", "models", "probes"}:
                raise ValueError(f"thresholds file {v}: must be a mapping with the keys of "
                                 "probes/thresholds.yaml")
        return v

    def token(self) -> str | None:
        return read_token(self.token_file, "probes.token_file") if self.token_file else None


class KubernetesSettings(_Section):
    """Pod attribution through the kubelet's pod-resources API (docs/kubernetes.md)."""

    enabled: Literal["auto"] | bool = Field(
        "auto", description="auto: on when the kubelet's pod-resources socket exists")
    pod_resources_socket: Path = Field(
        Path("/var/lib/kubelet/pod-resources/kubelet.sock"),
        description="the kubelet's pod-resources API socket")
    refresh_interval: Duration = Field(10.0, gt=0, description="how often pods are listed")
    call_timeout: Duration = Field(2.0, gt=0, description="deadline of one kubelet call")
    keep_stale: Duration = Field(
        60.0, ge=0, description="how long the last answer serves while the kubelet does not")
    per_process: bool = Field(
        False, description="attribute GPU memory per pod (needs the host PID namespace and "
        "/var/log/pods, /var/log/containers)")
    log_dir: Path = Field(Path("/var/log"), description="where the kubelet's log directories are")

    def wanted(self) -> bool:
        if self.enabled == "auto":
            return self.pod_resources_socket.exists()
        return bool(self.enabled)

    @field_validator("enabled")
    @classmethod
    def _grpc_present(cls, v: Literal["auto"] | bool) -> Literal["auto"] | bool:
        if v is True and importlib.util.find_spec("grpc") is None:
            raise ValueError("needs grpcio: pip install 'gpu-fleet-exporter[kubernetes]'")
        return v


class HealthSettings(_Section):
    """Thresholds and windows of the health verdict. Each default cites its source
    (docs/health.md has the whole rule set and the reasoning)."""

    gate_readiness: bool = Field(
        False, description="/readyz fails while a GPU's verdict is fail (off: a DaemonSet whose "
        "pods go un-Ready on sick GPUs blocks its own rollouts; DESIGN.md)")
    xid_hold: Duration = Field(
        24 * 3600.0, gt=0, description="a reset- or reboot-class Xid keeps its reason this long "
        "after its last occurrence, unless the node reboots or an operator resumes after a "
        "release for repairs (NVIDIA Xid catalog: the reset or reboot clears the condition)")
    app_xid_window: Duration = Field(
        3600.0, gt=0, description="an application Xid (catalog action restart_app, e.g. 13, 31) "
        "counts towards recurrence within this window")
    app_xid_processes: int = Field(
        3, ge=2, description="distinct processes hitting application Xids on one GPU within the "
        "window before it escalates (NVIDIA Xid catalog: 13/31 repeating on one GPU across "
        "applications point at hardware)")
    app_xid_severity: Literal["warn", "fail"] = Field(
        "warn", description="what a recurring application Xid escalates to (warn: a crash-looping "
        "job also makes new processes; the probes confirm hardware faults)")
    throttle_window: Duration = Field(
        300.0, gt=0, description="HW slowdown, HW thermal or power brake must hold for this share "
        "of this window to count (a single sample never does)")
    throttle_min_fraction: float = Field(
        0.5, gt=0, le=1, description="share of the window spent throttled that counts as "
        "sustained")
    throttle_fail_window: Duration = Field(
        1800.0, gt=0, description="sustained this long, the throttle reason fails the GPU instead "
        "of warning (DCGM's thermal and power health watches report warnings)")
    pcie_busy_utilization: float = Field(
        0.5, ge=0, le=1, description="a PCIe link below its maximum counts only while the GPU is "
        "this busy (nvidia-smi: the current link generation drops when the GPU is not in use)")
    pcie_downtrain_window: Duration = Field(
        60.0, gt=0, description="the link stays below its maximum while busy this long")
    pcie_replay_rate: float = Field(
        8.0, gt=0, description="PCIe replays per minute that warn (DCGM's hardware limit, "
        "DcgmGpuHardwareLimits.h: 8 per minute, the maximum the driver team recommends)")
    pcie_replay_window: Duration = Field(
        300.0, gt=0, description="window the replay rate is averaged over")
    ecc_window: Duration = Field(
        24 * 3600.0, gt=0, description="an increase of uncorrectable ECC errors keeps its reason "
        "this long")


# One boolean per collector of the catalog, so an unknown collector name is a config error.
CollectorSettings: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "CollectorSettings",
    __base__=_Section,
    **{name: (bool, default) for name, default in COLLECTORS.items()},
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    web: WebSettings = WebSettings()
    log: LogSettings = LogSettings()
    collection: CollectionSettings = CollectionSettings()
    collectors: CollectorSettings = CollectorSettings()  # type: ignore[valid-type]
    sim: SimSettings = SimSettings()
    cost: CostSettings = CostSettings()
    admin: AdminSettings = AdminSettings()
    probes: ProbeSettings = ProbeSettings()
    events: EventSettings = EventSettings()
    health: HealthSettings = HealthSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _FileSource(settings_cls, _file_values.get() or {})

    def collector_enabled(self, name: str) -> bool:
        return name == "exporter" or bool(getattr(self.collectors, name, False))


class _FileSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


def read_yaml(path: Path, where: str, error: type[Exception] = ConfigError) -> Any:
    """Load an operator's YAML file safely (exporter/safefiles.py says what that guarantees);
    any problem is one line naming `where` (e.g. "config file /etc/x.yaml") raised as `error`."""
    try:
        return safefiles.read_yaml(path, where)
    except safefiles.FileRefused as e:
        raise error(str(e)) from None


def read_config_file(path: Path) -> dict[str, Any]:
    """The config file as a mapping of sections."""
    data = read_yaml(path, f"config file {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"config file {path}: must be a mapping of sections, not {kind}")
    return data


def load_settings(
    config_file: Path | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> Settings:
    """Build the effective settings; raise ConfigError with one line on any problem.

    `overrides` are the flags, as {section: {key: value}}; the environment is os.environ.
    """
    environ = dict(os.environ)
    file_values = read_config_file(config_file) if config_file else {}
    overrides = {k: v for k, v in (overrides or {}).items() if v}
    _reject_unknown_env(environ)
    token = _file_values.set(file_values)
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(_describe(e, config_file, file_values, overrides, environ)) from None
    finally:
        _file_values.reset(token)


# What Kubernetes injects for a Service named gpu-fleet-exporter* in the pod's namespace
# ("service links"): GPU_FLEET_EXPORTER_SERVICE_HOST, ..._PORT_9472_TCP_ADDR. Not settings.
_SERVICE_LINK = re.compile(r"(?:[A-Z0-9_]*_)?(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?|"
                           r"PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)?)")


def _reject_unknown_env(environ: dict[str, str]) -> None:
    sections = set(Settings.model_fields)
    for key in environ:
        if not key.startswith(ENV_PREFIX):
            continue
        if "__" not in key and _SERVICE_LINK.fullmatch(key[len(ENV_PREFIX):]):
            continue
        section = key[len(ENV_PREFIX):].split("__", 1)[0].lower()
        if section not in sections or "__" not in key[len(ENV_PREFIX):]:
            raise ConfigError(
                f"environment variable {key}: unknown setting; expected "
                f"{ENV_PREFIX}<SECTION>__<KEY> with SECTION one of {', '.join(sorted(sections))}"
            )


def _describe(
    error: ValidationError,
    config_file: Path | None,
    file_values: dict[str, Any],
    overrides: dict[str, dict[str, Any]],
    environ: dict[str, str],
) -> str:
    """One line per problem is too many for a log line: name every key, detail the first."""
    problems = []
    for err in error.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc)
        origin = _origin(loc, config_file, file_values, overrides, environ)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting" + _suggest(loc)
        elif "input" in err and err["type"] not in ("missing",):
            msg = f"{msg} (got {safefiles.shown(err['input'])})"
        problems.append(f"{key}: {msg}{origin}")
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return f"invalid configuration: {problems[0]}{more}"


def _origin(
    loc: list[str],
    config_file: Path | None,
    file_values: dict[str, Any],
    overrides: dict[str, dict[str, Any]],
    environ: dict[str, str],
) -> str:
    if _dig(overrides, loc):
        if tuple(loc) in FLAG_NAMES:
            return f" [from --{FLAG_NAMES[tuple(loc)]}]"
        if loc[0] == "collectors":
            return f" [from --collector.{loc[-1]}]"
        return " [from --" + ".".join([loc[0], *(p.replace("_", "-") for p in loc[1:])]) + "]"
    env_key = ENV_PREFIX + "__".join(p.upper() for p in loc)
    if env_key in environ:
        return f" [from {env_key}]"
    if _dig(file_values, loc) and config_file:
        return f" [from {config_file}]"
    return ""


def _dig(values: dict[str, Any], loc: list[str]) -> bool:
    node: Any = values
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _suggest(loc: list[str]) -> str:
    import difflib

    if len(loc) == 1:
        choices = list(Settings.model_fields)
    else:
        section = Settings.model_fields.get(loc[0])
        model = section.annotation if section else None
        choices = list(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(loc[-1], choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(choices)}"


def parse_listen_address(address: str) -> tuple[str, int]:
    """`:9472`, `0.0.0.0:9472`, `[::]:9472` or `localhost:9472` -> (host, port)."""
    m = re.fullmatch(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]*)):(?P<port>\d{1,5})",
                     address)
    if not m:
        raise ValueError("must be HOST:PORT, :PORT or [IPv6]:PORT")
    port = int(m["port"])
    if port > 65535:
        raise ValueError("port must be between 0 (any free port) and 65535")
    host = m["v6"] or m["host"] or "0.0.0.0"
    return host, port


def setting_fields(model: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    """Every leaf setting of a section as (path, field), nested sections flattened."""
    out = []
    for key, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += setting_fields(sub, (*path, key))
        else:
            out.append(((*path, key), field))
    return out


def effective_yaml(settings: Settings) -> str:
    data = settings.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)

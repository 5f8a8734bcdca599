"""The `gpu-fleet-exporter` command: serve, snapshot, check-config.

Flags follow the Prometheus exporter convention (`--web.listen-address`, `--log.level`,
`--collector.<name>` / `--no-collector.<name>`); every other setting has a flag generated from
the configuration model (`--<section>.<key>`), so a flag can never drift from the file format.

Exit codes: 0 ok, 1 a GPU fails, 2 usage or configuration error, 3 unknown (no GPU, vendor
library missing).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .catalog import COLLECTORS
from .config import (
    FLAG_NAMES,
    ConfigError,
    Settings,
    effective_yaml,
    load_settings,
    setting_fields,
)

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNKNOWN = 0, 1, 2, 3
PROG = "gpu-fleet-exporter"


def _setting_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config.file", dest="config_file", metavar="FILE", type=Path,
                        help="YAML configuration file")
    for section, info in Settings.model_fields.items():
        if section == "collectors":
            continue
        group = parser.add_argument_group(f"{section} settings")
        for path, field in setting_fields(info.annotation, (section,)):
            flag = "--" + ".".join([path[0], *(p.replace("_", "-") for p in path[1:])])
            group.add_argument(
                *(["--" + FLAG_NAMES[path], flag] if path in FLAG_NAMES else [flag]),
                dest="set__" + "__".join(path),
                metavar="VALUE",
                help=f"{field.description or path[-1]} (default: {field.default})",
            )
    group = parser.add_argument_group("collectors")
    for name, default in COLLECTORS.items():
        group.add_argument(
            f"--collector.{name}",
            dest=f"set__collectors__{name}",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"collect the {name} families (default: {'on' if default else 'off'})",
        )


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if dest.startswith("set__") and value is not None:
            *parents, key = dest.split("__")[1:]
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _setting_flags(common)
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", parents=[common], help="run the daemon and serve /metrics")
    snap = sub.add_parser("snapshot", parents=[common],
                          help="collect once and print a table (or JSON with --json)")
    snap.add_argument("--json", action="store_true", help="print JSON for machines")
    probe = sub.add_parser("probe", parents=[common],
                           help="run the probes once: the node admission check (exit code)")
    probe.add_argument("--gpu", type=int, action="append", metavar="INDEX",
                       help="a GPU to probe (repeatable; default all)")
    probe.add_argument("--probe", action="append", metavar="NAME", dest="probe_names",
                       help="a probe to run (repeatable; default all): " + ", ".join(
                           ("graph_replay", "pcie_bandwidth", "memory_bandwidth", "gemm",
                            "p2p_bandwidth")))
    probe.add_argument("--force", action="store_true",
                       help="run on busy GPUs too (skips the idle gate)")
    probe.add_argument("--json", action="store_true", help="print JSON for machines")
    probe.add_argument("--window", type=float, default=10.0, metavar="SECONDS",
                       help="how long ecc_xid_scan watches for new ECC errors and Xids "
                            "(default 10)")
    check = sub.add_parser("check-config", parents=[common],
                           help="validate a config file and print the effective settings")
    check.add_argument("file", type=Path, metavar="FILE")
    return parser


def _fail(message: str, code: int) -> NoReturn:
    print(f"{PROG}: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_file = args.file if args.command == "check-config" else args.config_file
    try:
        settings = load_settings(config_file, _overrides(args))
        if settings.web.config_file is not None and args.command in ("serve", "check-config"):
            from .webconfig import load_web_config

            load_web_config(settings.web.config_file)  # before any backend opens
        if args.command == "check-config":
            _check_scenario(settings)
            sys.stdout.write(effective_yaml(settings))
            return EXIT_OK
        from .logs import configure

        configure(settings.log.level, settings.log.format)
        if args.command == "serve":
            return _serve(settings)
        if args.command == "probe":
            from .probe_cmd import run_probes

            return run_probes(settings, _open(settings), args.gpu, args.probe_names,
                              args.force, args.json, args.window)
        return _snapshot(settings, as_json=args.json)
    except ConfigError as e:
        _fail(str(e), EXIT_USAGE)


def _check_scenario(settings: Settings) -> None:
    """A scenario file is configuration too: check-config validates it (ScenarioError is a
    ConfigError, so a bad one exits 2 like a bad config)."""
    if settings.sim.scenario is not None:
        from .backends.sim import load_scenario

        load_scenario(settings.sim.scenario).check_gpus(settings.sim.gpus)


def _open(settings: Settings) -> Any:
    from .backends import BackendUnavailable, open_backends

    try:
        return open_backends(settings)
    except BackendUnavailable as e:
        _fail(f"{e}; use --collection.backend=auto or sim, or install the vendor library",
              EXIT_UNKNOWN)


def _serve(settings: Settings) -> int:
    from .daemon import Daemon

    Daemon(settings, _open(settings)).serve()
    return EXIT_OK


def _snapshot(settings: Settings, as_json: bool) -> int:
    from .report import print_table, to_json
    from .sampler import Sampler

    opened = _open(settings)
    c = settings.collection
    sampler = Sampler(opened.sources, fast_interval=c.fast_interval,
                      slow_interval=c.slow_interval, call_deadline=c.call_deadline,
                      collector_enabled=settings.collector_enabled)
    sampler.start(schedule=False)
    try:
        view = sampler.run_cycle()
    finally:
        sampler.stop()
        if sampler.calls_in_flight() == 0:
            for backend, _ in opened.sources:
                backend.stop()
    if as_json:
        doc = to_json(view)
        doc["backends_failed"] = opened.failed
        print(json.dumps(doc, indent=2))
    elif view.gpus:
        print_table(view)
    if not view.gpus:
        reasons = "; ".join(f"{n}: {r}" for n, r in opened.failed.items()) or "none found"
        print(f"{PROG}: no GPU to read ({reasons})", file=sys.stderr)
        return EXIT_UNKNOWN
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())

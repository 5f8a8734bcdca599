"""Our NVML readings next to `nvidia-smi -q -x`, GPU by GPU: a table of ours vs theirs.

    python bench/nvml_vs_smi.py [--xml-out FILE]

Both are read within a second of each other on an idle GPU; moving values (utilization, power,
clocks, temperature) may differ by what changed in between. nvidia-smi prints MiB, MHz, W, °C
and percentages; ours are converted back to those units for the table.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from exporter.backends.nvml import NvmlBackend
from exporter.sampler import Sampler

MIB = 2**20
# (what, xpath under <gpu>, family, labels, divide ours by, tolerance in nvidia-smi's unit)
CHECKS = [
    ("GPU utilization %", "utilization/gpu_util", "gpu_utilization_ratio", {}, 0.01, 5),
    ("memory activity %", "utilization/memory_util", "gpu_memory_activity_ratio", {}, 0.01, 5),
    ("memory total MiB", "fb_memory_usage/total", "gpu_memory_total_bytes", {}, MIB, 0),
    # nvidia-smi rounds MiB up: 615.06 MiB from NVML shows as 616.
    ("memory reserved MiB", "fb_memory_usage/reserved", "gpu_memory_reserved_bytes", {}, MIB, 1),
    ("memory used MiB", "fb_memory_usage/used", "gpu_memory_used_bytes", {}, MIB, 2),
    ("memory free MiB", "fb_memory_usage/free", "gpu_memory_free_bytes", {}, MIB, 2),
    ("temperature GPU °C", "temperature/gpu_temp", "gpu_temperature_celsius",
     {"sensor": "gpu"}, 1, 2),
    ("temperature memory °C", "temperature/memory_temp", "gpu_temperature_celsius",
     {"sensor": "memory"}, 1, 2),
    ("power draw W", "gpu_power_readings/average_power_draw", "gpu_power_watts", {}, 1, 15),
    ("power draw W (instant)", "gpu_power_readings/instant_power_draw", "gpu_power_watts", {},
     1, 15),
    ("enforced power limit W", "gpu_power_readings/current_power_limit",
     "gpu_power_limit_watts", {"limit": "enforced"}, 1, 0.5),
    ("default power limit W", "gpu_power_readings/default_power_limit",
     "gpu_power_limit_watts", {"limit": "default"}, 1, 0.5),
    ("graphics clock MHz", "clocks/graphics_clock", "gpu_clock_hertz", {"clock": "graphics"},
     1e6, 50),
    ("SM clock MHz", "clocks/sm_clock", "gpu_clock_hertz", {"clock": "sm"}, 1e6, 50),
    ("memory clock MHz", "clocks/mem_clock", "gpu_clock_hertz", {"clock": "memory"}, 1e6, 0),
    ("video clock MHz", "clocks/video_clock", "gpu_clock_hertz", {"clock": "video"}, 1e6, 50),
    ("max graphics clock MHz", "max_clocks/graphics_clock", "gpu_clock_max_hertz",
     {"clock": "graphics"}, 1e6, 0),
    ("max SM clock MHz", "max_clocks/sm_clock", "gpu_clock_max_hertz", {"clock": "sm"}, 1e6, 0),
    ("max memory clock MHz", "max_clocks/mem_clock", "gpu_clock_max_hertz",
     {"clock": "memory"}, 1e6, 0),
    ("PCIe generation", "pci/pci_gpu_link_info/pcie_gen/current_link_gen",
     "gpu_pcie_link_generation", {}, 1, 0),
    ("PCIe max generation (GPU)", "pci/pci_gpu_link_info/pcie_gen/max_device_link_gen",
     "gpu_pcie_link_max_generation", {}, 1, 0),
    ("PCIe width", "pci/pci_gpu_link_info/link_widths/current_link_width",
     "gpu_pcie_link_width_lanes", {}, 1, 0),
    ("PCIe max width", "pci/pci_gpu_link_info/link_widths/max_link_width",
     "gpu_pcie_link_max_width_lanes", {}, 1, 0),
    ("PCIe replays", "pci/replay_counter", "gpu_pcie_replay_total", {}, 1, 0),
    ("ECC mode", "ecc_mode/current_ecc", "gpu_ecc_mode_enabled", {}, 1, 0),
    ("ECC DRAM corrected (volatile)", "ecc_errors/volatile/dram_correctable",
     "gpu_ecc_errors_total", {"type": "corrected", "scope": "volatile", "location": "dram"}, 1, 0),
    ("ECC DRAM uncorrected (volatile)", "ecc_errors/volatile/dram_uncorrectable",
     "gpu_ecc_errors_total", {"type": "uncorrected", "scope": "volatile", "location": "dram"},
     1, 0),
    ("ECC DRAM corrected (aggregate)", "ecc_errors/aggregate/dram_correctable",
     "gpu_ecc_errors_total", {"type": "corrected", "scope": "aggregate", "location": "dram"},
     1, 0),
    ("remapped rows correctable", "remapped_rows/remapped_row_corr", "gpu_remapped_rows_total",
     {"cause": "correctable"}, 1, 0),
    ("remapped rows uncorrectable", "remapped_rows/remapped_row_unc", "gpu_remapped_rows_total",
     {"cause": "uncorrectable"}, 1, 0),
    ("remap pending", "remapped_rows/remapped_row_pending", "gpu_row_remap_pending", {}, 1, 0),
    ("remap failure", "remapped_rows/remapped_row_failure", "gpu_row_remap_failure", {}, 1, 0),
    ("ECC SRAM corrected (volatile)", "ecc_errors/volatile/sram_correctable",
     "gpu_ecc_errors_total", {"type": "corrected", "scope": "volatile", "location": "sram"},
     1, 0),
    ("SRAM threshold exceeded", "ecc_errors/aggregate/sram_threshold_exceeded",
     "gpu_sram_ecc_threshold_exceeded", {}, 1, 0),
] + [
    (f"remap banks {a}", f"remapped_rows/row_remapper_histogram/row_remapper_histogram_{a}",
     "gpu_row_remap_banks", {"availability": a}, 1, 0)
    for a in ("max", "high", "partial", "low", "none")
] + [
    ("persistence mode", "persistence_mode", "gpu_persistence_mode_enabled", {}, 1, 0),
    ("MIG mode", "mig_mode/current_mig", "gpu_mig_mode_enabled", {}, 1, 0),
    ("performance state", "performance_state", "gpu_performance_state", {}, 1, 0),
    ("processes", "processes", "gpu_processes", {}, 1, 0),
] + [
    (f"clock event {reason}", f"clocks_event_reasons/clocks_event_reason_{smi}",
     "gpu_clock_event_active", {"reason": reason}, 1, 0)
    for reason, smi in [("gpu_idle", "gpu_idle"),
                        ("applications_clocks_setting", "applications_clocks_setting"),
                        ("sw_power_cap", "sw_power_cap"), ("hw_slowdown", "hw_slowdown"),
                        ("hw_thermal_slowdown", "hw_thermal_slowdown"),
                        ("hw_power_brake_slowdown", "hw_power_brake_slowdown"),
                        ("sync_boost", "sync_boost"),
                        ("sw_thermal_slowdown", "sw_thermal_slowdown"),
                        ("display_clock_setting", "display_clocks_setting")]
]

_WORDS = {"enabled": 1, "disabled": 0, "active": 1, "not active": 0, "yes": 1, "no": 0,
          "enable": 1, "disable": 0}


# nvidia-smi (R580) prints thresholds as offsets from T.Limit, and T.Limit as the margin left
# from the current temperature: absolute threshold = gpu_temp + gpu_temp_tlimit - offset.
TLIMIT_THRESHOLDS = {"shutdown": "gpu_temp_max_tlimit_threshold",
                     "slowdown": "gpu_temp_slow_tlimit_threshold",
                     "max_operating": "gpu_temp_max_gpu_tlimit_threshold"}


# The node checklist: values nvidia-smi prints in words or spreads over several elements.
COMPUTE_MODES = {"default": 0, "exclusive_thread": 1, "prohibited": 2, "exclusive_process": 3}


def checklist_smi(node: ET.Element, bus_id: str) -> dict[str, tuple[str, float | None]]:
    """family -> (nvidia-smi's text, its value in our terms)."""
    mode = (node.findtext("compute_mode") or "").strip()
    app = [node.findtext(f"applications_clocks/{c}") for c in ("graphics_clock", "mem_clock")]
    default = [node.findtext(f"default_applications_clocks/{c}")
               for c in ("graphics_clock", "mem_clock")]
    locked = None if None in app + default else float(app != default)
    # nvidia-smi -q does not print the NUMA node; the kernel's sysfs entry is the reference.
    domain, _, rest = bus_id.lower().partition(":")
    try:
        numa = float(Path(f"/sys/bus/pci/devices/{domain[-4:]}:{rest}/numa_node").read_text())
    except (OSError, ValueError):
        numa = None
    if numa is not None and numa < 0:
        numa = None  # -1: the kernel knows no NUMA node for the device (ours is absent too)
    return {
        "gpu_compute_mode": (mode, COMPUTE_MODES.get(mode.lower())),
        "gpu_applications_clocks_locked": (f"app {app} vs default {default}", locked),
        "gpu_numa_node": ("sysfs numa_node", numa),
    }


def tlimit_threshold(node: ET.Element, tag: str) -> float | None:
    values = [smi_number(node.findtext(f"temperature/{t}"), t, node)
              for t in ("gpu_temp", "gpu_temp_tlimit", tag)]
    if any(v is None for v in values):
        return None
    temp, margin, offset = values
    return temp + margin - offset


def smi_number(text: str | None, xpath: str, node: ET.Element) -> float | None:
    if xpath == "processes":
        return float(len(node.findall("processes/process_info")))
    if text is None:
        return None
    t = text.strip().lower()
    if t in _WORDS:
        return float(_WORDS[t])
    if m := re.fullmatch(r"p(\d+)", t):
        return float(m.group(1))
    if m := re.match(r"-?\d+(\.\d+)?", t):
        return float(m.group(0))
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xml-out")
    args = ap.parse_args()
    backend = NvmlBackend()
    backend.start()
    sampler = Sampler([(backend, backend.devices())], fast_interval=60, slow_interval=60,
                      call_deadline=5)
    sampler.start(schedule=False)
    view = sampler.run_cycle()
    xml = subprocess.run(["nvidia-smi", "-q", "-x"], capture_output=True, text=True,
                         check=True).stdout
    sampler.stop()
    backend.stop()
    if args.xml_out:
        with open(args.xml_out, "w") as f:
            f.write(xml)
    root = ET.fromstring(xml)
    print(f"driver {root.findtext('driver_version')}, CUDA {root.findtext('cuda_version')}, "
          f"{time.strftime('%Y-%m-%d')}\n")
    smi_gpus = root.findall("gpu")
    matches = total = 0
    for gpu, node in zip(view.gpus, smi_gpus, strict=False):
        print(f"GPU {gpu.index} {node.findtext('product_name')} ({gpu.uuid})\n")
        print("| value | ours | nvidia-smi | agree |")
        print("|---|---|---|---|")
        for what, xpath, family, labels, scale, tol in CHECKS:
            ours = next((s.value / scale for s in gpu.samples if s.family == family
                         and set(labels.items()) <= set(s.labels)), None)
            text = node.findtext(xpath)
            theirs = smi_number(text, xpath, node)
            if ours is None and theirs is None:
                verdict = "both absent"
            elif ours is None or theirs is None:
                verdict = "ONE SIDE ONLY"
            else:
                ok = abs(ours - theirs) <= tol
                verdict = "yes" if ok else f"NO (Δ {ours - theirs:+.2f})"
                matches += ok
                total += 1
            shown = "absent" if ours is None else f"{ours:.6g}"
            print(f"| {what} | {shown} | {(text or 'absent').strip()} | {verdict} |")
        bus_id = next((dict(s.labels).get("pci_bus_id", "") for s in gpu.samples
                       if s.family == "gpu_info"), "")
        for family, (text, theirs) in checklist_smi(node, bus_id).items():
            ours = next((s.value for s in gpu.samples if s.family == family), None)
            if ours is None and theirs is None:
                print(f"| {family} | absent | {text}: absent | both absent |")
                continue
            ok = ours == theirs
            matches += ok
            total += 1
            print(f"| {family} | {ours} | {text}: {theirs} | {'yes' if ok else 'NO'} |")
        for threshold, tag in TLIMIT_THRESHOLDS.items():
            ours = next((s.value for s in gpu.samples
                         if s.family == "gpu_temperature_threshold_celsius"
                         and ("threshold", threshold) in s.labels), None)
            theirs = tlimit_threshold(node, tag)
            ok = ours is not None and theirs is not None and abs(ours - theirs) <= 1
            matches += ok
            total += 1
            print(f"| {threshold} threshold °C (T.Limit − offset) | {ours} | {theirs} | "
                  f"{'yes' if ok else 'NO'} |")
        print()
    print(f"{matches}/{total} values agree within tolerance.")


if __name__ == "__main__":
    main()

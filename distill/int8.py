"""int8 on CPUs: which kernel path a CPU takes in ONNX Runtime, what each quantisation target
asks for, and whether a model quantised for one target is safe on the CPU at hand.

Why it matters. Dynamic quantisation multiplies uint8 activations by int8 weights. ONNX
Runtime's x86 kernels (MLAS) take one of two routes for those u8 x s8 products:

  vnni          VPDPBUSD (AVX512-VNNI, or AVX-VNNI on client parts) adds four u8 x s8 products
                straight into int32: nothing can overflow.
  avx2, avx512  without VNNI, VPMADDUBSW adds PAIRS of u8 x s8 products into int16 first, and
                saturates when a pair passes 32767 (255 x 127 x 2 = 64770 can), before VPMADDWD
                widens to int32. SSE4.1 does the same with PMADDUBSW.

So a full-range u8 x s8 model (optimum's ``avx512_vnni`` configuration, this project's export
before 2026-12) that validates on a VNNI machine can lose accuracy on an AVX2-only one: an
untrained test model flipped 46 of 64 labels there (docs/RESULTS.md). The targets:

  portable  int8 weights in 7 bits (``reduce_range``: w in [-64, 64], so 255 x 64 x 2 = 32640
            fits int16): the same fast u8 x s8 kernels, no saturation on any path. The default.
  vnni      int8 weights in 8 bits: twice the weight resolution, free of saturation only on VNNI
            CPUs (and ARM64); on AVX2 / AVX-512 without VNNI it saturates. For users who know their
            serving CPU.
  u8u8      uint8 weights (optimum's ``avx2`` configuration): MLAS widens u8 x u8 to int16
            before multiplying, so nothing saturates on any path; the u8 x u8 kernels' speed.

The figures behind the default are in docs/RESULTS.md ("int8 on every CPU"). This module is
stdlib-only: bench and predict import it before torch and onnxruntime.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

QUANTIZATION_FILE = "quantization.json"  # beside an int8 variant's model.onnx: its target and where it was validated
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Int8Target:
    """One way of quantising the weights, and the kernel paths where its integer sums cannot overflow."""

    name: str
    weights: str  # "int8" or "uint8": the weight tensors' type (activations are always uint8)
    reduce_range: bool  # 7-bit weights (w in [-64, 64])
    saturation_free_on: tuple[str, ...]  # kernel paths (``kernel_path``) whose int16 pair sums cannot overflow
    summary: str  # one line for validation.json, bench.md and warnings


ALL_PATHS = ("avx512_vnni", "avx_vnni", "avx512", "avx2", "sse", "arm64", "other")
TARGETS = {
    "portable": Int8Target("portable", "int8", True, ALL_PATHS,
                           "u8 x s8 with 7-bit weights: no int16 saturation on any x86 path"),
    "vnni": Int8Target("vnni", "int8", False, ("avx512_vnni", "avx_vnni", "arm64"),
                       "u8 x s8 with 8-bit weights: no saturation on VNNI CPUs and ARM64; saturates on AVX2 "
                       "and AVX-512 without VNNI"),
    "u8u8": Int8Target("u8u8", "uint8", False, ALL_PATHS,
                       "u8 x u8: no saturation on any path (MLAS's u8 x u8 kernels)"),
}
DEFAULT_TARGET = "portable"


@dataclass(frozen=True)
class Int8Gate:
    """The bounds an int8 graph is held to against PyTorch fp32 on the dev rows (the export's
    checks and the teacher's int8 scorer both use them; ExportConfig exposes each as an option)."""

    # a row is decided when PyTorch's top-1 logit beats its top-2 by this much: int8 may flip the rest
    decided_margin: float = 1.0
    # share of the decided rows whose label int8 must keep
    min_decided_agreement: float = 0.99
    # RMS of the centred logit error over RMS of the centred fp32 logits (a sound int8: 0.05-0.13 measured)
    max_logit_error: float = 0.25
    # |accuracy(int8) - accuracy(fp32)|, a fraction (0.01 = 1 point)
    max_accuracy_delta: float = 0.01


GATE = Int8Gate()


def target(name: str) -> Int8Target:
    if name not in TARGETS:
        from distill.config import ConfigError

        raise ConfigError(f"--int8_target={name!r}: choose one of {', '.join(TARGETS)}")
    return TARGETS[name]


# ---------------------------------------------------------------------------------------------
# the CPU at hand


def cpu_flags(cpuinfo: str) -> tuple[str, set[str]]:
    """(model name, flags) of the first processor block of /proc/cpuinfo text (x86 "flags",
    ARM "Features")."""
    model, flags = "unknown", set()
    for line in cpuinfo.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model name", "Hardware") and model == "unknown":
            model = value.strip()
        elif key in ("flags", "Features"):
            flags = set(value.split())
    return model, flags


def kernel_path(flags: set[str], machine: str) -> str:
    """The int8 GEMM path ONNX Runtime's MLAS takes on a CPU with these flags: avx512_vnni,
    avx_vnni, avx512 (AVX-512 BW without VNNI), avx2, sse, arm64 or other."""
    if machine.lower() in ("aarch64", "arm64"):
        return "arm64"
    if machine.lower() not in ("x86_64", "amd64", "i686", "x86"):
        return "other"
    if "avx512_vnni" in flags and "avx512bw" in flags:
        return "avx512_vnni"
    if "avx_vnni" in flags:
        return "avx_vnni"
    if "avx512bw" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "sse"


INT8_FLAGS = ("sse4_1", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimd",
              "asimddp", "i8mm")


def machine_facts(cpuinfo: str | None = None, machine: str | None = None) -> dict:
    """What an int8 figure depends on: CPU model, the int8-relevant flags, the kernel path.
    Reads /proc/cpuinfo and platform.machine() unless given (tests pass text)."""
    if cpuinfo is None:
        cpuinfo = CPUINFO.read_text() if CPUINFO.is_file() else ""
    machine = machine or platform.machine()
    model, flags = cpu_flags(cpuinfo)
    return {"cpu_model": model, "machine": machine, "int8_flags": [f for f in INT8_FLAGS if f in flags],
            "kernel_path": kernel_path(flags, machine)}


# ---------------------------------------------------------------------------------------------
# an exported int8 model and the machine it runs on


def write_quantization(variant_dir: Path, *, target_name: str, per_channel: bool, operators: list[str],
                       exclude: list[str], facts: dict) -> None:
    """``quantization.json`` beside an int8 model: how it was quantised and the machine that made
    (and validates) it."""
    from distill.config import atomic_write_text

    record = {**asdict(target(target_name)), "per_channel": per_channel, "operators": list(operators),
              "excluded_nodes": list(exclude), "validated_on": facts}
    atomic_write_text(Path(variant_dir) / QUANTIZATION_FILE, json.dumps(record, indent=2) + "\n")


def read_quantization(variant_dir: Path) -> dict | None:
    """The int8 record of a variant folder; None when it has none (not int8, or an export from
    before the record existed)."""
    path = Path(variant_dir) / QUANTIZATION_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def mismatch_warning(record: dict | None, facts: dict) -> str | None:
    """A line saying why this machine's int8 figures may differ from the ones validated, or None.

    Two cases: the model's target can saturate on this kernel path (a vnni model on AVX2: labels
    can change, accuracy drop); or it cannot saturate here but was validated on another path (numbers
    equal up to rounding; said so that a figure is not read as this machine's)."""
    if record is None:
        return None
    here, there = facts["kernel_path"], record["validated_on"]["kernel_path"]
    if here not in record["saturation_free_on"]:
        return (f"int8 model quantised for target {record['name']!r} ({record['summary']}); this CPU takes the "
                f"{here} path, where its products can saturate: accuracy may be below the validated figure "
                f"(validated on {there}); re-export with --int8_target=portable for this machine")
    if here != there:
        return (f"int8 model validated on the {there} kernel path ({record['validated_on']['cpu_model']}); "
                f"this CPU takes the {here} path (its target {record['name']!r} cannot saturate on either)")
    return None

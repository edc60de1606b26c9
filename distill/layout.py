"""Where every artefact of a run lives: one module, so no stage rebuilds a path or copies a name.

    <run>/teacher/                       the fine-tuned teacher (``make teacher``)
    <run>/teacher/logits/<name>.npy      its cached soft logits per split or transfer set
    <run>/student/, <run>/student_ce/    the KD student and its CE-only control (``make distill``)
    <run>/onnx/validation.json           the export's summary over every model
    <run>/onnx/<model>/validation.json   one model's checks and figures (read with ``read_validation``)
    <run>/onnx/<model>/<variant>/model.onnx   variant: fp32 | o2 | int8
    <run>/bench/bench.json, bench.md, bench.png   the benchmark (``make bench``)
    <run>/report.md                      the run's report (``make report``)

``bench.json`` names its rows by runtime and precision (``pytorch_fp32``, ``ort_fp32``,
``ort_fp32_o2``, ``ort_int8``); ``BENCH_VARIANT`` maps an export folder to that name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# ---------------------------------------------------------------- stage directories
TEACHER, STUDENT, STUDENT_CE = "teacher", "student", "student_ce"  # the model folders of a run
ROLES = (TEACHER, STUDENT, STUDENT_CE)
LOGITS = "logits"  # the teacher's cache folder
ONNX = "onnx"  # the export's folder in a run
ONNX_FILE = "model.onnx"
VALIDATION_FILE = "validation.json"
METRICS_FILE = "metrics.json"
TRAIN_CONFIG_FILE = "train_config.json"  # the config a model was trained with (distill/trainer.py save_model_dir)
MODEL_INFO = "distill.json"  # every model folder's facts (distill/artifacts.py)
BENCH = "bench"  # the benchmark's folder in a run
REPORT_FILE = "report.md"
COMPARE_SETTINGS_FILE = "settings.json"  # what compare's finished arm-seeds were trained with (experiments/compare.py)


def stage_dir(run_dir: str | Path, model: str) -> Path:
    """``<run>/<model>``: a stage's model folder (teacher, student, student_ce, ...)."""
    return Path(run_dir) / model


def teacher_dir(run_dir: str | Path) -> Path:
    return stage_dir(run_dir, TEACHER)


def student_dir(run_dir: str | Path) -> Path:
    return stage_dir(run_dir, STUDENT)


def student_ce_dir(run_dir: str | Path) -> Path:
    return stage_dir(run_dir, STUDENT_CE)


def logits_dir(teacher: str | Path) -> Path:
    """``<teacher>/logits``: the cached soft logits of a teacher folder."""
    return Path(teacher) / LOGITS


# ---------------------------------------------------------------- ONNX export
FP32, O2, INT8 = "fp32", "o2", "int8"
VARIANTS = (FP32, O2, INT8)  # the export's variant folders
LM_EXPORT_VARIANTS = (FP32, INT8)  # a causal LM's export folders (no O2 pass)

# bench.json's variant names
BENCH_PYTORCH, BENCH_FP32, BENCH_O2, BENCH_INT8 = "pytorch_fp32", "ort_fp32", "ort_fp32_o2", "ort_int8"
BENCH_VARIANT = {None: BENCH_PYTORCH, FP32: BENCH_FP32, O2: BENCH_O2, INT8: BENCH_INT8}  # folder (None: PyTorch) -> name
REFERENCE = BENCH_PYTORCH  # validation.json's key for the PyTorch fp32 figures


def onnx_root(run_dir: str | Path) -> Path:
    """``<run>/onnx``."""
    return Path(run_dir) / ONNX


def onnx_model_dir(run_dir: str | Path, model: str) -> Path:
    """``<run>/onnx/<model>``: one model's export (its variants and validation.json)."""
    return onnx_root(run_dir) / model


def onnx_variant_dir(run_dir: str | Path, model: str, variant: str) -> Path:
    """``<run>/onnx/<model>/<variant>``."""
    return onnx_model_dir(run_dir, model) / variant


def onnx_file(run_dir: str | Path, model: str, variant: str) -> Path:
    """``<run>/onnx/<model>/<variant>/model.onnx``."""
    return onnx_variant_dir(run_dir, model, variant) / ONNX_FILE


def validation_path(run_dir: str | Path, model: str | None = None) -> Path:
    """``<run>/onnx/<model>/validation.json``, or the run's summary ``<run>/onnx/validation.json``."""
    return (onnx_root(run_dir) if model is None else onnx_model_dir(run_dir, model)) / VALIDATION_FILE


def bench_dir(run_dir: str | Path) -> Path:
    """``<run>/bench``: bench.json, bench.md, bench.png."""
    return Path(run_dir) / BENCH


def bench_json(run_dir: str | Path) -> Path:
    return bench_dir(run_dir) / "bench.json"


# ---------------------------------------------------------------- validation.json
@dataclass(frozen=True)
class Validation:
    """One model's ``validation.json`` as the export wrote it."""

    reference: dict  # the PyTorch fp32 figures on the dev split (key "pytorch_fp32")
    variants: dict  # variant -> {"figures": ..., "checks": [...], "quantization": ... (int8)}
    max_length: int | None  # the length the export was validated at (None: an export from before it was recorded)
    raw: dict  # the whole file

    def figures(self, variant: str | None) -> dict:
        """A variant's dev figures; ``None``: the PyTorch fp32 reference."""
        return self.reference if variant is None else self.variants[variant]["figures"]

    def figure(self, variant: str | None, key: str) -> float:
        return self.figures(variant)[key]


def parse_validation(report: dict) -> Validation:
    return Validation(reference=report[REFERENCE], variants=report["variants"], max_length=report.get("max_length"),
                      raw=report)


def read_validation(path: str | Path) -> Validation:
    """``path``: a validation.json, or an ``onnx/<model>`` folder holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / VALIDATION_FILE
    return parse_validation(json.loads(path.read_text()))

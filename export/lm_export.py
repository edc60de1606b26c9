"""ONNX export of causal LMs (task lm) with their key/value cache, validated on held-out text.

    python -m distill export --run-dir RUN        (distill/__main__.py picks this module for an lm run)

For each of teacher, student, student_ce that exists, writes

    onnx/<model>/fp32/model.onnx   optimum's causal-LM export with past key/values (task text-generation-with-past)
    onnx/<model>/int8/model.onnx   dynamic int8 quantisation of it (export/onnx_export.py's quantise_int8)
    onnx/<model>/validation.json   the checks and figures
    onnx/<model>/<variant>/README.md  the variant's model card (distill/lm_card.py)

with config.json, generation_config.json and the tokenizer beside each, so that
``ORTModelForCausalLM.from_pretrained(dir)`` loads a variant. A model is built and checked in
``onnx/.<model>.staging-*`` and renamed into place only when every check passes (otherwise
``onnx/<model>.failed``), as for the classifiers. There is no O2 variant: ORT's transformer fusions
are BERT-shaped (ORTOptimizer's llama support was not tried here).

Checks on ``validate_blocks`` held-out blocks (their first ``prefix_tokens`` + ``step_tokens`` tokens):

  loads_with_optimum  ORTModelForCausalLM.from_pretrained(dir), with past key/values inputs
  full_max_abs_diff   fp32: max |logit_onnx − logit_torch| over every position of the full forward
  cached_max_abs_diff fp32: the prefix in one call, then ``step_tokens`` calls of one token each
                      feeding back the returned key/values: max |Δlogit| against PyTorch's full
                      forward at those positions (the KV cache computes what the full pass does)
  agreement           share of positions whose argmax is PyTorch's (fp32: all; int8: the bound)
  perplexity_ratio    int8: its held-out perplexity over fp32's, at most ``int8_max_ppl_ratio``
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.artifacts import MODEL_INFO, read_model_info
from distill.config import apply_overrides, atomic_write_text
from distill.layout import FP32, INT8, LM_EXPORT_VARIANTS, REFERENCE, VALIDATION_FILE, stage_dir
from distill.layout import onnx_root as run_onnx_root
from distill.lm_card import write_lm_card
from distill.lock import stage_lock
from export.onnx_export import (
    DEFAULT_MODELS,
    ONNX_FILE,
    Check,
    ExportValidationError,
    _install,
    _move_aside,
    print_report,
    quantise_int8,
    versions,
)

TASK = "text-generation-with-past"


@dataclass
class LMExportConfig:
    """Flat export settings for causal LMs; every field can be overridden as --key=value."""

    models: list[str] = field(default_factory=list)  # model directories; empty: teacher, student, student_ce present
    opset: int = 18  # ONNX opset
    validate_blocks: int = 4  # held-out blocks the checks run on
    prefix_tokens: int = 48  # tokens of each block given at once (the prompt)
    step_tokens: int = 16  # tokens then fed one at a time through the KV cache
    threads: int = 0  # ONNX Runtime threads in validation (0: its default)
    fp32_max_abs_diff: float = 1e-3  # fp32 logits against PyTorch (49k-wide logits of a 30-block model)
    fp32_min_agreement: float = 1.0  # fp32: every argmax as PyTorch's
    # int8: share of positions with PyTorch's argmax. First set to 0.8 unmeasured; SmolLM2 int8 (the default
    # exclusions) measured 0.797 on 128 held-out positions at a perplexity 1.025 x fp32's: near-ties of a
    # 49k-way next-token distribution flip, so the perplexity ratio is the bound that protects the user
    int8_min_agreement: float = 0.75
    int8_max_ppl_ratio: float = 1.1  # int8: held-out perplexity at most this times fp32's
    # int8 settings read by export/onnx_export.py's quantise_int8 (same meaning as ExportConfig's)
    int8_per_channel: bool = True  # one weight scale per output channel
    # how weights are quantised for the CPUs that will serve the model (distill/int8.py): portable (7-bit,
    # no saturation on any x86 path) | vnni (8-bit, VNNI CPUs only) | u8u8 (8-bit unsigned, no saturation on any
    # path). u8u8, not the classifiers' portable: SmolLM2's held-out perplexity (the default exclusions, 128
    # positions, AVX2 AMD EPYC) was 1.126 x fp32 with 7-bit weights, refused by the bound below, and 1.099 x with
    # u8u8 (vnni's 8-bit s8: 1.025 x on a VNNI Xeon, where it cannot saturate; docs/RESULTS.md)
    int8_target: str = "u8u8"
    int8_operators: list[str] = field(default_factory=lambda: ["MatMul"])  # op types quantised
    # regex of node names kept in fp32: all but the q/k/v/o/gate/up projections (llama names). Quantising
    # every MatMul (and the embedding Gather) took SmolLM2's held-out perplexity to 1.95 x fp32 with 51 %
    # argmax agreement; keeping the FFN down projections (outlier activations), the attention products and
    # lm_head in fp32 gave 1.03 x and 81 % on the same tokens (docs/RESULTS.md, 2026-12-02)
    int8_exclude: str = r"^(?!.*(q|k|v|o|gate|up)_proj/MatMul$)"


def heldout_tokens(model_dir: Path, cfg: LMExportConfig) -> np.ndarray:
    """(n, prefix + step) int64: the first tokens of the first held-out blocks of the teacher's store."""
    from transformers import AutoTokenizer

    from distill.lm_data import load_lm_data

    info = read_model_info(model_dir)
    teacher_dir = Path(info.architecture.get("teacher", model_dir))
    data = load_lm_data(info.data, AutoTokenizer.from_pretrained(model_dir), teacher_dir / "tokens")
    width = cfg.prefix_tokens + cfg.step_tokens
    if data.heldout.blocks.shape[1] < width:
        raise ValueError(f"--prefix_tokens + --step_tokens = {width} exceed the block length {data.heldout.blocks.shape[1]}")
    return np.asarray(data.heldout.blocks[: cfg.validate_blocks, :width], dtype=np.int64)


def torch_logits(model_dir: Path, tokens: np.ndarray) -> np.ndarray:
    """(n, T, V) float32 logits of the PyTorch model's full forward."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return np.stack([model(input_ids=torch.from_numpy(row[None])).logits[0].numpy() for row in tokens])


def ort_logits(variant_dir: Path, tokens: np.ndarray, prefix: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """(full (n, T, V), cached (n, T - prefix, V)): one full forward, and the prefix then one token
    at a time through the returned key/values."""
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    model = ORTModelForCausalLM.from_pretrained(variant_dir, session_options=options, use_cache=True)
    full, cached = [], []
    for row in tokens:
        ids = torch.from_numpy(row[None])
        full.append(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].numpy())
        out = model(input_ids=ids[:, :prefix], attention_mask=torch.ones_like(ids[:, :prefix]))
        steps = [out.logits[0, -1].numpy()]  # predicts token `prefix`
        for t in range(prefix, len(row) - 1):
            out = model(input_ids=ids[:, t:t + 1], attention_mask=torch.ones_like(ids[:, :t + 1]),
                        past_key_values=out.past_key_values)
            steps.append(out.logits[0, -1].numpy())
        cached.append(np.stack(steps))
    return np.stack(full), np.stack(cached)


def _perplexity(logits: np.ndarray, tokens: np.ndarray) -> float:
    """exp of the mean next-token NLL; logits (n, T, V), tokens (n, T)."""
    z = logits[:, :-1].astype(np.float64)
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    picked = np.take_along_axis(z, tokens[:, 1:, None], axis=-1)[..., 0]
    return float(np.exp((lse - picked).mean()))


def validate(variant: str, variant_dir: Path, reference: np.ndarray, tokens: np.ndarray, cfg: LMExportConfig,
             fp32_ppl: float | None) -> tuple[list[Check], dict]:
    """The checks of one variant (see the module docstring); an exception fails the check it hit."""
    checks: list[Check] = []
    figures: dict = {}
    try:
        full, cached = ort_logits(variant_dir, tokens, cfg.prefix_tokens, cfg.threads)
    except Exception as err:  # recorded as a failure with its traceback, and raised at the end
        return [Check("loads_with_optimum", False, None, None, f"{type(err).__name__}: {err}\n{traceback.format_exc()}")], {}
    checks.append(Check("loads_with_optimum", True, None, None, "ORTModelForCausalLM with past key/values"))
    ref_steps = reference[:, cfg.prefix_tokens - 1:-1]  # (n, step, V) the positions the cached calls predict
    agreement = float((full.argmax(-1) == reference.argmax(-1)).mean())
    figures.update(full_max_abs_diff=float(np.abs(full - reference).max()),
                   cached_max_abs_diff=float(np.abs(cached - ref_steps).max()), agreement=agreement,
                   cached_agreement=float((cached.argmax(-1) == ref_steps.argmax(-1)).mean()),
                   perplexity=_perplexity(full, tokens), positions=int(full.shape[0] * full.shape[1]))
    if variant == FP32:
        for name in ("full_max_abs_diff", "cached_max_abs_diff"):
            checks.append(Check(name, figures[name] <= cfg.fp32_max_abs_diff, figures[name], cfg.fp32_max_abs_diff, ""))
        checks.append(Check("agreement", agreement >= cfg.fp32_min_agreement, agreement, cfg.fp32_min_agreement, ""))
    else:
        ratio = figures["perplexity"] / fp32_ppl
        figures["perplexity_ratio"] = ratio
        checks.append(Check("agreement", agreement >= cfg.int8_min_agreement, agreement, cfg.int8_min_agreement, ""))
        checks.append(Check("perplexity_ratio", ratio <= cfg.int8_max_ppl_ratio, ratio, cfg.int8_max_ppl_ratio,
                            f"int8 {figures['perplexity']:.3f} vs fp32 {fp32_ppl:.3f}"))
    return checks, figures


def export_lm_model(model: str, model_dir: Path, onnx_root: Path, cfg: LMExportConfig) -> tuple[dict, list[str]]:
    """Build, validate and install one causal LM's variants."""
    from optimum.exporters.onnx import main_export

    tokens = heldout_tokens(model_dir, cfg)
    t0 = time.perf_counter()
    reference = torch_logits(model_dir, tokens)
    report: dict = {"model_dir": str(model_dir), "task": "lm", "validation_tokens": tokens.shape,
                    "check_tokens": {"prefix": cfg.prefix_tokens, "step": cfg.step_tokens},
                    REFERENCE: {"perplexity": _perplexity(reference, tokens)}, "variants": {},
                    "timings_s": {"pytorch": round(time.perf_counter() - t0, 2)}}
    onnx_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model}.staging-", dir=onnx_root))
    failures: list[str] = []
    try:
        for variant in LM_EXPORT_VARIANTS:
            t0 = time.perf_counter()
            if variant == FP32:
                main_export(str(model_dir), output=staging / FP32, task=TASK, opset=cfg.opset, device="cpu",
                            library_name="transformers", local_files_only=True, do_validation=False)
            else:
                quantise_int8(staging / FP32, staging / INT8, cfg)
                for extra in ("generation_config.json",):  # ORTQuantizer copies config and tokenizer only
                    if (staging / FP32 / extra).exists():
                        shutil.copy2(staging / FP32 / extra, staging / INT8 / extra)
            shutil.copy2(model_dir / MODEL_INFO, staging / variant / MODEL_INFO)
            report["timings_s"][f"build_{variant}"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            fp32_ppl = report["variants"].get(FP32, {}).get("figures", {}).get("perplexity")
            checks, figures = validate(variant, staging / variant, reference, tokens, cfg, fp32_ppl)
            report["timings_s"][f"validate_{variant}"] = round(time.perf_counter() - t0, 2)
            print_report(model, variant, checks)
            report["variants"][variant] = {"figures": figures, "checks": [dataclasses.asdict(c) for c in checks],
                                           "file_mb": round((staging / variant / ONNX_FILE).stat().st_size / 1e6, 1)}
            failures += [f"{model}/{variant} {c.name}: {c.figure} (bound {c.threshold})" for c in checks if not c.passed]
    except BaseException:
        _move_aside(staging, onnx_root / f"{model}.failed")
        raise
    report["passed"], report["failures"] = not failures, failures
    target = onnx_root / (model if not failures else f"{model}.failed")
    report["location"], report["installed"] = str(target), not failures
    atomic_write_text(staging / VALIDATION_FILE, json.dumps(report, indent=2, default=str) + "\n")
    for variant in report["variants"]:  # each variant's card, from the report just written
        write_lm_card(staging / variant)
    if failures:
        _move_aside(staging, target)
        print(f"{model}: FAILED validation, kept at {target}")
    else:
        _install(staging, target)
        print(f"{model}: all checks passed, installed at {target}")
    return report, failures


def run_lm_export(run_dir: Path, overrides: list[str]) -> dict:
    cfg = apply_overrides(LMExportConfig(), overrides)
    models = cfg.models or [m for m in DEFAULT_MODELS if (stage_dir(run_dir, m) / "config.json").is_file()]
    onnx_root = run_onnx_root(run_dir)
    report: dict = {"run_dir": str(run_dir), "date": _dt.datetime.now().isoformat(timespec="seconds"),
                    "versions": versions(), "config": dataclasses.asdict(cfg), "models": {}}
    failures: list[str] = []
    path = onnx_root / VALIDATION_FILE
    with stage_lock(onnx_root):  # one export per run: two would swap the same folders in and out
        for model in models:
            report["models"][model], failed = export_lm_model(model, stage_dir(run_dir, model), onnx_root, cfg)
            failures += failed
        report["passed"], report["failures"] = not failures, failures
        atomic_write_text(path, json.dumps(report, indent=2, default=str) + "\n")
    print(f"report: {path}")
    if failures:
        raise ExportValidationError(failures, path)
    return report


def main(argv: list[str]) -> int:
    """``python -m distill export --run-dir RUN`` for an lm run (distill/__main__.py picks this module)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m distill export (task lm)", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    args, overrides = parser.parse_known_args(argv)
    run_lm_export(args.run_dir, overrides)
    return 0

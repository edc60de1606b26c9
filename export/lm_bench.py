"""CPU generation benchmark of causal LMs (task lm): PyTorch fp32, ONNX Runtime fp32 and int8, batch 1.

    python -m distill bench --run-dir RUN [--threads=1] [--key=value ...]   (distill/__main__.py picks this module)

Per model (teacher, student, student_ce when exported) and variant, over ``prompts`` held-out
prompts of ``prompt_tokens`` tokens each (the start of the first held-out blocks):

  prompt processing  one forward over the prompt (the prefill): prompt tokens per second
  generation         ``new_tokens`` greedy steps of one token each through the key/value cache
                     (the same loop for both runtimes: argmax, then one forward with the past):
                     generated tokens per second

each the median over the prompts, after ``warmup`` untimed prompts. Speed-ups are ratios against
the teacher in the same run (its PyTorch fp32 row, and the same variant's row). Writes
bench/bench.json and bench/bench.md. Threads are set by ``main`` (the environment, through export/bench.py's
set_thread_env) before torch or onnxruntime are imported.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from distill.config import apply_overrides, atomic_write_text
from distill.errors import PipelineError
from distill.layout import (
    BENCH_PYTORCH,
    BENCH_VARIANT,
    LM_EXPORT_VARIANTS,
    ONNX_FILE,
    STUDENT,
    STUDENT_CE,
    TEACHER,
    bench_dir,
    onnx_file,
    onnx_model_dir,
    onnx_root,
    onnx_variant_dir,
    read_validation,
    stage_dir,
    teacher_dir,
    validation_path,
)
from distill.lock import stage_lock  # stdlib-only
from export.bench import available_cores, check_load, read_cpu_peak, set_thread_env  # stdlib-only at import

LM_VARIANTS = tuple((BENCH_VARIANT[sub], sub) for sub in (None, *LM_EXPORT_VARIANTS))  # (bench name, export folder)


class LMBenchError(RuntimeError, PipelineError):
    """Something the benchmark needs is missing (an export, a model directory)."""


@dataclass
class LMBenchConfig:
    """Flat benchmark settings; every field can be overridden as --key=value."""

    models: list[str] = field(default_factory=list)  # empty: teacher, student, and student_ce when exported
    threads: int = 0  # intra-op threads (set by export/bench.py before the imports); 0: every core
    prompts: int = 5  # timed held-out prompts per variant (each figure is their median)
    warmup: int = 1  # untimed prompts first
    prompt_tokens: int = 128  # tokens per prompt
    new_tokens: int = 32  # greedy tokens generated per prompt


def _torch_runner(model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def forward(ids, past, length):
        with torch.inference_mode():
            out = model(input_ids=ids, past_key_values=past, use_cache=True)
        return out.logits[0, -1], out.past_key_values

    return forward


def _ort_runner(variant_dir: Path, threads: int):
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    model = ORTModelForCausalLM.from_pretrained(variant_dir, session_options=options, use_cache=True)

    def forward(ids, past, length):
        out = model(input_ids=ids, attention_mask=torch.ones((1, length), dtype=torch.int64), past_key_values=past)
        return out.logits[0, -1], out.past_key_values

    return forward


def time_prompt(forward, prompt, new_tokens: int) -> tuple[float, float, list[int]]:
    """(prefill seconds, seconds per generated token, the generated ids): greedy decoding."""
    import torch

    ids = torch.from_numpy(prompt[None])
    t0 = time.perf_counter()
    logits, past = forward(ids, None, ids.shape[1])
    prefill = time.perf_counter() - t0
    generated, length = [], ids.shape[1]
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        token = int(torch.as_tensor(logits).argmax())
        generated.append(token)
        length += 1
        logits, past = forward(torch.tensor([[token]]), past, length)
    return prefill, (time.perf_counter() - t0) / new_tokens, generated


def bench_lm(run_dir: Path, overrides: list[str], threads: int, command: str) -> list[dict]:
    import numpy as np
    import onnxruntime
    import torch
    from transformers import AutoTokenizer

    from distill.lm_data import load_lm_data

    cfg = apply_overrides(LMBenchConfig(), overrides)
    torch.set_num_threads(threads)
    models = cfg.models or [TEACHER, STUDENT] + [m for m in (STUDENT_CE,) if onnx_model_dir(run_dir, m).is_dir()]
    if TEACHER not in models:
        raise LMBenchError("--models must include teacher: speed-ups are ratios against the teacher's rows")
    for model in models:
        for sub in LM_EXPORT_VARIANTS:
            if not onnx_file(run_dir, model, sub).is_file():
                raise LMBenchError(f"{onnx_file(run_dir, model, sub)} is missing: run `make export` first")
    from distill.artifacts import read_model_info

    info = read_model_info(teacher_dir(run_dir))
    data = load_lm_data(info.data, AutoTokenizer.from_pretrained(teacher_dir(run_dir)), teacher_dir(run_dir) / "tokens")
    if data.heldout.blocks.shape[1] < cfg.prompt_tokens:
        raise LMBenchError(f"--prompt_tokens={cfg.prompt_tokens} exceeds the block length {data.heldout.blocks.shape[1]}")
    prompts = np.asarray(data.heldout.blocks[: cfg.warmup + cfg.prompts, : cfg.prompt_tokens], dtype=np.int64)
    load0, busy = check_load(os.cpu_count() or 1, 0.5)
    rows = []
    for model in models:
        validation = read_validation(validation_path(run_dir, model))
        for variant, sub in LM_VARIANTS:
            path = stage_dir(run_dir, model) if sub is None else onnx_variant_dir(run_dir, model, sub)
            forward = _torch_runner(path) if sub is None else _ort_runner(path, threads)
            timings = [time_prompt(forward, p, cfg.new_tokens) for p in prompts]
            prefill = [t[0] for t in timings[cfg.warmup:]]
            per_token = [t[1] for t in timings[cfg.warmup:]]
            size = (sum(f.stat().st_size for f in path.glob("*.safetensors")) if sub is None
                    else (path / ONNX_FILE).stat().st_size) / 1e6
            figures = validation.figures(sub)
            rows.append({"model": model, "variant": variant, "prompt_tokens_per_s": cfg.prompt_tokens / statistics.median(prefill),
                         "generated_tokens_per_s": 1.0 / statistics.median(per_token),
                         "prefill_ms_p50": 1e3 * statistics.median(prefill),
                         "ms_per_token_p50": 1e3 * statistics.median(per_token), "file_mb": round(size, 1),
                         "validation_perplexity": figures["perplexity"],
                         "first_generated": timings[cfg.warmup][2][:8]})
            print(f"{model:>10} {variant:>12}: prefill {rows[-1]['prompt_tokens_per_s']:8.1f} tokens/s, generation "
                  f"{rows[-1]['generated_tokens_per_s']:7.1f} tokens/s ({size:.0f} MB)", flush=True)
    _ratios(rows)
    peak = read_cpu_peak(threads, 2)
    meta = {"command": command, "config": asdict(cfg), "threads": threads, "cpu_model": peak.cpu_model,
            "load_before": load0, "load_after": os.getloadavg()[0], "busy_warning": busy,
            "date": _dt.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__}
    out = bench_dir(run_dir)
    atomic_write_text(out / "bench.json", json.dumps({"rows": rows, **meta}, indent=2) + "\n")
    atomic_write_text(out / "bench.md", render(rows, meta))
    print(f"bench: {out / 'bench.md'}")
    refresh_variant_cards(run_dir, models)
    return rows


def refresh_variant_cards(run_dir: Path, models: list[str]) -> None:
    """Rewrite the exported variants' cards, which now carry these speeds, under the export's lock
    (an export that holds it is rewriting them itself: skipped, with a line)."""
    from distill.lm_card import write_lm_card
    from distill.lock import StageLockedError

    try:
        with stage_lock(onnx_root(run_dir)):
            for model in models:
                for sub in LM_EXPORT_VARIANTS:
                    write_lm_card(onnx_variant_dir(run_dir, model, sub))
    except StageLockedError as err:
        print(f"note: the ONNX variants' model cards were not refreshed: {err}", flush=True)


def _ratios(rows: list[dict]) -> None:
    """Each row's generated tokens/s over the teacher's PyTorch fp32 row and its same-variant row."""
    teacher = {r["variant"]: r["generated_tokens_per_s"] for r in rows if r["model"] == TEACHER}
    for r in rows:
        r["gen_speedup_vs_teacher_pytorch"] = r["generated_tokens_per_s"] / teacher[BENCH_PYTORCH]
        r["gen_speedup_vs_teacher_same_variant"] = r["generated_tokens_per_s"] / teacher[r["variant"]]


def render(rows: list[dict], meta: dict) -> str:
    lines = [f"Batch 1, greedy, {meta['config']['prompts']} held-out prompts of {meta['config']['prompt_tokens']} "
             f"tokens, {meta['config']['new_tokens']} generated tokens each (medians); {meta['threads']} thread(s), "
             f"{meta['cpu_model']}, load {meta['load_before']:.1f} before / {meta['load_after']:.1f} after; "
             f"{meta['date']}.", "",
             "| model | variant | prompt tokens/s | generated tokens/s | ms/token | × teacher PyTorch | × teacher same "
             "variant | file MB | validation perplexity |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variant']} | {r['prompt_tokens_per_s']:.0f} | {r['generated_tokens_per_s']:.1f} | "
                     f"{r['ms_per_token_p50']:.1f} | {r['gen_speedup_vs_teacher_pytorch']:.1f} | "
                     f"{r['gen_speedup_vs_teacher_same_variant']:.1f} | {r['file_mb']:.0f} | "
                     f"{r['validation_perplexity']:.2f} |")
    if meta["busy_warning"]:
        lines += ["", f"Warning: {meta['busy_warning']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """``python -m distill bench --run-dir RUN`` for an lm run (distill/__main__.py picks this module)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m distill bench (task lm)", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    args, overrides = parser.parse_known_args(argv)
    threads = apply_overrides(LMBenchConfig(), overrides).threads or available_cores()
    with stage_lock(bench_dir(args.run_dir)):  # one benchmark per run (two would also time each other)
        set_thread_env(threads)  # before the first import of torch / onnxruntime (in bench_lm)
        bench_lm(args.run_dir, overrides, threads, " ".join(["python -m distill bench", *argv]))
    return 0

"""``<run-dir>/report.md`` for a causal-LM run (task lm): the teacher's check, the KD student and
the CE-only control on held-out perplexity and top-1 agreement with the teacher, and the CPU
generation benchmark when it has run. Reads the stages' JSON; measures nothing."""

from __future__ import annotations

from pathlib import Path

from distill import layout
from distill.config import atomic_write_text

TITLES = (("student", "KD student"), ("student_ce", "CE-only student"))


def lm_report(run_dir: Path, metrics: dict) -> Path:
    teacher = metrics["teacher"]
    check = teacher["check"]
    lines = [f"# Distillation report (causal LM): `{run_dir}`", "",
             f"Teacher `{teacher['base_model']}` ({teacher['parameters'] / 1e6:.1f} M parameters): held-out perplexity "
             f"{check['heldout_perplexity']:.2f} over {check['tokens']:,} tokens, next-token accuracy "
             f"{check['next_token_accuracy']:.4f}.", "",
             "| model | held-out perplexity | next-token acc. | top-1 agreement with the teacher | parameters | "
             "tokens seen | train tokens/s |", "|---|---|---|---|---|---|---|"]
    for name, title in TITLES:
        m = metrics.get(name)
        if m is None:
            continue
        h = m["heldout"]
        lines.append(f"| {title} | {h['perplexity']:.2f} | {h['next_token_accuracy']:.4f} | "
                     f"{h['teacher_top1_agreement']:.4f} | {m['parameters'] / 1e6:.2f} M | {m['tokens_seen']:,} | "
                     f"{m['train_tokens_per_s']:.0f} |")
    student, control = metrics.get("student"), metrics.get("student_ce")
    if student and control:
        change = student["heldout_perplexity"] / control["heldout_perplexity"] - 1
        lines += ["", f"**KD against CE-only** (same student, blocks, steps and seed): held-out perplexity "
                      f"{100 * change:+.1f} %. One seed."]
    lines += ["", "Greedy continuations of the teacher:", ""]
    lines += [f"- `{c['prompt']}` → `{c['continuation'].strip()}`" for c in check["continuations"]]
    bench = layout.bench_dir(run_dir) / "bench.md"
    if bench.exists():
        lines += ["", "## Generation on CPU", "", bench.read_text().strip()]
    path = run_dir / layout.REPORT_FILE
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path

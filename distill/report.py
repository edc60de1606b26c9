"""``<run-dir>/report.md``: teacher, KD student and CE-only student side by side, plus the ONNX
benchmark when it has run. Reads the stages' JSON outputs; measures nothing itself (inference
speed is measured in one place: the bench stage).

    python -m distill report --run-dir runs/demo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from distill import layout
from distill.artifacts import read_model_info
from distill.config import atomic_save_figure, atomic_write_text
from distill.tasks import Task, task_of

MODELS = ((layout.TEACHER, "Teacher"), (layout.STUDENT, "KD student"), (layout.STUDENT_CE, "CE-only student"))


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def report_teacher_dir(run_dir: Path) -> Path:
    """The run's teacher: ``<run>/teacher``, else the one its students were trained from
    (``--teacher_dir`` elsewhere, as compare's arms and a second set of students use; their
    distill.json names it)."""
    own = layout.teacher_dir(run_dir)
    if (own / layout.METRICS_FILE).exists():
        return own
    for name in (layout.STUDENT, layout.STUDENT_CE):
        student = layout.stage_dir(run_dir, name)
        teacher = read_model_info(student).teacher_dir if (student / layout.MODEL_INFO).is_file() else None
        if teacher is not None:
            return teacher
    return own


def write_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    teacher_dir = report_teacher_dir(run_dir)
    metrics = {name: _load((teacher_dir if name == layout.TEACHER else layout.stage_dir(run_dir, name))
                           / layout.METRICS_FILE) for name, _ in MODELS}
    if (metrics["teacher"] or {}).get("task") == "lm":  # a causal LM: perplexity and agreement (distill/lm_report.py)
        from distill.lm_report import lm_report

        return lm_report(run_dir, metrics)
    bench_rows = (_load(layout.bench_json(run_dir)) or {}).get("rows", [])
    rates = {r["model"]: round(r["throughput_ex_s"], 1) for r in bench_rows if r["variant"] == layout.BENCH_PYTORCH}
    teacher = metrics["teacher"]
    lines = [f"# Distillation report: `{run_dir}`", ""]
    if teacher is not None and teacher_dir != layout.teacher_dir(run_dir):
        lines += [f"The teacher: `{teacher_dir}` (`--teacher_dir`).", ""]
    if teacher is None:
        lines += ["No teacher yet: run `make teacher`."]
    elif teacher.get("task") == "ner":
        lines += ner_lines(metrics, rates)
    else:
        lines += ["| model | dev accuracy | macro-F1 | parameters | % of teacher acc. | CPU inference samples/s | "
                  "train rows | steps | train samples/s | train time (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, title in MODELS:
            m = metrics[name]
            if m is None:
                continue
            rate = rates.get(name)
            lines.append(
                f"| {title} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['parameters'] / 1e6:.2f} M | "
                f"{100 * m['accuracy'] / teacher['accuracy']:.1f}% | {rate if rate is not None else '–'} | "
                f"{m['train_rows']:,} | {m.get('steps_done', m['total_steps']):,} | {m['train_samples_per_s']:.1f} | "
                f"{m['train_time_s']:.0f} |"
            )
        lines += kd_lines(metrics, task_of("classification"))
        if rates:
            lines += ["", "CPU inference samples/s: PyTorch eager fp32 at batch 32, from the bench stage "
                          "(bench/bench.md has every variant)."]
        for name in ("teacher", "student", "student_ce"):
            notes = (metrics[name] or {}).get("transfer_notes", [])
            lines += [f"- {note}" for note in notes]
        png = plot_models(run_dir, metrics, rates)
        lines += ["", f"![models]({png.name})"]
    bench = layout.bench_dir(run_dir) / "bench.md"
    if bench.exists():
        lines += ["", "## ONNX Runtime on CPU", "", bench.read_text().strip()]
        if (layout.bench_dir(run_dir) / "bench.png").exists():
            lines += ["", "![accuracy vs latency](bench/bench.png)"]
    path = run_dir / layout.REPORT_FILE
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def kd_lines(metrics: dict, task: Task) -> list[str]:
    """What distillation gave over the CE-only control (same student and seed) and the KD student's
    recipe: one text for both tasks, in the task's figure and unit (rows or sentences)."""
    student, control, unit, lines = metrics["student"], metrics["student_ce"], task.example, []
    if student and control:
        extra = student.get("transfer_rows", 0)
        also = f", the KD student also on {extra:,} teacher-scored {unit}" if extra else ""
        lines += ["", f"**KD gain over CE-only** (same student and seed; the control trains on the labelled {unit} "
                      f"alone{also}): {100 * (student[task.score] - control[task.score]):+.2f} points of "
                      f"{task.score_name} ({100 * (student['macro_f1'] - control['macro_f1']):+.2f} macro-F1). "
                      "One seed: `make compare` measures it over several."]
    if student:
        s = student["student"]
        layers = f", teacher layers kept {s['layers_kept']} of {s['teacher_layers']}" if s["kind"] == "subset" else ""
        weights = ", ".join(f"{k} = {student[k]}" for k in ("w_kd", "w_ce", "w_hidden", "w_attn") if k in student)
        words = f", {student['train_words']:,} words" if "train_words" in student else ""
        lines += ["", f"Student: `{s['kind']}`{layers}; T = {student['temperature']}, {weights}; "
                      f"{student['labelled_rows']:,} labelled {unit} + {student['transfer_rows']:,} teacher-scored "
                      f"{unit} ({', '.join(student['transfer']) or 'no transfer set'}){words}."]
    return lines


def ner_lines(metrics: dict, rates: dict) -> list[str]:
    """The token-classification report: entity-level (seqeval) micro P/R/F1 of each model, then F1
    per entity type."""
    teacher = metrics["teacher"]
    present = [(name, title) for name, title in MODELS if metrics[name] is not None]
    lines = ["Entity-level scores on dev (seqeval, IOB2; micro over entities; words cut by max_length count "
             "as O).", "",
             "| model | entity F1 | precision | recall | macro-F1 | token acc. | parameters | % of teacher F1 | "
             "CPU inference sentences/s | train sentences | steps | train time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, title in present:
        m, rate = metrics[name], rates.get(name)
        lines.append(f"| {title} | {m['f1']:.4f} | {m['precision']:.4f} | {m['recall']:.4f} | {m['macro_f1']:.4f} | "
                     f"{m['token_accuracy']:.4f} | {m['parameters'] / 1e6:.2f} M | "
                     f"{100 * m['f1'] / max(teacher['f1'], 1e-12):.1f}% | {rate if rate is not None else '–'} | "
                     f"{m['train_rows']:,} | {m.get('steps_done', m['total_steps']):,} | {m['train_time_s']:.0f} |")
    types = sorted(teacher["per_type"])
    lines += ["", "F1 per entity type (support: dev entities):", "",
              "| type | support | " + " | ".join(title for _, title in present) + " |",
              "|---|---|" + "---|" * len(present)]
    for kind in types:
        cells = [f"{metrics[n]['per_type'].get(kind, {}).get('f1', 0.0):.4f}" for n, _ in present]
        lines.append(f"| {kind} | {teacher['per_type'][kind]['support']} | " + " | ".join(cells) + " |")
    lines += kd_lines(metrics, task_of("ner"))
    schedules = [schedule_line(title, metrics[name]) for name, title in MODELS[1:] if metrics[name]]
    if schedules:
        lines += ["", "Schedules (the passes each student got):", ""] + schedules
    return lines


def schedule_line(title: str, m: dict) -> str:
    """One student's schedule in words: its sentences, epochs, steps, evaluations, checkpoint choice."""
    rows = f"{m['labelled_rows']:,} labelled" + (f" + {m['transfer_rows']:,} transfer ({', '.join(m['transfer'])})"
                                                 if m.get("transfer_rows") else "")
    epochs = f"{m['epochs']} epochs" if "epochs" in m else "epochs not recorded"
    patience = "" if "patience" not in m else ", no early stop" if m["patience"] == 0 else f", patience {m['patience']}"
    return (f"- {title}: {rows} sentences, {epochs} ({m.get('steps_done', m['total_steps']):,} of "
            f"{m['total_steps']:,} steps{patience}); best checkpoint at step {m['best_step']:,}, chosen on "
            f"{m['eval_rows']:,} {m['checkpoint_chosen_on']} sentences; dev reported.")


def plot_models(run_dir: Path, metrics: dict, rates: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [(n, t) for n, t in MODELS if metrics[n] is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    xs = range(len(names))
    task = task_of(metrics["teacher"].get("task", "classification"))
    score = task.score  # accuracy, or a tagger's entity F1
    accuracies = [100 * metrics[n][score] for n, _ in names]
    left.bar(xs, accuracies, color=["#555", "#2a7", "#c83"][: len(names)])
    left.set_ylim(max(0.0, min(accuracies) - 5), min(100.0, max(accuracies) + 2))
    left.set_ylabel(f"{task.score_name} (%)")
    for x, a in zip(xs, accuracies, strict=True):
        left.text(x, a, f"{a:.1f}", ha="center", va="bottom")
    right.bar(xs, [rates.get(n, 0) for n, _ in names], color=["#555", "#2a7", "#c83"][: len(names)])
    right.set_ylabel("CPU inference samples/s")
    for axis in (left, right):
        axis.set_xticks(list(xs), [t for _, t in names], rotation=10)
    fig.tight_layout()
    return atomic_save_figure(fig, run_dir / "models.png")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill report")
    parser.add_argument("--run-dir", default="runs/demo")
    args = parser.parse_args(argv)
    print(f"report: {write_report(Path(args.run_dir))}")
    return 0

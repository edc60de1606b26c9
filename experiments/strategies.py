"""Which fine-tuning strategy should the teacher use? The four on the same rows, in one table.

    python -m distill strategies --data DIR --run-dir RUN [--strategies=full,top-n,frozen,lora]
                                 [--student=true] [--key=value teacher overrides ...]
    make strategies DATA=... RUN=...

Each strategy trains the teacher preset (``--preset``, quick by default) with its own default lr
(``STRATEGY_DEFAULTS`` in teachers/finetune.py; an explicit ``--lr`` goes to all four) on the same
rows and seed, in its own process and folder ``<run>/strategies/<strategy>/teacher`` (log:
``teacher.log``). With ``--student=true`` the 3-layer student of the quick student preset is then
distilled from each teacher's cached logits into ``<run>/strategies/<strategy>/student``
(``student.log``; no CE-only control): does a cheaper teacher cost the student anything?

Resumable: a finished run (its ``metrics.json`` exists) is read, not rerun; a killed one resumes
from its checkpoint. A run that fails is recorded and the others go on; the command then exits 1.

To keep the comparison near 20 minutes on a 2-core CPU, every teacher scores only the
``test_unlabeled`` transfer set (``COMPARISON_TEACHER_ARGS``; the quick preset's 40,000
``unused_train`` rows would add about 3 minutes of scoring per teacher). A ``--transfer=...`` given
here wins. Writes ``<run>/strategies/strategies.md``, ``strategies.json`` and ``strategies.png``
(dev accuracy against trainable parameters, marker area by train time) and ends with the strategy
it would pick as the teacher (``recommend``: the rule is printed with the answer).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from distill import layout
from distill.artifacts import claim_run_dir
from distill.config import (
    ConfigError,
    apply_overrides,
    atomic_save_figure,
    atomic_write_text,
    override_key,
    split_overrides,
)
from distill.lock import stage_lock
from distill.modeling import STRATEGIES
from distill.procs import run_stage
from teachers.finetune import PRESETS, TeacherConfig, already_trained, resolve_defaults

# Teacher overrides every strategy gets before the user's own (which win): the transfer set the
# comparison scores, and no progress bar in the log files.
COMPARISON_TEACHER_ARGS = ["--transfer=unlabeled", "--progress=false"]
COSTS = ("train_time_s", "trainable_parameters", "peak_rss_mb")  # what "cheapest" may mean


@dataclass
class StrategiesConfig:
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))  # which of full, top-n, frozen, lora
    student: bool = True  # also distil the 3-layer student from each teacher (the student line)
    student_preset: str = "quick"  # the student preset of that line (cached logits, no CE-only control)
    student_transfer_rows: int | None = None  # at most this many transfer rows per student (None: all scored)
    threads: int = 0  # torch threads of each run (0: all cores); the runs go one after another
    tolerance: float = 0.01  # recommend the cheapest strategy within this much dev accuracy of the best (1 point)
    cheapest_by: str = "train_time_s"  # the cost that ranks them: train_time_s | trainable_parameters | peak_rss_mb


def teacher_args(strategy: str, data: str | None, preset: str, out: Path, extra: list[str]) -> list[str]:
    """The teacher-stage command line of one strategy."""
    return [*(["--data", data] if data else []), "--run-dir", str(out), "--preset", preset,
            f"--strategy={strategy}", *COMPARISON_TEACHER_ARGS, *extra]


def student_args(cfg: StrategiesConfig, out: Path, *, holdout_rows: int) -> list[str]:
    """The student-stage command line distilling from ``out/teacher``; it holds back the teacher's
    ``holdout_rows`` (the same rows), whatever the student preset says."""
    rows = [] if cfg.student_transfer_rows is None else [f"--transfer_rows={cfg.student_transfer_rows}"]
    return ["--run-dir", str(out), "--preset", cfg.student_preset, "--student_ce=false", "--progress=false",
            f"--holdout_rows={holdout_rows}", *rows]


def expected_config(strategy: str, data: str | None, preset: str, extra: list[str]) -> TeacherConfig:
    """The resolved TeacherConfig the strategy's subprocess will train with (what a finished
    teacher's train_config.json must match)."""
    cfg = dataclasses.replace(PRESETS[preset], **({"data": data} if data else {}))
    return resolve_defaults(apply_overrides(cfg, [f"--strategy={strategy}", *COMPARISON_TEACHER_ARGS, *extra]))


def saved_mb(directory: Path) -> float:
    """What the model folder stores as weights: the *.safetensors files, in MB."""
    return round(sum(f.stat().st_size for f in directory.glob("*.safetensors")) / 1e6, 2)


def collect(strategy: str, out: Path) -> dict:
    """One strategy's row: the teacher's figures and lr, the student's when it has finished."""
    teacher = layout.teacher_dir(out)
    m = json.loads((teacher / layout.METRICS_FILE).read_text())
    saved_cfg = json.loads((teacher / layout.TRAIN_CONFIG_FILE).read_text())
    row = {
        "strategy": strategy, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
        "trainable_parameters": m["trainable_parameters"], "parameters": m["parameters"],
        "train_time_s": m["train_time_s"], "train_samples_per_s": m["train_samples_per_s"],
        "peak_rss_mb": m.get("peak_rss_mb"), "saved_mb": saved_mb(teacher), "lr": saved_cfg["lr"],
        "lr_source": saved_cfg.get("lr_source"), "best_step": m["best_step"], "total_steps": m["total_steps"],
        # the teacher process's time: training + evaluation, then scoring the caches
        "teacher_wall_s": round(m["wall_time_s"] + sum(c.get("seconds", 0.0) for c in m["cache"].values()), 1),
        "dev_rows": m["examples"], "student_accuracy": None, "student_macro_f1": None, "student_wall_s": None,
    }
    student = layout.student_dir(out) / layout.METRICS_FILE
    if student.exists():
        s = json.loads(student.read_text())
        row.update(student_accuracy=s["accuracy"], student_macro_f1=s["macro_f1"], student_wall_s=s["wall_time_s"],
                   student_parameters=s["parameters"], student_train_rows=s["train_rows"])
    return row


def recommend(rows: list[dict], tolerance: float, cheapest_by: str) -> dict:
    """The rule: of the strategies whose dev accuracy is within ``tolerance`` of the best, the one
    with the least ``cheapest_by`` (ties: the more accurate). Returns the pick, the best, the rule
    and the reason, in words."""
    if cheapest_by not in COSTS:
        raise ConfigError(f"--cheapest_by: {cheapest_by!r}; choose one of {', '.join(COSTS)}")
    if not rows:
        return {"pick": None, "best": None, "within": [], "rule": "", "reason": "No strategy finished: nothing to pick."}
    best = max(rows, key=lambda r: r["accuracy"])
    within = [r for r in rows if r["accuracy"] >= best["accuracy"] - tolerance - 1e-12]
    pick = min(within, key=lambda r: (r[cheapest_by] is None, r[cheapest_by] or 0, -r["accuracy"]))
    unit = {"train_time_s": "train time", "trainable_parameters": "trainable parameters",
            "peak_rss_mb": "peak memory"}[cheapest_by]
    rule = (f"of the strategies within {100 * tolerance:.2f} points of the best dev accuracy, the one with the "
            f"least {unit} (ties: the more accurate)")
    if pick is best:
        others = [r for r in within if r is not best]
        reason = (f"Pick **{pick['strategy']}** as the teacher: it has the best dev accuracy "
                  f"({100 * best['accuracy']:.2f}) and "
                  + (f"is also the cheapest by {unit} of those within {100 * tolerance:.2f} points "
                     f"({', '.join(r['strategy'] for r in others)})." if others else
                     f"no other strategy comes within {100 * tolerance:.2f} points of it."))
    else:
        reason = (f"Pick **{pick['strategy']}** as the teacher: dev accuracy {100 * pick['accuracy']:.2f}, "
                  f"{100 * (best['accuracy'] - pick['accuracy']):.2f} points below the best ({best['strategy']}, "
                  f"{100 * best['accuracy']:.2f}), within the {100 * tolerance:.2f}-point tolerance, at "
                  f"{_cost(pick, cheapest_by)} {unit} against {_cost(best, cheapest_by)}.")
    return {"pick": pick["strategy"], "best": best["strategy"], "within": [r["strategy"] for r in within],
            "rule": rule, "reason": reason}


def _cost(row: dict, key: str) -> str:
    value = row[key]
    if value is None:
        return "unknown"
    return {"train_time_s": f"{value:.0f} s", "trainable_parameters": f"{value:,}",
            "peak_rss_mb": f"{value:.0f} MB"}[key]


def student_sentence(rows: list[dict], pick: str | None) -> str | None:
    """Whether a cheaper teacher cost the student anything, in words (None: no students)."""
    done = [r for r in rows if r["student_accuracy"] is not None]
    if not done:
        return None
    best = max(done, key=lambda r: r["student_accuracy"])
    spread = best["student_accuracy"] - min(r["student_accuracy"] for r in done)
    text = (f"Students (3 layers, quick preset, cached logits, one seed): the best is distilled from "
            f"{best['strategy']} ({100 * best['student_accuracy']:.2f}); all {len(done)} lie within "
            f"{100 * spread:.2f} points (one point is {_dev_rows_per_point(rows)} dev rows).")
    picked = next((r for r in done if r["strategy"] == pick), None)
    if picked is not None and picked is not best:
        text += (f" The pick's student ({pick}) is {100 * (best['student_accuracy'] - picked['student_accuracy']):.2f} "
                 "points below the best student.")
    return text


def _dev_rows_per_point(rows: list[dict]) -> str:
    n = rows[0].get("dev_rows")
    return "–" if not n else f"{n / 100:.1f}"


def _num(x, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def _points(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def render(rows: list[dict], choice: dict, command: str, failures: list[str]) -> str:
    lines = ["# Teacher strategies on the same rows", "", f"`{command}`", "",
             "Dev accuracy and macro-F1 in points; checkpoint chosen on the run's evaluation set (the preset's). "
             "Train time and samples/s cover the training steps only; peak memory is the teacher process's peak "
             "RSS; saved is the teacher folder's weights (every strategy saves a whole HF model: LoRA merged).", "",
             "| strategy | lr (source) | dev acc. | macro-F1 | trainable params | total params | train s | "
             "samples/s | peak RSS MB | saved MB | student dev acc. |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        source = "–" if not r["lr_source"] else "given" if r["lr_source"] == "given" else "default"
        lines.append(
            f"| {r['strategy']} | {r['lr']:g} ({source}) | {100 * r['accuracy']:.2f} | {100 * r['macro_f1']:.2f} | "
            f"{r['trainable_parameters']:,} | {r['parameters']:,} | {r['train_time_s']:.0f} | "
            f"{r['train_samples_per_s']:.1f} | {_num(r['peak_rss_mb'], '.0f')} | {r['saved_mb']:.1f} | "
            f"{_points(r['student_accuracy'])} |")
    lines += ["", f"Rule: {choice['rule']}." if choice["rule"] else "", "", choice["reason"]]
    students = student_sentence(rows, choice["pick"])
    if students:
        lines += ["", students]
    wall = [r["teacher_wall_s"] + (r["student_wall_s"] or 0) for r in rows]
    if wall:
        lines += ["", f"Time in the runs (training, evaluation, scoring; not process start-up): {sum(wall):.0f} s."]
    if failures:
        lines += ["", "## Failed runs (rerun the command to retry them)", ""] + [f"- {f}" for f in failures]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Dev accuracy against trainable parameters (log x); marker area grows with train time; the
    students drawn below their teachers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    longest = max([r["train_time_s"] for r in rows] + [1.0])
    for i, r in enumerate(rows):
        x, y = r["trainable_parameters"], 100 * r["accuracy"]
        ax.scatter([x], [y], s=40 + 600 * r["train_time_s"] / longest, color=f"C{i}", alpha=0.7, zorder=3)
        ax.annotate(f"{r['strategy']}\n{r['train_time_s']:.0f} s", (x, y), textcoords="offset points",
                    xytext=(10, 4), fontsize=8)
        if r["student_accuracy"] is not None:
            ax.scatter([x], [100 * r["student_accuracy"]], marker="x", color=f"C{i}", zorder=3,
                       label="3-layer student" if i == 0 else None)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log)")
    ax.set_ylabel("dev accuracy (%)")
    ax.set_title("teachers (circles; area grows with train time) and their students (×)", fontsize=9)
    if any(r["student_accuracy"] is not None for r in rows):
        ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    ax.margins(x=0.25, y=0.15)
    fig.tight_layout()
    atomic_save_figure(fig, path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill strategies", description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="dataset directory (train + dev) or hub name (default: the preset's)")
    parser.add_argument("--run-dir", default="runs/demo", help="output directory; runs go to <run-dir>/strategies")
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS), help="the teacher preset")
    args, overrides = parser.parse_known_args(argv)
    mine, extra = split_overrides(overrides, StrategiesConfig)  # extra: passed on to every strategy's teacher stage
    cfg = apply_overrides(StrategiesConfig(), mine)
    unknown = [s for s in cfg.strategies if s not in STRATEGIES]
    if unknown or not cfg.strategies:
        raise ConfigError(f"--strategies: unknown or none {unknown}; choose from {', '.join(STRATEGIES)}")
    if any(override_key(o) == "strategy" for o in extra):
        raise ConfigError("--strategy: this command trains each of --strategies; give those instead")
    if cfg.cheapest_by not in COSTS:
        raise ConfigError(f"--cheapest_by: {cfg.cheapest_by!r}; choose one of {', '.join(COSTS)}")
    # every teacher's config up front: an unknown or mistyped key stops here, not in four subprocesses
    expected = {s: expected_config(s, args.data, args.preset, extra) for s in cfg.strategies}
    out = claim_run_dir(args.run_dir, stage="strategies") / "strategies"
    with stage_lock(out):  # one strategies run per folder: two would train the same teachers into one place
        return _run(cfg, args=args, out=out, extra=extra, expected=expected, argv=argv)


def _run(cfg: StrategiesConfig, *, args: argparse.Namespace, out: Path, extra: list[str], expected: dict,
         argv: list[str]) -> int:
    """Train what is missing, then write the table; 1 when a run failed."""
    rows: list[dict] = []
    failures: list[str] = []
    for strategy in cfg.strategies:
        s_dir = out / strategy
        teacher = layout.teacher_dir(s_dir)
        if (teacher / layout.METRICS_FILE).exists():
            already_trained(teacher, expected[strategy])  # a finished teacher with other settings: an error
        else:
            t0 = time.perf_counter()
            print(f"strategies: {strategy} teacher -> {teacher} (log: {s_dir / 'teacher.log'})", flush=True)
            status = run_stage("teacher", teacher_args(strategy, args.data, args.preset, s_dir, extra),
                               log=s_dir / "teacher.log", threads=cfg.threads)
            if status != 0:
                failures.append(f"{strategy} teacher: exit status {status}, see {s_dir / 'teacher.log'}")
                print(f"strategies: {failures[-1]}", flush=True)
                continue
            print(f"strategies: {strategy} teacher done in {time.perf_counter() - t0:.0f}s", flush=True)
        if cfg.student and not (layout.student_dir(s_dir) / layout.METRICS_FILE).exists():
            t0 = time.perf_counter()
            print(f"strategies: {strategy} student -> {layout.student_dir(s_dir)} (log: {s_dir / 'student.log'})", flush=True)
            status = run_stage("distill", student_args(cfg, s_dir, holdout_rows=expected[strategy].holdout_rows), log=s_dir / "student.log", threads=cfg.threads)
            if status != 0:  # the teacher's row stays; its student column says nothing
                failures.append(f"{strategy} student: exit status {status}, see {s_dir / 'student.log'}")
                print(f"strategies: {failures[-1]}", flush=True)
            else:
                print(f"strategies: {strategy} student done in {time.perf_counter() - t0:.0f}s", flush=True)
        row = collect(strategy, s_dir)
        rows.append(row)
        print(f"strategies: {strategy}: dev accuracy {row['accuracy']:.4f} (lr {row['lr']:g}, {row['lr_source']})"
              + ("" if row["student_accuracy"] is None else f"; student {row['student_accuracy']:.4f}"), flush=True)
    choice = recommend(rows, cfg.tolerance, cfg.cheapest_by)
    command = "python -m distill strategies " + " ".join(argv)
    atomic_write_text(out / "strategies.json", json.dumps(
        {"command": command, "config": dataclasses.asdict(cfg), "preset": args.preset, "data": args.data,
         "teacher_overrides": [*COMPARISON_TEACHER_ARGS, *extra], "rows": rows, "recommendation": choice,
         "student_note": student_sentence(rows, choice["pick"]), "failures": failures}, indent=2) + "\n")
    atomic_write_text(out / "strategies.md", render(rows, choice, command, failures))
    if rows:
        plot(rows, out / "strategies.png")
    print((out / "strategies.md").read_text())
    print(f"strategies: wrote {out / 'strategies.md'}, strategies.json" + (", strategies.png" if rows else ""))
    return 1 if failures else 0

"""Does distillation beat not distilling? The arms, over several seeds, in one table.

    python -m distill compare --run-dir runs/demo [--seeds=3] [--arms=ce,pseudo,kd,kd_layers] [--key=value ...]
    make compare RUN=runs/demo

Needs a finished teacher in ``<run-dir>/teacher`` (``make teacher``), with transfer sets scored.
Each arm trains the same student from the same start, for each seed, in its own resumable run
directory ``<run-dir>/compare/<arm>/seed<k>/student`` (a separate process: one arm failing or
being killed loses nothing else; rerun the command to finish what is missing; a rerun with other
settings is refused in one line, since finished arm-seeds are kept: ``compare/settings.json``). ``--jobs=2
--threads=1`` runs two arm-seeds at once, one thread each (what a 2-core machine does best):

    ce          CE on the labelled rows alone: what a user does without a teacher
    pseudo      CE on the labelled rows + the transfer rows labelled with the teacher's argmax
                (self-training: what the teacher's labels give without its soft targets)
    kd          KD + CE: the labelled rows and the transfer rows with the teacher's soft targets
    kd_layers   kd + the hidden-state and attention losses of mapped layers (teacher online)
    pseudo_kd   kd whose transfer rows also carry the teacher's argmax as a label (the preset few's
                student; run only when named in --arms)

A token-classification teacher (task ner) gets the arms ``ce``, ``pseudo`` and ``kd`` (``pseudo``
and ``kd`` read its per-word transfer sets: distill/ner_transfer.py; without any, ``ce`` and ``kd``),
scored by dev entity F1 (seqeval, micro) instead of accuracy, every arm on the NER student preset's
schedule (students/config.py NER_PRESETS).

The ce arm's schedule: unless ``ce_epochs`` is given, as many passes over its labelled rows as
give it the optimizer steps the largest other arm of its seed was given (``matched_ce_schedule``:
the kd arm reads the transfer rows too, so its epochs are longer) and as many evaluations as that
arm, at least 4 epochs for classification;
each ce arm runs after its seed's other arms for that. A fixed 4 epochs was the default before: on 500
labelled rows it never left the majority class while the kd arm read 20,000 (docs/RESULTS.md).

Checkpoints are chosen on ``holdout_rows`` training rows held back (the same rows for every arm
and seed); the dev split is only reported. The report (``compare.md``, ``compare.json``,
``compare.png``) gives, per arm, the mean, std and every seed, the steps it took, and the paired
per-seed differences against ``ce`` and ``pseudo``, with a sentence on whether each difference
exceeds its spread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from distill import layout
from distill.artifacts import ModelInfo, claim_run_dir, read_model_info
from distill.config import (
    ConfigError,
    apply_overrides,
    atomic_save_figure,
    atomic_write_text,
    override_key,
    split_overrides,
)
from distill.lock import stage_lock
from distill.procs import run_stage
from distill.tasks import task_of
from distill.trainer import planned_evals
from students.config import NER_PRESETS, StudentConfig
from students.stage import ControlSchedule, matched_schedule

# Each arm is a list of student-stage overrides on top of the shared ones (CompareConfig.common), each
# explicit about pseudo-labels: the preset few turns them on, and its kd arm must still be soft KD.
ARMS = {
    "ce": ["--use_transfer=false", "--pseudo_labels=false", "--w_kd=0", "--w_ce=1"],
    "pseudo": ["--pseudo_labels=true", "--w_kd=0", "--w_ce=1"],
    "kd": ["--pseudo_labels=false"],
    "kd_layers": ["--pseudo_labels=false", "--w_hidden=1", "--w_attn=1"],
    "pseudo_kd": ["--pseudo_labels=true"],  # the transfer rows' argmax labels and soft targets (the preset few's)
}
DEFAULT_ARMS = ("ce", "pseudo", "kd", "kd_layers")  # what runs without --arms (pseudo_kd on request)
NER_ARMS = ("ce", "pseudo", "kd")  # a tagger's arms: no layer losses for NER (students/ner.py)
CE_MIN_EPOCHS = 4  # the classification ce arm's fewest epochs (its 16 checkpoints at 4 evaluations per epoch)
BASELINES = ("ce", "pseudo")  # the arms every other arm is compared against, seed by seed
# two-sided 95 % Student-t quantiles by degrees of freedom (n seeds - 1)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


@dataclass
class CompareConfig:
    seeds: int = 3  # seeds per arm (0, 1, ..., seeds - 1)
    arms: list[str] = field(default_factory=lambda: list(DEFAULT_ARMS))  # which arms, of ARMS
    holdout_rows: int | None = None  # training rows held back to choose checkpoints on (dev is only reported;
    #                                  None: 1,000 for classification, the NER preset's 200 for a tagger)
    # the ce arm at its best: more passes over its fewer rows, the lr schedule run to its end, and the
    # best of its checkpoints on the holdout rows (early stopping at 4 evaluations stopped it at
    # 0.5-1.5 epochs, still near the peak lr: a starved control). By default it is given the samples
    # the largest other arm of its seed was given (matched_ce_schedule): a fixed 4 epochs over 500
    # labelled rows never left the majority class while KD read 20,000 transfer rows (docs/RESULTS.md)
    ce_epochs: int | None = None  # the ce arm's epochs (None: matched to the other arms' samples, at least
    #                               CE_MIN_EPOCHS for classification, the preset's epochs for a tagger)
    ce_patience: int = 0  # evaluations without improvement before the ce arm stops (0: never)
    preset: str = "quick"  # the student preset every arm starts from
    threads: int = 0  # torch threads of each run (0: all cores)
    jobs: int = 1  # arm-seeds that run at once, each a process with `threads` threads: on 2 cores,
    #               --jobs=2 --threads=1 keeps both busy (one 2-thread run scales worse than two 1-thread runs)


def arm_args(arm: str, seed: int, cfg: CompareConfig, *, teacher_dir: Path, run_dir: Path, extra: list[str],
             schedule: ControlSchedule | None = None) -> list[str]:
    """The student-stage command line of one arm and seed; ``schedule``: the ce arm's (None: the preset's)."""
    own = list(ARMS[arm])
    if arm == "ce":
        if schedule is not None and schedule.epochs is not None:
            own.append(f"--epochs={schedule.epochs}")
        if schedule is not None and schedule.evals is not None:
            own.append(f"--evals={schedule.evals}")
        own.append(f"--patience={cfg.ce_patience}")
    return ["--run-dir", str(run_dir), "--preset", cfg.preset, f"--teacher_dir={teacher_dir}", "--student_ce=false",
            f"--holdout_rows={cfg.holdout_rows}", f"--seed={seed}", "--progress=false", *extra, *own]


def matched_ce_schedule(others: list[Path], *, floor: int | None) -> ControlSchedule:
    """The ce arm's schedule for one seed, given the student folders of its seed's other arms:
    students/stage.matched_schedule against the largest of them (its planned ``total_steps``:
    epochs x rows // batch, early stop or not, and its planned evaluations), at least ``floor``
    epochs (None: the preset's). Arms not finished are not counted."""
    planned = []
    for folder in others:
        metrics, config = folder / layout.METRICS_FILE, folder / layout.TRAIN_CONFIG_FILE
        if metrics.exists() and config.exists():
            m, c = json.loads(metrics.read_text()), json.loads(config.read_text())
            planned.append((m["total_steps"], m["labelled_rows"] // c["batch_size"], planned_evals(c),
                            folder.parent.parent.name))
    if not planned:
        return ControlSchedule(floor, None, "no other arm of this seed finished: "
                               + (f"{floor} epochs" if floor else "the preset's epochs"))
    steps, per_epoch, evals, arm = max(planned)
    return matched_schedule(steps=steps, evals=evals, steps_per_epoch=per_epoch, floor=floor, name=f"the {arm} arm")


def summarise(results: dict[str, dict[int, dict]], arms: list[str], seeds: int, score: str = "accuracy") -> dict:
    """Per arm: the dev ``score`` (metrics.json key: accuracy, or f1 for a tagger) by seed, mean,
    std; per (arm, baseline): paired differences."""
    summary: dict = {"arms": {}, "paired": {}}
    for arm in arms:
        accs = {s: results[arm][s][score] for s in range(seeds) if s in results.get(arm, {})}
        values = list(accs.values())
        summary["arms"][arm] = {
            "seeds": accs, "n": len(values), "mean": _mean(values), "std": _std(values),
            "steps": {s: results[arm][s]["steps_done"] for s in accs},
            "samples_seen": {s: results[arm][s]["samples_seen"] for s in accs},
            "train_rows": {s: results[arm][s]["train_rows"] for s in accs},
            "train_time_s": {s: results[arm][s]["train_time_s"] for s in accs},
            "passes": passes_curve([results[arm][s] for s in accs], score),
        }
    for i, base in enumerate(BASELINES):
        for arm in arms:
            if arm in BASELINES[: i + 1] or base not in summary["arms"]:
                continue  # each pair once: pseudo - ce, never ce - pseudo
            common = sorted(set(summary["arms"][arm]["seeds"]) & set(summary["arms"][base]["seeds"]))
            diffs = [summary["arms"][arm]["seeds"][s] - summary["arms"][base]["seeds"][s] for s in common]
            n, mean, std = len(diffs), _mean(diffs), _std(diffs)
            half = T95[n - 1] * std / math.sqrt(n) if n >= 2 and n - 1 in T95 else None
            summary["paired"][f"{arm} - {base}"] = {
                "diffs": dict(zip(common, diffs, strict=True)), "n": n, "mean": mean, "std": std,
                "ci95": None if half is None else [mean - half, mean + half],
                "exceeds_spread": None if n < 2 else abs(mean) > std,
                "ci_excludes_zero": None if half is None else (mean - half > 0 or mean + half < 0),
            }
    return summary


def passes_curve(runs: list[dict], score: str = "accuracy") -> list[dict]:
    """Dev ``score`` against passes over the training rows, from the runs' histories (``--eval_dev=true``
    logs it at every evaluation: reported, never used to choose): one point per evaluation step the
    runs share, the held-back and the dev figure averaged over them ([] without dev figures)."""
    dev_key = f"dev_{score}"
    by_step: dict[int, list[dict]] = {}
    for run in runs:
        for row in run.get("history", []):
            if dev_key in row["eval"]:
                by_step.setdefault(row["step"], []).append(row)
    return [{"step": step, "epoch": rows[0]["epoch"], "n": len(rows),
             "holdout": _mean([r["eval"][score] for r in rows]), "dev": _mean([r["eval"][dev_key] for r in rows]),
             "dev_std": _std([r["eval"][dev_key] for r in rows])}
            for step, rows in sorted(by_step.items()) if len(rows) == len(runs)]


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _std(xs: list[float]) -> float | None:
    """Sample standard deviation (n - 1)."""
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _pts(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def render(summary: dict, teacher_acc: float, cfg: CompareConfig, command: str, failures: list[str],
           metric: str = "dev accuracy") -> str:
    lines = ["# Distillation against its controls", "", f"`{command}`", "",
             f"Teacher {metric} {100 * teacher_acc:.2f}. Checkpoints chosen on {cfg.holdout_rows} held-back "
             f"training rows; {metric} (points) reported. Steps and rows differ by arm: the KD arms see the "
             "transfer rows too.", ""]
    lines += ["| arm | mean | std | " + " | ".join(f"seed {s}" for s in range(cfg.seeds))
              + " | % of teacher | steps (mean) | train rows | train s (mean) |",
              "|---|---|---|" + "---|" * cfg.seeds + "---|---|---|---|"]
    for arm, a in summary["arms"].items():
        seeds = " | ".join(_pts(a["seeds"].get(s)) for s in range(cfg.seeds))
        kept = "–" if a["mean"] is None else f"{100 * a['mean'] / teacher_acc:.1f}%"
        steps, secs = _mean(list(a["steps"].values())), _mean(list(a["train_time_s"].values()))
        rows = ", ".join(f"{r:,}" for r in sorted(set(a["train_rows"].values()))) or "–"
        lines.append(f"| {arm} | {_pts(a['mean'])} | {_pts(a['std'])} | {seeds} | {kept} | "
                     f"{'–' if steps is None else round(steps)} | {rows} | {'–' if secs is None else round(secs)} |")
    lines += ["", f"## Paired differences (same seed, points of {metric})", "",
              "| difference | mean | std | 95% CI (t) | per seed |", "|---|---|---|---|---|"]
    for name, p in summary["paired"].items():
        ci = "–" if p["ci95"] is None else f"[{100 * p['ci95'][0]:+.2f}, {100 * p['ci95'][1]:+.2f}]"
        per = ", ".join(f"{100 * d:+.2f}" for d in p["diffs"].values())
        mean = "–" if p["mean"] is None else f"{100 * p['mean']:+.2f}"
        lines.append(f"| {name} | {mean} | {_pts(p['std'])} | {ci} | {per} |")
    lines += [""] + [f"- {sentence(name, p)}" for name, p in summary["paired"].items()]
    curves = {arm: a["passes"] for arm, a in summary["arms"].items() if a.get("passes")}
    if curves:
        lines += ["", f"## {metric.capitalize()} against passes (`--eval_dev=true`: reported, never used to choose)",
                  "", "Mean over the seeds at each evaluation; the held-back rows are what checkpoints are chosen on.",
                  "", "| arm | epoch | step | held-back (mean) | dev (mean) | dev std | n |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {arm} | {c['epoch']:.2f} | {c['step']} | {_pts(c['holdout'])} | {_pts(c['dev'])} | "
                  f"{_pts(c['dev_std'])} | {c['n']} |" for arm, curve in curves.items() for c in curve]
    if failures:
        lines += ["", "## Failed runs (rerun the command to retry them)", ""] + [f"- {f}" for f in failures]
    return "\n".join(lines) + "\n"


def sentence(name: str, p: dict) -> str:
    """The paired difference in words."""
    if p["n"] < 2:
        return f"{name}: only {p['n']} paired seed(s); no spread to compare against."
    verdict = "exceeds" if p["exceeds_spread"] else "does not exceed"
    joiner = "and" if p["exceeds_spread"] == p["ci_excludes_zero"] else "but"
    ci = f"{joiner} its 95% interval {'excludes' if p['ci_excludes_zero'] else 'includes'} zero"
    return (f"{name}: {100 * p['mean']:+.2f} points on average over {p['n']} seeds; the difference {verdict} "
            f"its spread (std {100 * p['std']:.2f}) {ci}.")


def plot(summary: dict, teacher_acc: float, path: Path, metric: str = "dev accuracy") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(summary["arms"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for x, arm in enumerate(arms):
        values = [100 * v for v in summary["arms"][arm]["seeds"].values()]
        ax.scatter([x] * len(values), values, color="C0", alpha=0.6, zorder=3)
        if values:
            ax.errorbar(x + 0.15, _mean(values), yerr=_std(values) or 0, fmt="s", color="C1", capsize=4, zorder=4)
    ax.axhline(100 * teacher_acc, color="grey", linestyle="--", label="teacher")
    ax.set_xticks(range(len(arms)), arms)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title("each seed (dots), mean ± std (squares)", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    atomic_save_figure(fig, path)


_SAY = threading.Lock()


def say(line: str) -> None:
    """One whole line on stdout: two arm-seeds running at once (--jobs) otherwise interleave theirs."""
    with _SAY:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def task_arms(arms: list[str], teacher, *, given: bool) -> list[str]:
    """The arms to run for this teacher: classification any of ARMS; a tagger those of NER_ARMS, and
    by default (``given`` False) without pseudo when the teacher scored no transfer set (pseudo would
    then be ce on another schedule)."""
    allowed = list(ARMS) if teacher.task == "classification" else list(NER_ARMS)
    if teacher.task == "ner" and not given:
        arms = [a for a in NER_ARMS if a != "pseudo" or teacher.transfer]
    unknown = [a for a in arms if a not in allowed]
    if unknown:
        raise ConfigError(f"--arms: unknown arm(s) {unknown} for a {teacher.task} teacher; choose from "
                          f"{', '.join(allowed)}")
    return arms


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill compare", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/demo", help="the run directory holding teacher/")
    parser.add_argument("--teacher-dir", help="the teacher (default: <run-dir>/teacher)")
    args, overrides = parser.parse_known_args(argv)
    mine, extra = split_overrides(overrides, CompareConfig)  # extra: passed on to every arm's student stage
    cfg = apply_overrides(CompareConfig(), mine)
    run_dir = Path(args.run_dir)
    teacher_dir = Path(args.teacher_dir) if args.teacher_dir else layout.teacher_dir(run_dir)
    teacher = read_model_info(teacher_dir, hint="make teacher")
    cfg = dataclasses.replace(cfg, arms=task_arms(cfg.arms, teacher, given="arms" in {override_key(o) for o in mine}))
    if cfg.holdout_rows is None:  # a tagger holds back the sentences its teacher held back (the same seed)
        cfg = dataclasses.replace(cfg, holdout_rows=1000 if teacher.task == "classification"
                                  else NER_PRESETS[cfg.preset].holdout_rows)
    out = claim_run_dir(run_dir, stage="compare") / "compare"
    if cfg.jobs < 1:
        raise ConfigError(f"--jobs={cfg.jobs}: expected 1 or more")
    with stage_lock(out):  # one compare per folder: two would train the same arm-seeds into one place
        claim_settings(out, cfg, extra=extra, teacher_dir=teacher_dir)
        return _run(cfg, teacher_dir=teacher_dir, teacher=teacher, out=out, extra=extra, argv=argv)


def claim_settings(out: Path, cfg: CompareConfig, *, extra: list[str], teacher_dir: Path) -> None:
    """Record what this folder's arm-seeds are trained with, or refuse a run with other settings: a
    finished arm-seed is kept, not retrained, so a second call with other overrides would put arms
    trained two ways into one table. Seeds, arms, jobs, threads and the student settings a resume
    may change (progress, eval_dev, ...) may change between calls."""
    neutral = {*StudentConfig.resume_neutral, "eval_dev"}  # eval_dev: dev logged, never used to choose
    extra = [o for o in extra if override_key(o) not in neutral]
    settings = {"teacher_dir": str(teacher_dir.resolve()), "preset": cfg.preset, "holdout_rows": cfg.holdout_rows,
                "ce_epochs": cfg.ce_epochs, "ce_patience": cfg.ce_patience, "student_overrides": sorted(extra)}
    path = out / layout.COMPARE_SETTINGS_FILE
    if path.is_file():
        before = json.loads(path.read_text())
        changed = [f"{key} {before.get(key)!r} -> {value!r}" for key, value in settings.items() if before.get(key) != value]
        if changed:
            raise ConfigError(f"{path}: this folder's arm-seeds were trained with other settings ({'; '.join(changed)});"
                              " use another --run-dir, or remove the folder to retrain")
        return
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


def run_jobs(todo: list[tuple[str, int]], train_arm, *, jobs: int, matched: bool) -> None:
    """Run ``train_arm(arm, seed)`` for each job, ``jobs`` at a time, seed-major (a partial run already
    has whole seeds to compare). A ce arm matched to its seed's other arms (``matched``) is queued after
    every other job and starts once its own seed's others are done (their figures set its schedule),
    not after every seed's: with 3 seeds on 2 workers, ce seed 0 runs beside the last kd seed."""
    first = [j for j in todo if not (matched and j[0] == "ce")]
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # threads only wait on the subprocesses
        started = {job: pool.submit(train_arm, *job) for job in first}

        def after_its_seed(arm: str, seed: int) -> None:
            # its seed's other jobs were queued first, so they are running or done: waiting cannot deadlock
            for (_, other_seed), future in started.items():
                if other_seed == seed:
                    future.result()
            train_arm(arm, seed)

        waiting = [pool.submit(after_its_seed, *job) for job in todo if job not in first]
        for future in [*started.values(), *waiting]:
            future.result()  # train_arm records its own failures; this re-raises a bug in it


def _run(cfg: CompareConfig, *, teacher_dir: Path, teacher: ModelInfo, out: Path, extra: list[str],
         argv: list[str]) -> int:
    """Train the missing arm-seeds, then write the report; 1 when a run failed."""
    score, metric = task_of(teacher.task).score, task_of(teacher.task).score_name  # accuracy, or entity F1
    teacher_acc = json.loads((teacher_dir / layout.METRICS_FILE).read_text())[score]
    failures: list[str] = []

    def train_arm(arm: str, seed: int) -> None:
        """One arm-seed as its own process (its own run directory and log); a failure is recorded."""
        arm_dir = out / arm / f"seed{seed}"
        t0 = time.perf_counter()
        schedule = ControlSchedule(cfg.ce_epochs, None, f"--ce_epochs={cfg.ce_epochs}")
        if arm == "ce" and cfg.ce_epochs is None:  # the steps its seed's other arms were given (they ran first)
            floor = CE_MIN_EPOCHS if teacher.task == "classification" else None
            schedule = matched_ce_schedule([layout.student_dir(out / a / f"seed{seed}") for a in cfg.arms if a != "ce"],
                                           floor=floor)
            say(f"compare: ce seed {seed} trains {schedule.why}")
        say(f"compare: {arm} seed {seed} -> {arm_dir} (log: {arm_dir / 'log.txt'})")
        status = run_stage("distill", arm_args(arm, seed, cfg, teacher_dir=teacher_dir, run_dir=arm_dir, extra=extra,
                                               schedule=schedule), log=arm_dir / "log.txt", threads=cfg.threads)
        if status != 0:
            failures.append(f"{arm} seed {seed}: exit status {status}, see {arm_dir / 'log.txt'}")
            say(f"compare: {failures[-1]}")
        else:
            say(f"compare: {arm} seed {seed} done in {time.perf_counter() - t0:.0f}s")

    todo = [(arm, seed) for seed in range(cfg.seeds) for arm in cfg.arms
            if not (layout.student_dir(out / arm / f"seed{seed}") / layout.METRICS_FILE).exists()]
    run_jobs(todo, train_arm, jobs=cfg.jobs, matched=cfg.ce_epochs is None and len(cfg.arms) > 1)
    failures.sort()
    results: dict[str, dict[int, dict]] = {}
    for seed in range(cfg.seeds):
        for arm in cfg.arms:
            metrics = layout.student_dir(out / arm / f"seed{seed}") / layout.METRICS_FILE
            if metrics.exists():
                results.setdefault(arm, {})[seed] = result = json.loads(metrics.read_text())
                print(f"compare: {arm} seed {seed}: {metric} {result[score]:.4f}", flush=True)
    summary = summarise(results, cfg.arms, cfg.seeds, score)
    command = "python -m distill compare " + " ".join(argv)
    atomic_write_text(out / "compare.json", json.dumps({"command": command, "config": dataclasses.asdict(cfg),
                                                        "extra_overrides": extra, "teacher_accuracy": teacher_acc,
                                                        "task": teacher.task, "score": score,
                                                        "failures": failures, **summary}, indent=2) + "\n")
    atomic_write_text(out / "compare.md", render(summary, teacher_acc, cfg, command, failures, metric))
    plot(summary, teacher_acc, out / "compare.png", metric)
    print((out / "compare.md").read_text())
    print(f"compare: wrote {out / 'compare.md'}, compare.json, compare.png")
    return 1 if failures else 0

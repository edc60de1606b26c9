"""experiments.compare: the summary's means, stds and paired differences from known per-seed figures,
the words that go with them, and a small end-to-end run on a tiny teacher (resumable per arm)."""

from __future__ import annotations

import json
import math
import shutil
import threading
from pathlib import Path

import pytest

from distill.config import ConfigError
from experiments.compare import (
    CompareConfig,
    arm_args,
    claim_settings,
    matched_ce_schedule,
    passes_curve,
    render,
    run_jobs,
    sentence,
    summarise,
)


def result(acc: float, steps: int = 10) -> dict:
    return {"accuracy": acc, "steps_done": steps, "samples_seen": 32 * steps, "train_rows": 100, "train_time_s": 1.0}


def test_summary_and_paired_differences():
    results = {"ce": {0: result(0.80), 1: result(0.82), 2: result(0.81)},
               "kd": {0: result(0.84), 1: result(0.85), 2: result(0.85)}}
    summary = summarise(results, ["ce", "kd"], 3)
    assert summary["arms"]["ce"]["mean"] == pytest.approx(0.81) and summary["arms"]["ce"]["std"] == pytest.approx(0.01)
    paired = summary["paired"]["kd - ce"]
    assert paired["diffs"] == pytest.approx({0: 0.04, 1: 0.03, 2: 0.04})
    mean = 0.11 / 3
    assert paired["mean"] == pytest.approx(mean)
    assert paired["std"] == pytest.approx(math.sqrt(((0.04 - mean) ** 2 * 2 + (0.03 - mean) ** 2) / 2))
    half = 4.303 * paired["std"] / math.sqrt(3)
    assert paired["ci95"] == pytest.approx([mean - half, mean + half])
    assert paired["exceeds_spread"] and paired["ci_excludes_zero"]
    assert "kd - ce: +3.67 points on average over 3 seeds; the difference exceeds its spread" in sentence(
        "kd - ce", paired)
    assert "pseudo" not in " ".join(summary["paired"])  # no pseudo arm: nothing compared against it


def test_a_difference_within_its_spread_says_so_and_missing_seeds_are_left_out():
    results = {"ce": {0: result(0.80), 1: result(0.84)}, "pseudo": {0: result(0.81), 1: result(0.82), 2: result(0.9)}}
    summary = summarise(results, ["ce", "pseudo"], 3)
    paired = summary["paired"]["pseudo - ce"]
    assert paired["n"] == 2 and paired["mean"] == pytest.approx(-0.005)
    assert not paired["exceeds_spread"] and not paired["ci_excludes_zero"]
    text = sentence("pseudo - ce", paired)
    assert "does not exceed its spread" in text and "includes zero" in text
    md = render(summary, 0.86, CompareConfig(seeds=3, arms=["ce", "pseudo"]), "python -m distill compare", ["kd seed 0"])
    assert "| ce | 82.00 | 2.83 | 80.00 | 84.00 | – |" in md
    assert "Failed runs" in md and "kd seed 0" in md


def _history(*points: tuple[int, float, float, float | None]) -> list[dict]:
    """History rows (step, epoch, held-back accuracy, dev accuracy or None when not logged)."""
    return [{"step": step, "epoch": epoch, "eval": {"accuracy": held, **({} if dev is None else {"dev_accuracy": dev})}}
            for step, epoch, held, dev in points]


def test_the_passes_curve_averages_each_evaluation_over_the_seeds_that_logged_dev():
    seed0 = {**result(0.80), "history": _history((10, 1.0, 0.70, 0.60), (20, 2.0, 0.80, 0.70), (30, 3.0, 0.9, 0.8))}
    seed1 = {**result(0.82), "history": _history((10, 1.0, 0.72, 0.64), (20, 2.0, 0.82, 0.76))}  # stopped early
    curve = passes_curve([seed0, seed1])
    assert [(c["step"], c["epoch"], c["n"]) for c in curve] == [(10, 1.0, 2), (20, 2.0, 2)]  # step 30: one seed only
    assert curve[1]["holdout"] == pytest.approx(0.81) and curve[1]["dev"] == pytest.approx(0.73)
    assert curve[0]["dev_std"] == pytest.approx(math.sqrt(2) * 0.02)
    assert passes_curve([{**result(0.8), "history": _history((10, 1.0, 0.7, None))}]) == []  # no --eval_dev
    summary = summarise({"kd": {0: seed0, 1: seed1}}, ["kd"], 2)
    md = render(summary, 0.9, CompareConfig(seeds=2, arms=["kd"]), "python -m distill compare", [])
    assert "| kd | 2.00 | 20 | 81.00 | 73.00 | 4.24 | 2 |" in md
    assert "against passes" not in render(summarise({"kd": {0: result(0.8)}}, ["kd"], 1), 0.9,
                                           CompareConfig(seeds=1, arms=["kd"]), "c", [])


def _arm(tmp_path, arm: str, *, total_steps: int, labelled: int, batch: int, epochs: int = 1, evals_per_epoch: int = 4):
    folder = tmp_path / arm / "seed0" / "student"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"total_steps": total_steps, "labelled_rows": labelled}))
    (folder / "train_config.json").write_text(json.dumps({"batch_size": batch, "epochs": epochs,
                                                          "evals_per_epoch": evals_per_epoch, "evals": None}))
    return folder


def test_the_ce_arm_is_given_the_steps_and_evaluations_of_the_largest_other_arm(tmp_path):
    # 500 labelled rows at batch 32: 15 steps an epoch; kd planned 640 steps over its 20,500 rows, 3 epochs x 4 evals
    kd = _arm(tmp_path, "kd", total_steps=640, labelled=500, batch=32, epochs=3)
    pseudo = _arm(tmp_path, "pseudo", total_steps=300, labelled=500, batch=32, epochs=5)
    schedule = matched_ce_schedule([pseudo, kd], floor=4)
    assert schedule.epochs == 43 and 43 * (500 // 32) >= 640 > 42 * (500 // 32)  # rounded up, never fewer steps
    assert schedule.evals == 12, "kd's 3 x 4 evaluations, not 43 x 4"
    assert "640 steps" in schedule.why and "kd arm" in schedule.why
    args = arm_args("ce", 0, CompareConfig(), teacher_dir=tmp_path, run_dir=tmp_path, extra=[], schedule=schedule)
    assert "--epochs=43" in args and "--evals=12" in args
    floored = matched_ce_schedule([_arm(tmp_path, "big", total_steps=20, labelled=640, batch=32)], floor=4)
    assert (floored.epochs, floored.evals) == (4, None)  # the floor decides: the preset's evaluations per epoch
    missing = matched_ce_schedule([tmp_path / "missing" / "seed0" / "student"], floor=None)
    assert (missing.epochs, missing.evals) == (None, None)  # the preset's
    plain = arm_args("ce", 0, CompareConfig(), teacher_dir=tmp_path, run_dir=tmp_path, extra=[], schedule=missing)
    assert not any(a.startswith(("--epochs=", "--evals=")) for a in plain)


def test_a_matched_ce_arm_starts_once_its_own_seed_is_done_not_every_seed():
    log, lock, ce0_started = [], threading.Lock(), threading.Event()

    def train_arm(arm: str, seed: int) -> None:
        with lock:
            log.append(("start", arm, seed))
        if (arm, seed) == ("ce", 0):
            ce0_started.set()
        if (arm, seed) == ("kd", 2):  # the last kd seed: ce seed 0 must be able to run beside it
            assert ce0_started.wait(timeout=30), "ce seed 0 waited for every seed's kd arm"
        with lock:
            log.append(("end", arm, seed))

    run_jobs([(arm, seed) for seed in range(3) for arm in ("ce", "kd")], train_arm, jobs=2, matched=True)
    assert sorted(log) == sorted([(e, a, s) for e in ("start", "end") for a in ("ce", "kd") for s in range(3)])
    for seed in range(3):  # its schedule is read from its seed's kd arm: that one has finished
        assert log.index(("end", "kd", seed)) < log.index(("start", "ce", seed))
    order = []
    run_jobs([("ce", 0), ("kd", 0)], lambda arm, seed: order.append(arm), jobs=1, matched=False)
    assert order == ["ce", "kd"]  # not matched (--ce_epochs given): the queue's order, no waiting


def test_every_arm_says_whether_it_uses_pseudo_labels_whatever_the_preset():
    from students.distill import stage_config, student_task

    for preset in ("few", "quick"):
        for arm in ("ce", "pseudo", "kd", "kd_layers", "pseudo_kd"):
            args = arm_args(arm, 0, CompareConfig(preset=preset, holdout_rows=100), teacher_dir=Path("t"),
                            run_dir=Path("r"), extra=[])
            cfg, _ = stage_config(args, student_task("classification"))
            assert cfg.pseudo_labels == (arm in ("pseudo", "pseudo_kd")), (preset, arm)
            assert (cfg.w_kd > 0) == (arm not in ("ce", "pseudo")), (preset, arm)  # pseudo_kd keeps the soft targets
    assert "pseudo_kd" not in CompareConfig().arms  # named arms only


def test_a_second_call_with_other_settings_is_refused_before_it_mixes_arms(tmp_path):
    out, teacher = tmp_path / "compare", tmp_path / "teacher"
    claim_settings(out, CompareConfig(), extra=["--temperature=2"], teacher_dir=teacher)
    # more seeds, other arms, jobs and threads: the same arm-seeds, so accepted
    claim_settings(out, CompareConfig(seeds=5, arms=["kd"], jobs=2, threads=1),
                   extra=["--progress=false", "--temperature=2", "--eval_dev=true"], teacher_dir=teacher)
    with pytest.raises(ConfigError, match=r"settings.json: .*student_overrides .*--temperature=0.5") as err:
        claim_settings(out, CompareConfig(), extra=["--temperature=0.5"], teacher_dir=teacher)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"ce_epochs None -> 20"):
        claim_settings(out, CompareConfig(ce_epochs=20), extra=["--temperature=2"], teacher_dir=teacher)
    with pytest.raises(ConfigError, match=r"teacher_dir"):
        claim_settings(out, CompareConfig(), extra=["--temperature=2"], teacher_dir=tmp_path / "other")
    assert json.loads((out / "settings.json").read_text())["student_overrides"] == ["--temperature=2"]  # kept


@pytest.mark.slow
def test_compare_end_to_end_on_a_tiny_teacher(tmp_path, sst2_small, tiny_bert_dir):
    from experiments.compare import main as compare
    from teachers.finetune import TeacherConfig, run

    run(TeacherConfig(data=str(sst2_small), base_model=str(tiny_bert_dir), max_length=32, epochs=1, batch_size=16,
                      lr=1e-3, transfer=["unlabeled"], progress=False), tmp_path)
    args = ["--run-dir", str(tmp_path), "--seeds=2", "--arms=ce,pseudo,kd", "--holdout_rows=32",
            "--max_length=32", "--batch_size=16", "--epochs=1", "--threads=1"]
    assert compare([*args, "--jobs=2"]) == 0  # two arm-seeds at a time; the ce arms after the others
    report = json.loads((tmp_path / "compare" / "compare.json").read_text())
    # ce matched to kd's 256 // 16 = 16 steps: ceil(16 / (224 // 16)) = 2 epochs, raised to the floor of 4
    assert report["arms"]["ce"]["steps"] == {"0": 56, "1": 56} and report["arms"]["kd"]["steps"]["0"] <= 16
    assert set(report["arms"]) == {"ce", "pseudo", "kd"} and report["arms"]["kd"]["n"] == 2
    assert set(report["paired"]) == {"pseudo - ce", "kd - ce", "kd - pseudo"}
    assert report["arms"]["ce"]["train_rows"] == {"0": 224, "1": 224}  # 256 labelled - 32 held back
    assert report["arms"]["kd"]["train_rows"] == {"0": 256, "1": 256}  # + 32 transfer rows
    for arm in ("ce", "kd"):
        metrics = json.loads((tmp_path / "compare" / arm / "seed1" / "student" / "metrics.json").read_text())
        assert metrics["checkpoint_chosen_on"] == "holdout" and metrics["seed"] == 1
    before = (tmp_path / "compare" / "kd" / "seed0" / "student" / "metrics.json").stat().st_mtime_ns
    assert compare(args) == 0  # everything is there: nothing retrains
    assert (tmp_path / "compare" / "kd" / "seed0" / "student" / "metrics.json").stat().st_mtime_ns == before
    assert (tmp_path / "compare" / "compare.png").stat().st_size > 1000
    # one job at a time retrains a removed arm-seed to the same weights as when two ran at once
    kd1 = tmp_path / "compare" / "kd" / "seed1" / "student" / "model.safetensors"
    parallel = kd1.read_bytes()
    shutil.rmtree(tmp_path / "compare" / "kd" / "seed1")
    assert compare([*args, "--jobs=1"]) == 0
    assert kd1.read_bytes() == parallel

"""Strategy-aware teacher defaults (one table, the source saved, already_trained on resolved
values) and ``python -m distill strategies``: the recommendation rule and the report from known
figures, and one small end-to-end run on the tiny model (resumable, a failing strategy recorded)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from distill.config import ConfigError, save_config
from distill.modeling import STRATEGIES
from experiments.strategies import recommend, render, student_sentence
from teachers.finetune import (
    PRESET_LR_SCALE,
    PRESETS,
    STRATEGY_DEFAULTS,
    TeacherConfig,
    already_trained,
    parse_args,
    resolve_defaults,
)


def test_every_strategy_has_a_default_and_the_presets_leave_lr_to_it():
    assert set(STRATEGY_DEFAULTS) == set(STRATEGIES)
    assert all(p.lr is None for p in PRESETS.values())
    assert {name: p.preset for name, p in PRESETS.items()} == {"quick": "quick", "full": "full", "mpnet": "mpnet",
                                                               "few": "few"}
    assert set(PRESET_LR_SCALE) == set(PRESETS)


def test_the_mpnet_presets_pair_the_110m_teacher_with_the_packaged_minilm_student():
    from distill.modeling import PACKAGED
    from students.config import PRESETS as STUDENT_PRESETS

    teacher, _ = parse_args(["--preset", "mpnet"])
    assert teacher.base_model == "mpnet" and resolve_defaults(teacher).lr == STRATEGY_DEFAULTS["full"] / 2
    student = STUDENT_PRESETS["mpnet"]
    assert (student.student, student.pretrained, student.pretrained_layers) == ("pretrained", PACKAGED, None)
    assert set(STUDENT_PRESETS) == set(PRESETS)  # make PRESET=... passes one name to every stage


def test_every_preset_chooses_checkpoints_on_the_same_held_back_rows_and_the_control_runs_its_schedule():
    from students.config import PRESETS as STUDENT_PRESETS
    from students.distill import parse_args as student_args

    for name, teacher in PRESETS.items():
        student = STUDENT_PRESETS[name]
        assert teacher.holdout_rows == student.holdout_rows > 0, name  # the same rows: drawn by the data seed
        assert student.ce_patience == 0 and student.ce_epochs == 4, name  # compare's CE protocol
    from students.config import NER_PRESETS as NER_STUDENTS
    from teachers.finetune import NER_PRESETS

    ner_teacher, _ = parse_args(["--task=ner"])  # a tagger's presets hold back fewer, shorter examples
    assert ner_teacher.holdout_rows == NER_PRESETS["quick"].holdout_rows == NER_STUDENTS["quick"].holdout_rows
    assert student_args(["--holdout_rows=50"])[0].holdout_rows == 50


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("preset", ["quick", "full", "mpnet"])
def test_none_takes_the_strategys_default_for_the_preset(strategy, preset):
    cfg = resolve_defaults(dataclasses.replace(PRESETS[preset], strategy=strategy))
    assert cfg.lr == STRATEGY_DEFAULTS[strategy] * PRESET_LR_SCALE[preset]
    assert cfg.lr_source.startswith(f"default for {strategy}, {preset} preset")
    assert resolve_defaults(cfg) == cfg  # a resolved config (as read back from train_config.json) stays


def test_a_given_lr_wins_and_says_so():
    cfg, _ = parse_args(["--strategy=lora", "--lr=3e-3"])
    resolved = resolve_defaults(cfg)
    assert resolved.lr == 3e-3 and resolved.lr_source == "given"
    cfg, _ = parse_args(["--preset", "full", "--strategy=frozen"])
    assert cfg.lr is None and resolve_defaults(cfg).lr == STRATEGY_DEFAULTS["frozen"] * PRESET_LR_SCALE["full"]
    with pytest.raises(ConfigError, match="preset"):
        resolve_defaults(TeacherConfig(preset="huge"))


def test_already_trained_compares_the_resolved_lr(tmp_path):
    cfg = dataclasses.replace(PRESETS["quick"], strategy="lora")
    save_config(resolve_defaults(cfg), tmp_path / "train_config.json")
    (tmp_path / "metrics.json").write_text("{}")
    assert already_trained(tmp_path, cfg)  # unresolved lr=None matches the saved default
    assert already_trained(tmp_path, dataclasses.replace(cfg, lr=STRATEGY_DEFAULTS["lora"]))  # given, same value
    with pytest.raises(ConfigError, match=r"lr: .* -> 0.005"):
        already_trained(tmp_path, dataclasses.replace(cfg, lr=5e-3))
    # a train_config.json written before lr_source and preset existed still matches on its lr
    old = json.loads((tmp_path / "train_config.json").read_text())
    del old["lr_source"], old["preset"]
    (tmp_path / "train_config.json").write_text(json.dumps(old))
    assert already_trained(tmp_path, cfg)


def row(strategy: str, acc: float, seconds: float, trainable: int, student: float | None = None) -> dict:
    return {"strategy": strategy, "accuracy": acc, "macro_f1": acc - 0.001, "trainable_parameters": trainable,
            "parameters": 22_713_986, "train_time_s": seconds, "train_samples_per_s": 8000 / seconds,
            "peak_rss_mb": 900.0, "saved_mb": 90.9, "lr": 1e-4, "lr_source": "default for x", "teacher_wall_s": seconds,
            "student_accuracy": student, "student_macro_f1": student, "student_wall_s": None if student is None else 60,
            "dev_rows": 872}


ROWS = [row("full", 0.866, 142, 22_713_986, 0.84), row("top-n", 0.849, 120, 3_697_538, 0.835),
        row("frozen", 0.74, 84, 148_610, 0.80), row("lora", 0.857, 198, 74_498, 0.838)]


def test_recommend_takes_the_cheapest_within_the_tolerance():
    by_time = recommend(ROWS, 0.01, "train_time_s")  # within 1 point: full, lora; full trains faster
    assert (by_time["pick"], by_time["best"], by_time["within"]) == ("full", "full", ["full", "lora"])
    assert "best dev accuracy (86.60)" in by_time["reason"] and "cheapest by train time" in by_time["reason"]
    by_params = recommend(ROWS, 0.01, "trainable_parameters")
    assert by_params["pick"] == "lora"
    assert "0.90 points below the best (full, 86.60)" in by_params["reason"]
    assert recommend(ROWS, 0.02, "train_time_s")["pick"] == "top-n"  # 1.7 points below, fastest of the three
    alone = recommend(ROWS, 0.001, "train_time_s")
    assert alone["pick"] == "full" and "no other strategy comes within 0.10 points" in alone["reason"]
    assert recommend([], 0.01, "train_time_s")["pick"] is None
    with pytest.raises(ConfigError):
        recommend(ROWS, 0.01, "vibes")


def test_report_has_the_table_the_rule_the_students_and_the_failures():
    choice = recommend(ROWS, 0.01, "train_time_s")
    md = render(ROWS, choice, "python -m distill strategies", ["top-n student: exit status 1, see x.log"])
    assert ("| lora | 0.0001 (default) | 85.70 | 85.60 | 74,498 | 22,713,986 | 198 | 40.4 | 900 | 90.9 | 83.80 |"
            in md)
    assert "Rule: of the strategies within 1.00 points of the best dev accuracy, the one with the least train time" in md
    assert "Pick **full**" in md and "Failed runs" in md and "top-n student" in md
    assert "the best is distilled from full (84.00); all 4 lie within 4.00 points" in md
    assert "(lora) is 0.20 points below" in student_sentence(ROWS, "lora")
    assert student_sentence([row("full", 0.8, 1, 1)], "full") is None


@pytest.mark.slow
def test_strategies_end_to_end_on_the_tiny_model(tmp_path, sst2_small, tiny_bert_dir):
    from experiments.strategies import main

    args = ["--data", str(sst2_small), "--run-dir", str(tmp_path), f"--base_model={tiny_bert_dir}",
            "--max_length=32", "--epochs=1", "--batch_size=16", "--transfer=", "--threads=1",
            "--holdout_rows=40"]  # the presets hold back 1,000 rows; sst2_small has 256
    # top-n with 10 of the tiny model's 4 layers fails in its own process; full and frozen go on
    assert main([*args, "--strategies=full,top-n,frozen", "--top_n=10"]) == 1
    out = tmp_path / "strategies"
    report = json.loads((out / "strategies.json").read_text())
    assert [r["strategy"] for r in report["rows"]] == ["full", "frozen"]
    assert report["failures"] and report["failures"][0].startswith("top-n teacher: exit status")
    by = {r["strategy"]: r for r in report["rows"]}
    assert by["frozen"]["lr"] == STRATEGY_DEFAULTS["frozen"] and by["full"]["lr"] == STRATEGY_DEFAULTS["full"]
    assert by["frozen"]["trainable_parameters"] < by["full"]["trainable_parameters"]
    assert all(r["student_accuracy"] is not None and r["saved_mb"] > 0 for r in report["rows"])
    saved = json.loads((out / "frozen" / "teacher" / "train_config.json").read_text())
    assert saved["lr"] == STRATEGY_DEFAULTS["frozen"] and saved["lr_source"].startswith("default for frozen, quick")
    assert report["recommendation"]["pick"] in ("full", "frozen")
    assert (out / "strategies.png").stat().st_size > 0 and "Rule:" in (out / "strategies.md").read_text()
    # resumable: a rerun of the finished ones reads them instead of training again
    assert main([*args, "--strategies=full,frozen", "--top_n=10"]) == 0
    assert (out / "full" / "teacher.log").read_text().count("$ python -m distill teacher") == 1
    assert (out / "frozen" / "student.log").read_text().count("$ python -m distill distill") == 1
    # a finished teacher asked for with other training settings is an error, not silently reused
    with pytest.raises(ConfigError, match="other settings"):
        main([*args, "--strategies=full", "--top_n=10", "--lr=0.5"])


def test_the_few_presets_are_the_few_label_recipe_measured(tmp_path):
    from students.config import NER_PRESETS as STUDENT_NER
    from students.config import PRESETS as STUDENT_PRESETS

    teacher, _ = parse_args(["--preset", "few"])
    student = STUDENT_PRESETS["few"]
    assert teacher.base_model == "mpnet" and resolve_defaults(teacher).lr == resolve_defaults(parse_args(["--preset", "mpnet"])[0]).lr
    assert teacher.max_train_rows is None and teacher.holdout_rows == student.holdout_rows == 100  # the same rows held back
    assert (student.pseudo_labels, student.epochs, student.patience, student.ce_schedule) == (True, 3, 0, "matched")
    assert (student.student, student.pretrained_layers, student.freeze_embeddings) == ("pretrained", 2, True)
    assert "few" not in STUDENT_NER  # no tagger recipe was measured to gain from pseudo-labels
    from distill.config import ConfigError

    with pytest.raises(ConfigError, match=r"^--preset few: no such preset for --task=ner; choose one of full, mpnet, quick$"):
        parse_args(["--preset", "few", "--task=ner"])

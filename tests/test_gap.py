"""experiments.gap: the rows from known per-seed metrics and bench figures (every finished seed
counted, missing ones shown as missing), the table and plot, the bad-input errors, and a small
end-to-end run on a tiny teacher (train, export, bench, resume)."""

from __future__ import annotations

import json

import pytest

from distill.config import ConfigError
from experiments.gap import GapConfig, gap_rows, main, plot, render


def write_metrics(out, student, arm, seed, acc, params=1000, seconds=100.0):
    path = out / student / "compare" / arm / f"seed{seed}" / "student" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"accuracy": acc, "parameters": params, "train_time_s": seconds}))


def bench_row(model, variant, ms, mb=1.0):
    return {"model": model, "variant": variant, "p50_b1_ms": ms, "size_mb": mb}


def test_rows_count_every_finished_seed_and_ratios_come_from_one_bench(tmp_path):
    write_metrics(tmp_path, "minilm_l2", "ce", 0, 0.80, params=900)
    write_metrics(tmp_path, "minilm_l2", "ce", 1, 0.82, params=900)
    write_metrics(tmp_path, "minilm_l2", "kd", 0, 0.85, params=1000, seconds=300.0)
    write_metrics(tmp_path, "minilm_l2", "kd", 1, 0.85, params=1000, seconds=500.0)
    write_metrics(tmp_path, "minilm_l2", "ce", 2, 0.81, params=900)  # a trimmed table: smaller on fewer rows
    write_metrics(tmp_path, "minilm_l1", "kd", 0, 0.83, params=500)  # its ce arm never finished
    bench = [bench_row("teacher", "pytorch_fp32", 40.0), bench_row("teacher", "ort_int8", 10.0),
             bench_row("reference", "pytorch_fp32", 8.0),
             bench_row("minilm_l2", "ort_int8", 0.5, mb=14.2), bench_row("minilm_l2", "pytorch_fp32", 3.0),
             bench_row("minilm_l1", "ort_int8", 0.4)]
    rows = gap_rows(["minilm_l2", "minilm_l1"], tmp_path, bench, teacher_acc=0.90, reference_acc=0.86)
    l2, l1 = rows
    assert l2["ce_n"] == 3 and l2["ce"] == pytest.approx(0.81) and l2["kd_n"] == 2 and l2["kd"] == pytest.approx(0.85)
    # paired over seeds 0 and 1: diffs 0.05, 0.03 -> mean 0.04 +- 12.706 * 0.01414 / sqrt(2)
    assert l2["kd_minus_ce_ci95"] == pytest.approx([0.04 - 0.12706, 0.04 + 0.12706], abs=1e-4)
    assert l2["speedup_vs_teacher_int8"] == pytest.approx(20.0) and l2["kd_train_s"] == pytest.approx(400.0)
    assert l2["parameters"] == 1000  # the KD student's: the one exported and timed
    assert l2["kd_minus_ce"] == pytest.approx(0.04) and l2["kd_share"] == pytest.approx(0.85 / 0.90)
    assert l2["int8_mb"] == 14.2 and l2["int8_p50_b1_ms"] == 0.5  # int8, not the PyTorch row
    assert l2["speedup_vs_teacher"] == pytest.approx(80.0) and l2["speedup_vs_reference"] == pytest.approx(16.0)
    assert l2["kd_minus_reference"] == pytest.approx(-0.01)
    assert l1["ce"] is None and l1["kd_minus_ce"] is None and l1["ce_n"] == 0 and l1["parameters"] == 500
    teachers = [{"name": "teacher", "path": "t", "parameters": 9, "accuracy": 0.90, "p50_b1_ms": 40.0, "int8_mb": 100},
                {"name": "reference", "path": "r", "parameters": 5, "accuracy": 0.86, "p50_b1_ms": 8.0, "int8_mb": 20}]
    md = render(rows, teachers, "python -m distill gap", ["minilm_l1: compare exit status 1"])
    assert ("| minilm_l2 | 1,000 | 14.2 | 0.50 | 20.0× | 80.0× | 16.0× | 81.00 (3) | 85.00 (2) | +4.00 [-8.71, +16.71] "
            "| 90.0 | 94.4 | -1.00 | 100 / 400 |") in md
    assert "| minilm_l1 | 500 | 1.0 | 0.40 | 25.0× | 100.0× | 20.0× | – (0) | 83.00 (1) | – |" in md
    assert "Failed steps" in md
    plot(rows, teachers, tmp_path / "gap.png")  # the student with one arm missing is left off the lines
    assert (tmp_path / "gap.png").stat().st_size > 1000


def test_bad_options_fail_before_any_training(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown student\(s\) \['minilm_l9'\]"):
        main(["--run-dir", str(tmp_path), "--students=minilm_l9"])
    with pytest.raises(ConfigError, match="--seeds=0"):
        main(["--run-dir", str(tmp_path), "--seeds=0"])
    with pytest.raises(ConfigError, match="unknown config key 'no_such_key'"):
        main(["--run-dir", str(tmp_path), "--no_such_key=1"])  # not gap's, compare's or the student stage's
    assert not (tmp_path / "gap").exists()
    assert GapConfig().seeds == 1


def test_a_start_model_still_to_assemble_fails_before_any_training(tmp_path, monkeypatch):
    from distill import assets

    monkeypatch.setattr(assets, "PARAPHRASE_DEST", tmp_path / "assets" / "paraphrase-MiniLM-L3-v2")
    with pytest.raises(assets.AssetError, match=r"not usable \(not assembled\): run `make paraphrase-l3` first$"):
        main(["--run-dir", str(tmp_path), "--students=minilm_l2,paraphrase_l3"])
    assert not (tmp_path / "gap").exists()


@pytest.mark.slow
def test_gap_end_to_end_on_a_tiny_teacher(tmp_path, sst2_small, tiny_bert_dir):
    from teachers.finetune import TeacherConfig, run

    run(TeacherConfig(data=str(sst2_small), base_model=str(tiny_bert_dir), max_length=32, epochs=1, batch_size=16,
                      lr=1e-3, transfer=["unlabeled"], progress=False), tmp_path)
    args = ["--run-dir", str(tmp_path), "--students=minilm_l2,minilm_l1", f"--pretrained={tiny_bert_dir}",
            f"--reference={tmp_path / 'teacher'}", "--holdout_rows=32", "--ce_epochs=1", "--max_length=32",
            "--batch_size=16", "--epochs=1", "--threads=1", "--jobs=2", "--reps_b1=20", "--reps_fixed=5"]
    out = tmp_path / "gap"
    assert main([*args, "--bench=false"]) == 0  # trained only
    assert (out / "minilm_l1" / "compare" / "kd" / "seed0" / "student" / "metrics.json").is_file()
    assert not (out / "models").exists() and not (out / "gap.md").exists()
    assert main(args) == 0
    report = json.loads((out / "gap.json").read_text())
    l2, l1 = report["rows"]
    assert (l2["student"], l1["student"]) == ("minilm_l2", "minilm_l1")
    assert l2["ce_n"] == l2["kd_n"] == 1 and 0 <= l2["kd"] <= 1 and l1["int8_p50_b1_ms"] > 0
    assert l1["parameters"] < l2["parameters"]  # one layer fewer
    kd_metrics = json.loads((out / "minilm_l2" / "compare" / "kd" / "seed0" / "student" / "metrics.json").read_text())
    assert kd_metrics["student"]["own_layers_kept"] == [0, 1]
    assert {t["name"] for t in report["teachers"]} == {"teacher", "reference"}
    assert (out / "models" / "minilm_l2").resolve() == (out / "minilm_l2" / "compare" / "kd" / "seed0" / "student")
    assert (out / "gap.png").stat().st_size > 1000
    # a rerun with fewer seeds trains and exports nothing again, and keeps seed 1 in the summary
    assert main([*args, "--seeds=2", "--students=minilm_l1", "--bench=false"]) == 0
    before = (out / "models" / "onnx" / "minilm_l1" / "validation.json").stat().st_mtime_ns
    trained = (out / "minilm_l1" / "compare" / "kd" / "seed1" / "student" / "metrics.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "models" / "onnx" / "minilm_l1" / "validation.json").stat().st_mtime_ns == before
    assert (out / "minilm_l1" / "compare" / "kd" / "seed1" / "student" / "metrics.json").stat().st_mtime_ns == trained
    l1 = json.loads((out / "gap.json").read_text())["rows"][1]
    assert l1["ce_n"] == l1["kd_n"] == 2
    assert json.loads((out / "minilm_l1" / "compare" / "compare.json").read_text())["arms"]["kd"]["n"] == 2

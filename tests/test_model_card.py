"""distill/model_card.py on a tiny run: every model folder (teacher, student, student_ce and each
of their ONNX variants) has a README.md whose YAML front matter parses and whose figures are the
run's JSON files'; bench rewrites the cards with its latencies; and one max length per model:
export records its own, bench and predict use it unless told otherwise (and then say so)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from distill import predict
from distill.model_card import VARIANTS, render_card, write_card
from export import bench
from export.bench import bench_max_length
from export.onnx_export import main as export_main
from students import distill as student_stage
from teachers.finetune import TeacherConfig
from teachers.finetune import run as run_teacher

MODELS = ("teacher", "student", "student_ce")
TINY_BENCH = ["--warmup=1", "--reps_b1=4", "--reps_fixed=2", "--fixed_len=32", "--batches=1", "--batch_size=4",
              "--threads=1", "--gemm_sizes=16x32x16", "--gemm_repeats=1", "--gemm_sample_gflop=0.0001"]
LONG_TEXT = ("a gripping , beautifully acted film that goes on and on with many more words than sixteen tokens hold , "
             "long past the point where the shorter cut stops reading .\n")


def read_card(folder: Path) -> tuple[dict, str]:
    """(front matter as yaml.safe_load reads it, Markdown body) of ``folder``'s README.md."""
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), folder
    head, body = text[len("---\n"):].split("\n---\n", 1)
    meta = yaml.safe_load(head)
    assert isinstance(meta, dict), folder
    return meta, body


def figures(meta: dict) -> dict[str, float]:
    """model-index metric name -> value."""
    [entry] = meta["model-index"]
    [result] = entry["results"]
    assert result["dataset"]["split"] == "dev"
    return {m["name"]: m["value"] for m in result["metrics"]}


def table_value(body: str, name: str) -> str:
    """The value cell of the row ``| name | value |`` of a card's figure table."""
    [value] = re.findall(rf"^\| {re.escape(name)} \| ([^|]+) \|$", body, flags=re.M)
    return value.strip()


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory, sst2_small, tiny_bert_dir) -> Path:
    """teacher -> student + student_ce -> export (three variants each), at max length 32."""
    run = tmp_path_factory.mktemp("card_run")
    run_teacher(TeacherConfig(data=str(sst2_small), base_model=str(tiny_bert_dir), max_length=32, epochs=1,
                              batch_size=16, lr=1e-3, evals_per_epoch=1, patience=0, eval_batch_size=64,
                              transfer=["unlabeled"], progress=False), run)
    assert student_stage.main(["--run-dir", str(run), "--max_length=32", "--epochs=1", "--ce_epochs=1",
                               "--batch_size=16", "--lr=1e-3", "--eval_batch_size=64", "--evals_per_epoch=1",
                               "--patience=0", "--holdout_rows=0", "--progress=false", "--temperature=3",
                               "--w_kd=0.7", "--w_ce=0.3"]) == 0
    assert export_main(["--run-dir", str(run)]) == 0
    return run


def test_every_pytorch_model_has_a_card_with_the_runs_figures(exported_run, tiny_bert_dir):
    for name in MODELS:
        folder = exported_run / name
        meta, body = read_card(folder)
        metrics = json.loads((folder / "metrics.json").read_text())
        info = json.loads((folder / "distill.json").read_text())
        assert (meta["library_name"], meta["pipeline_tag"]) == ("transformers", "text-classification")
        assert meta["datasets"] == [info["data"]["path"]] and meta["metrics"] == ["accuracy", "f1"]
        assert name.replace("_", "-") in meta["tags"]
        assert meta["base_model"] == (str(tiny_bert_dir) if name == "teacher" else str(exported_run / "teacher"))
        got = figures(meta)
        assert got == {"dev accuracy": metrics["accuracy"], "dev macro-F1": metrics["macro_f1"]}
        for figure, value in got.items():
            assert table_value(body, figure) == f"{value:.4f}"
        assert f"- max length: **{info['max_length']} tokens**" in body and info["max_length"] == 32
        assert "- 2 labels, id: name: 0: `0`, 1: `1`" in body and info["labels"] == ["0", "1"]
        assert f'AutoModelForSequenceClassification.from_pretrained("{folder}")' in body
        assert "## Limits" in body and "reads at most 32 tokens" in body
        share = metrics["data_checks"]["dev"]["over_max_length_share"]
        assert f"{share:.1%} of the dev rows were longer" in body
        validation = json.loads((exported_run / "onnx" / name / "validation.json").read_text())
        int8 = validation["variants"]["int8"]["figures"]
        assert f"| int8 | `{exported_run / 'onnx' / name / 'int8'}` | {int8['accuracy']:.4f} |" in body
        assert "Not timed since" in body  # no bench yet


def test_the_student_card_says_how_it_was_distilled(exported_run):
    meta, body = read_card(exported_run / "student")
    m = json.loads((exported_run / "student" / "metrics.json").read_text())
    teacher = json.loads((exported_run / "teacher" / "metrics.json").read_text())
    assert "knowledge-distillation" in meta["tags"]
    assert f"distilled from the teacher `{exported_run / 'teacher'}`" in body
    assert f"dev accuracy {teacher['accuracy']:.4f})" in body
    t, w_kd, w_ce = (float(x) for x in re.search(
        r"\*\*T = (\S+)\*\*, \*\*w_kd \(alpha\) = (\S+)\*\*, \*\*w_ce = (\S+)\*\*", body).groups())
    assert (t, w_kd, w_ce) == (m["temperature"], m["w_kd"], m["w_ce"]) == (3.0, 0.7, 0.3)
    labelled, transfer = re.search(r"(\d+) labelled rows .* plus \*\*(\d+) transfer rows \(test_unlabeled\)", body).groups()
    assert (int(labelled), int(transfer)) == (m["labelled_rows"], m["transfer_rows"]) == (256, 32)
    _, control = read_card(exported_run / "student_ce")
    assert "CE-only control" in control and "not distilled" in control and "T = " not in control


def test_every_onnx_variant_has_its_own_card_with_its_validation(exported_run):
    for name in MODELS:
        validation = json.loads((exported_run / "onnx" / name / "validation.json").read_text())
        for variant in VARIANTS:
            folder = exported_run / "onnx" / name / variant
            meta, body = read_card(folder)
            own = validation["variants"][variant]
            assert (meta["library_name"], meta["pipeline_tag"]) == ("optimum", "text-classification")
            assert meta["base_model"] == str(exported_run / name) and {"onnx", variant} <= set(meta["tags"])
            assert meta.get("base_model_relation") == ("quantized" if variant == "int8" else None)
            got = figures(meta)
            assert got == {"dev accuracy": own["figures"]["accuracy"],
                           "dev labels equal to PyTorch fp32's": own["figures"]["agreement"]}
            for figure, value in got.items():
                assert table_value(body, figure) == f"{value:.4f}"
            checks = re.findall(r"^\| (\w+) \| [^|]* \| [^|]* \| (yes|\*\*no\*\*) \|$", body, flags=re.M)
            assert checks == [(c["name"], "yes") for c in own["checks"]]  # every check, in order, all passed
            assert f'ORTModelForSequenceClassification.from_pretrained("{folder}")' in body
            assert f"- max length: **{validation['max_length']} tokens**" in body
            assert not [p for p in (exported_run / "onnx").iterdir() if p.name.startswith(".")]  # staging gone


def test_bench_rewrites_the_cards_with_its_latency(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)  # copy2: the files keep their times, so the cards' freshness holds
    assert bench.main(["--run-dir", str(run), *TINY_BENCH]) == 0
    rows = json.loads((run / "bench" / "bench.json").read_text())["rows"]
    for name in MODELS:
        own = {r["variant"]: r for r in rows if r["model"] == name}
        _, body = read_card(run / name)
        for variant, r in own.items():  # the PyTorch card: every variant's row, int8 accuracy among them
            assert (f"| {variant} | {r['dev_accuracy']:.4f} | {r['size_mb']:.1f} | {r['p50_b1_ms']:.2f} / "
                    f"{r['p90_b1_ms']:.2f} | {r['p50_fixed_ms']:.2f} | {r['throughput_ex_s']:.1f} |") in body
        for sub, variant in (("o2", "ort_fp32_o2"), ("int8", "ort_int8")):
            _, body = read_card(run / "onnx" / name / sub)
            assert f"| {variant} | {own[variant]['dev_accuracy']:.4f} |" in body
            assert f"{own[variant]['p50_b1_ms']:.2f} / {own[variant]['p90_b1_ms']:.2f}" in body
        assert "times the O2 and int8 variants, not this one" in read_card(run / "onnx" / name / "fp32")[1]
    # a model newer than the bench (here: its weights touched) drops the figures it no longer has
    later = os.stat(run / "bench" / "bench.json").st_mtime + 10
    os.utime(run / "student" / "model.safetensors", (later, later))
    text = render_card(run / "student")
    assert "Not timed since" in text and "ONNX variants (`make export`)" not in text
    write_card(run / "teacher")  # re-rendered with nothing new: the same card
    assert (run / "teacher" / "README.md").read_text() == render_card(run / "teacher")


def test_a_card_with_few_files_still_renders(tmp_path, exported_run):
    """A model folder with only distill.json and weights (no metrics.json, no export): the card
    says what is missing instead of failing."""
    folder = tmp_path / "student"
    shutil.copytree(exported_run / "student", folder)
    (folder / "metrics.json").unlink()
    (folder / "train_config.json").unlink()
    write_card(folder)
    meta, body = read_card(folder)
    assert "model-index" not in meta and "No dev figures recorded" in body and "make export" in body


# ----------------------------------------------------------------------------- one max length per model


def test_bench_and_predict_max_length_rules():
    assert bench_max_length("student", None, 16) == (16, None)
    assert bench_max_length("student", 16, 16) == (16, None)
    length, line = bench_max_length("student", 24, 16)
    assert length == 24 and line.startswith("student: --max_length=24 differs from the 16 tokens") and "\n" not in line


def test_export_records_its_max_length_and_bench_and_predict_use_it(exported_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(exported_run / "teacher", run / "teacher")
    assert export_main(["--run-dir", str(run), "--models=teacher", "--max_length=16"]) == 0
    assert "--max_length=16, trained at 32" in capsys.readouterr().out
    validation = json.loads((run / "onnx" / "teacher" / "validation.json").read_text())
    assert (validation["max_length"], validation["trained_max_length"]) == (16, 32)
    for variant in VARIANTS:
        folder = run / "onnx" / "teacher" / variant
        assert json.loads((folder / "distill.json").read_text())["max_length"] == 16
        body = read_card(folder)[1]
        assert "- max length: **16 tokens** per example (export validated at this length; the PyTorch model was " \
               "trained at 32)" in body
    assert json.loads((run / "teacher" / "distill.json").read_text())["max_length"] == 32  # the model's own: kept

    assert bench.main(["--run-dir", str(run), "--models=teacher", *TINY_BENCH]) == 0
    result = json.loads((run / "bench" / "bench.json").read_text())
    assert {(r["max_length"], r["export_max_length"]) for r in result["rows"]} == {(16, 16)}
    assert not [w for w in result["warnings"] if "max_length" in w]
    capsys.readouterr()
    assert bench.main(["--run-dir", str(run), "--models=teacher", *TINY_BENCH, "--max_length=24"]) == 0
    result = json.loads((run / "bench" / "bench.json").read_text())
    assert {r["max_length"] for r in result["rows"]} == {24}
    assert [w for w in result["warnings"] if "max_length" in w] == [
        "teacher: --max_length=24 differs from the 16 tokens its export was validated at "
        "(onnx/teacher/validation.json): timed at 24, so its figures and the validated ones differ"]
    assert "dev rows at max length 24 (not 16)" in read_card(run / "onnx" / "teacher" / "int8")[1]

    source = tmp_path / "long.txt"
    source.write_text(LONG_TEXT)
    outputs = {}
    for given in (None, 16, 32):
        target = tmp_path / f"out_{given}.jsonl"
        capsys.readouterr()
        predict.predict(run / "onnx" / "teacher" / "int8", str(source), str(target),
                        predict.PredictConfig(max_length=given))
        outputs[given] = (target.read_text(), [line for line in capsys.readouterr().err.splitlines()
                                               if "--max_length" in line])
    assert outputs[None] == (outputs[16][0], []) and outputs[16][1] == []  # the recorded 16, said nowhere
    assert outputs[32][0] != outputs[None][0]  # 32 tokens read: another result
    assert outputs[32][1] == [f"predict: --max_length=32 differs from the 16 tokens "
                              f"{run / 'onnx' / 'teacher' / 'int8' / 'distill.json'} records (the length its figures "
                              "were measured at); reading rows at 32"]

"""export.onnx_export: three validated variants per model, loadable by optimum and a pipeline,
and a failed validation that exits non-zero, lists every failure and never replaces a good export."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distill.artifacts import ModelInfo, write_model_info
from distill.config import ConfigError
from distill.data import DataSpec, load_dataset
from distill.int8 import machine_facts
from export import onnx_export
from export.onnx_export import VARIANTS, ExportError, main

REPO = Path(__file__).resolve().parents[1]
CHECKS = ["onnx_checker", "ort_session", "input_names", "output_names", "dynamic_axes", "new_shape"]


def make_model_dir(out: Path, tiny_bert_dir: Path, data_dir: Path, *, layers: int | None = None,
                   head_scale: float = 1.0) -> Path:
    """A trained-model directory as the teacher/student stages write it: the tiny BERT as a 2-class
    classifier (random head, its weights times ``head_scale``: 100 gives logits far apart, so most
    rows are decided), tokenizer, train_config.json and metrics.json."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    label_map = load_dataset(DataSpec(path=str(data_dir))).label_map
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, num_labels=2, id2label=label_map.id2label, label2id=label_map.label2id
    )
    if layers is not None:  # a shallower "student": the first layers of the same model
        model.bert.encoder.layer = model.bert.encoder.layer[:layers]
        model.config.num_hidden_layers = layers
    with torch.no_grad():
        model.classifier.weight.mul_(head_scale)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(out)
    write_model_info(out, ModelInfo(role=out.name, task="classification", labels=label_map.names, max_length=64,
                                    data=DataSpec(path=str(data_dir))))
    (out / "metrics.json").write_text(json.dumps({"accuracy": 0.5}))
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory, tiny_bert_dir, sst2_small) -> Path:
    """runs/<RUN> with teacher/ and student/ exported and validated once for this module."""
    run = tmp_path_factory.mktemp("run")
    make_model_dir(run / "teacher", tiny_bert_dir, sst2_small)
    make_model_dir(run / "student", tiny_bert_dir, sst2_small, layers=2)
    assert main(["--run-dir", str(run)]) == 0
    return run


def test_three_variants_exist_and_validate(exported_run):
    report = json.loads((exported_run / "onnx" / "validation.json").read_text())
    assert report["passed"] and report["failures"] == []
    assert sorted(report["models"]) == ["student", "teacher"]  # student_ce absent: skipped, not an error
    for model in ("teacher", "student"):
        root = exported_run / "onnx" / model
        own = json.loads((root / "validation.json").read_text())
        assert own["installed"] and own["passed"] and own["dev_rows"] == 64  # the whole dev split
        for variant in VARIANTS:
            for name in ("model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json"):
                assert (root / variant / name).is_file(), (variant, name)
            entry = own["variants"][variant]
            names = [c["name"] for c in entry["checks"]]
            values = (["dev_max_abs_diff", "dev_agreement"] if variant != "int8" else
                      ["dev_decided_agreement", "dev_logit_error", "dev_accuracy"])
            assert names == CHECKS + values + ["loads_with_optimum"]  # the documented order
            assert all(c["passed"] for c in entry["checks"])
            figures = entry["figures"]
            assert {"max_abs_diff", "agreement", "accuracy", "size_mb"} <= set(figures)
            if variant != "int8":
                assert figures["max_abs_diff"] <= 1e-4 and figures["agreement"] == 1.0
        quantization = json.loads((root / "int8" / "quantization.json").read_text())  # what bench/predict read
        assert quantization["name"] == "portable" and quantization["reduce_range"] is True  # the default target
        assert quantization["validated_on"] == machine_facts() == report["machine"]
        assert own["variants"]["int8"]["quantization"] == quantization
        shape = next(c for c in own["variants"]["o2"]["checks"] if c["name"] == "dynamic_axes")["figure"]
        assert shape["input_ids"] == ["batch_size", "sequence_length"] and shape["logits"] == ["batch_size", 2]
    leftovers = [p.name for p in (exported_run / "onnx").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no staging or swapped-out folders left behind


def test_variants_load_in_optimum_and_pipeline_and_match_pytorch(exported_run):
    import torch
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    texts = ["a gripping , beautifully acted film .", "dull and far too long", "fine"]
    tok = AutoTokenizer.from_pretrained(exported_run / "teacher")
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        ref = AutoModelForSequenceClassification.from_pretrained(exported_run / "teacher")(**enc).logits.numpy()
    for variant in VARIANTS:
        folder = exported_run / "onnx" / "teacher" / variant
        model = ORTModelForSequenceClassification.from_pretrained(folder)  # as-is: no file_name needed
        clf = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(folder))
        logits = model(**enc).logits.numpy()
        assert logits.shape == (3, 2)
        assert [r["label"] for r in clf(texts)] == [model.config.id2label[int(i)] for i in logits.argmax(1)]
        np.testing.assert_allclose(logits, ref, atol=1e-4 if variant != "int8" else 0.2)


def test_broken_threshold_fails_nonzero_lists_all_and_keeps_good_export(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    good = run / "onnx" / "teacher"
    before = {v: digest(good / v / "model.onnx") for v in VARIANTS}
    good_report = (good / "validation.json").read_text()

    proc = subprocess.run(
        [sys.executable, "-m", "export.onnx_export", "--run-dir", str(run), "--models=teacher",
         "--fp32_max_abs_diff=-1", "--int8_min_decided_agreement=1.5"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600,
    )
    assert proc.returncode != 0
    assert "ExportValidationError: 2 validation check(s) failed" in proc.stderr
    assert "teacher/fp32 dev_max_abs_diff" in proc.stderr and "teacher/int8 dev_decided_agreement" in proc.stderr
    assert "[FAIL] teacher/fp32 dev_max_abs_diff" in proc.stdout  # the printed report
    assert "[ok  ] teacher/o2 dev_max_abs_diff" in proc.stdout  # checks after a failure still ran

    report = json.loads((run / "onnx" / "validation.json").read_text())
    assert not report["passed"] and len(report["failures"]) == 2
    failed = run / "onnx" / "teacher.failed"
    failed_report = json.loads((failed / "validation.json").read_text())
    assert failed_report["installed"] is False and failed_report["location"] == str(failed)
    # the previous good export is untouched, byte for byte
    assert {v: digest(good / v / "model.onnx") for v in VARIANTS} == before
    assert (good / "validation.json").read_text() == good_report
    assert not [p for p in (run / "onnx").iterdir() if p.name.startswith(".")]


def test_error_while_building_keeps_nothing_that_looks_good(exported_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    before = digest(run / "onnx" / "student" / "int8" / "model.onnx")

    def broken(*args, **kwargs):
        raise RuntimeError("quantiser exploded")

    monkeypatch.setattr(onnx_export, "quantise_int8", broken)
    with pytest.raises(RuntimeError, match="quantiser exploded"):
        main(["--run-dir", str(run), "--models=student"])
    assert (run / "onnx" / "student.failed" / "fp32" / "model.onnx").is_file()  # kept for inspection
    assert not (run / "onnx" / "student.failed" / "int8" / "model.onnx").exists()
    assert digest(run / "onnx" / "student" / "int8" / "model.onnx") == before


def test_unknown_key_and_missing_model_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'fp32_tol'"):
        main(["--run-dir", str(tmp_path), "--fp32_tol=1"])
    with pytest.raises(ExportError, match=f"'teacher' at {tmp_path / 'teacher'}"):
        main(["--run-dir", str(tmp_path), "--models=teacher"])
    with pytest.raises(ExportError, match="none of teacher, student, student_ce"):
        main(["--run-dir", str(tmp_path)])


def test_mismatched_labels_are_an_error(tmp_path, tiny_bert_dir, sst2_small):
    from transformers import AutoConfig

    model_dir = make_model_dir(tmp_path / "teacher", tiny_bert_dir, sst2_small)
    config = AutoConfig.from_pretrained(model_dir)
    config.id2label, config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    config.save_pretrained(model_dir)
    with pytest.raises(ExportError, match=r"id2label \['neg', 'pos'\] does not match the dataset's labels"):
        main(["--run-dir", str(tmp_path), "--models=teacher"])


def test_int8_figures_forgive_near_tie_flips_and_catch_decided_ones():
    """The int8 gate's figures on made-up logits: flipping near-tied rows leaves the decided-row
    agreement and the logit error within the default bounds; flipping decided rows, or noise on
    every row, does not."""
    cfg = onnx_export.ExportConfig()
    rng = np.random.default_rng(0)
    margin = np.where(np.arange(200) < 150, 4.0, 0.05)  # 150 decided rows, 50 near-ties
    sign = rng.choice([-1.0, 1.0], 200)
    reference = np.stack([sign * margin / 2, -sign * margin / 2], axis=1)  # (200, 2)
    labels = reference.argmax(1)
    figures = lambda logits: onnx_export.int8_value_figures(  # noqa: E731
        logits, reference, labels, decided_margin=cfg.int8_decided_margin)

    tie_flips = reference.copy()
    tie_flips[150:] = tie_flips[150:, ::-1]  # every near-tie flips: a 0.05 logit change
    ok = figures(tie_flips)
    assert ok["agreement"] == pytest.approx(0.75) and ok["decided_rows"] == 150
    assert ok["decided_agreement"] == 1.0 >= cfg.int8_min_decided_agreement
    assert ok["logit_error"] < 0.05 < cfg.int8_max_logit_error

    decided_flips = reference.copy()
    decided_flips[:5] = decided_flips[:5, ::-1]  # 5 of 150 decided rows: what a broken kernel does
    broken = figures(decided_flips)["decided_agreement"]
    assert broken == pytest.approx(145 / 150) and broken < cfg.int8_min_decided_agreement
    noisy = reference + rng.normal(0, 1.0, reference.shape)  # every row moved by about half its margin
    assert figures(noisy)["logit_error"] > cfg.int8_max_logit_error


def test_broken_quantisation_fails_the_export_and_keeps_the_good_one(tmp_path, tiny_bert_dir, sst2_small,
                                                                      monkeypatch):
    """A quantiser whose weight scales are off (as saturating int16 sums would be) is refused by
    the int8 checks, on a model whose dev rows are decided; fp32 and o2 still pass."""
    import onnx
    from onnx import numpy_helper

    run = tmp_path / "run"
    make_model_dir(run / "teacher", tiny_bert_dir, sst2_small, head_scale=100.0)
    real = onnx_export.quantise_int8

    def off_scales(fp32_dir, out_dir, cfg):
        real(fp32_dir, out_dir, cfg)
        model = onnx.load(str(out_dir / "model.onnx"))
        rng = np.random.default_rng(0)
        for init in model.graph.initializer:
            if init.name.endswith("_scale"):  # every weight's scale (activations are quantised at run time)
                scale = numpy_helper.to_array(init)
                init.CopyFrom(numpy_helper.from_array(scale * rng.uniform(0.2, 3.0, scale.shape).astype(scale.dtype),
                                                      init.name))
        onnx.save(model, str(out_dir / "model.onnx"))

    monkeypatch.setattr(onnx_export, "quantise_int8", off_scales)
    with pytest.raises(onnx_export.ExportValidationError) as err:
        main(["--run-dir", str(run), "--models=teacher"])
    failed = {f.split(":")[0] for f in err.value.failures}
    assert "teacher/int8 dev_logit_error" in failed and not [f for f in failed if "/fp32" in f or "/o2" in f]
    report = json.loads((run / "onnx" / "teacher.failed" / "validation.json").read_text())
    assert report["variants"]["int8"]["figures"]["decided_rows"] >= 32  # the rows were decided: not a tie story
    assert not (run / "onnx" / "teacher").exists()  # nothing installed

"""distill.layout: where a run's artefacts live, the variant names, and the validation.json reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill import layout


def test_stage_directories(tmp_path):
    assert layout.teacher_dir(tmp_path) == tmp_path / "teacher"
    assert layout.student_dir(str(tmp_path)) == tmp_path / "student"
    assert layout.student_ce_dir(tmp_path) == tmp_path / "student_ce"
    assert layout.ROLES == ("teacher", "student", "student_ce")
    assert layout.logits_dir(tmp_path / "teacher") == tmp_path / "teacher" / "logits"
    assert layout.bench_json(tmp_path) == tmp_path / "bench" / "bench.json"


def test_onnx_folders_and_variant_names(tmp_path):
    assert layout.VARIANTS == ("fp32", "o2", "int8") and layout.LM_EXPORT_VARIANTS == ("fp32", "int8")
    assert layout.onnx_file(tmp_path, "student", "int8") == tmp_path / "onnx" / "student" / "int8" / "model.onnx"
    assert layout.validation_path(tmp_path) == tmp_path / "onnx" / "validation.json"
    assert layout.validation_path(tmp_path, "teacher") == tmp_path / "onnx" / "teacher" / "validation.json"
    assert layout.BENCH_VARIANT == {None: "pytorch_fp32", "fp32": "ort_fp32", "o2": "ort_fp32_o2", "int8": "ort_int8"}


def test_validation_reader(tmp_path):
    report = {"max_length": 64, "pytorch_fp32": {"accuracy": 0.9},
              "variants": {"o2": {"figures": {"accuracy": 0.9}}, "int8": {"figures": {"accuracy": 0.88}}}}
    folder = tmp_path / "onnx" / "student"
    folder.mkdir(parents=True)
    (folder / "validation.json").write_text(json.dumps(report))
    for source in (folder, folder / "validation.json", str(folder)):
        v = layout.read_validation(source)
        assert v.max_length == 64 and v.figure(None, "accuracy") == 0.9 and v.figure("int8", "accuracy") == 0.88
    assert layout.parse_validation({**report, "max_length": None}).max_length is None
    with pytest.raises(KeyError):
        layout.read_validation(folder).figures("fp32")
    assert isinstance(layout.read_validation(Path(folder)).raw, dict)

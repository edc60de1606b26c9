"""distill.predict: JSONL labels from a PyTorch model directory and an ONNX variant folder that
match the model's own logits, in input order, from .txt / .tsv / stdin; bad input exits 2 with
one line naming the file and line."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distill.artifacts import ModelInfo, StageInputError, write_model_info
from distill.config import ConfigError
from distill.data import DataError, DataSpec, load_dataset
from distill.predict import PredictError, main
from export import onnx_export

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "a gripping , beautifully acted film that stays with you long after the credits roll .",
    "dull",
    "fine , but far too long and never quite as funny as it thinks it is",
    "ok then",
    "the best thing about it is the soundtrack",
]


def make_model_dir(out: Path, tiny_bert_dir: Path, data_dir: Path) -> Path:
    """A teacher directory as the teacher stage writes it (as in test_export.make_model_dir): the
    tiny BERT as a 2-class classifier, tokenizer, distill.json. Its linear weights are scaled up
    (std 0.2) so that the output depends on the text: a row given another row's output would show."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    label_map = load_dataset(DataSpec(path=str(data_dir))).label_map
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, num_labels=2, id2label=label_map.id2label, label2id=label_map.label2id
    )
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    with torch.no_grad():  # std 0.02 leaves a random BERT's output almost the same for every text
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(10.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    write_model_info(out, ModelInfo(role=out.name, task="classification", labels=label_map.names, max_length=64,
                                    data=DataSpec(path=str(data_dir))))
    (out / "metrics.json").write_text(json.dumps({"accuracy": 0.5}))
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_bert_dir, sst2_small) -> Path:
    """runs/<RUN> with teacher/ and its three ONNX variants, exported once for this module."""
    run = tmp_path_factory.mktemp("predict_run")
    make_model_dir(run / "teacher", tiny_bert_dir, sst2_small)
    assert onnx_export.main(["--run-dir", str(run), "--models=teacher"]) == 0
    return run


def reference_probabilities(model_dir: Path, texts: list[str]) -> np.ndarray:
    """(R, C) softmax of the PyTorch model's logits, one unpadded row at a time."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        logits = torch.cat([model(**tok([t], truncation=True, max_length=64, return_tensors="pt")).logits
                            for t in texts])
    return torch.softmax(logits.double(), dim=1).numpy()


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def probabilities_of(rows: list[dict], labels: list[str]) -> np.ndarray:
    return np.array([[r["probabilities"][name] for name in labels] for r in rows])


def run_cli(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("DISTILL_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "distill", "predict", *args], cwd=REPO, input=stdin,
                          capture_output=True, text=True, env=env, timeout=300)


def test_rows_match_model_logits_in_input_order(run_dir, tmp_path):
    src = tmp_path / "reviews.txt"
    src.write_text(TEXTS[0] + "\n\n" + "\n".join(TEXTS[1:]) + "\n", encoding="utf-8")  # line 2 is empty
    ref = reference_probabilities(run_dir / "teacher", TEXTS)
    assert ref[:, 1].max() - ref[:, 1].min() > 0.05  # the rows differ: a shuffled output would show
    labels = ["0", "1"]
    for model in ("teacher", "onnx/teacher/fp32", "onnx/teacher/int8"):
        out = tmp_path / f"{model.replace('/', '_')}.jsonl"
        assert main(["--model", str(run_dir / model), "--input", str(src), "--output", str(out),
                     "--batch_size=2", "--threads", "1"]) == 0
        rows = read_rows(out)
        assert [r["text"] for r in rows] == TEXTS  # input order, though batches ran shortest first
        assert [r["line"] for r in rows] == [1, 3, 4, 5, 6]  # the empty line is skipped, not numbered over
        probs = probabilities_of(rows, labels)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
        assert [r["label"] for r in rows] == [labels[i] for i in probs.argmax(axis=1)]
        assert [r["probability"] for r in rows] == [p.max() for p in probs]
        if model != "onnx/teacher/int8":  # fp32: the model's own numbers; int8 is quantised
            np.testing.assert_allclose(probs, ref, atol=1e-4)


def test_tsv_column_default_column_and_gzip(run_dir, tmp_path):
    model = str(run_dir / "onnx" / "teacher" / "fp32")
    named = tmp_path / "named.tsv"
    named.write_text("id\treview\n7\t" + TEXTS[0] + "\n8\t\n9\t" + TEXTS[1] + "\n", encoding="utf-8")
    out = tmp_path / "named.jsonl"
    assert main(["--model", model, "--input", str(named), "--output", str(out), "--text_column", "review"]) == 0
    rows = read_rows(out)
    assert [(r["line"], r["text"]) for r in rows] == [(2, TEXTS[0]), (4, TEXTS[1])]  # empty row skipped
    np.testing.assert_allclose(probabilities_of(rows, ["0", "1"]),
                               reference_probabilities(run_dir / "teacher", TEXTS[:2]), atol=1e-4)

    import gzip

    default = tmp_path / "unlabeled.tsv.gz"  # no --text_column: the model's column (text), else sentence
    default.write_bytes(gzip.compress(("index\tsentence\n0\t" + TEXTS[2] + "\n").encode()))
    out = tmp_path / "default.jsonl"
    assert main(["--model", model, "--input", str(default), "--output", str(out)]) == 0
    assert [r["text"] for r in read_rows(out)] == [TEXTS[2]]

    with pytest.raises(DataError, match=r"named.tsv, line 2: no text column: looked for 'body'"):
        main(["--model", model, "--input", str(named), "--text_column=body"])
    with pytest.raises(PredictError, match="--format=jsonl, but the file name says .tsv"):
        main(["--model", model, "--input", str(named), "--format=jsonl"])
    with pytest.raises(ConfigError, match="unknown config key 'colum'"):
        main(["--model", model, "--input", str(named), "--colum=review"])


def test_stdin_lines_through_the_command_line(run_dir, tmp_path):
    model = run_dir / "onnx" / "teacher" / "fp32"
    proc = run_cli(["--model", str(model), "--batch_size", "2"], stdin=f"{TEXTS[3]}\n\n{TEXTS[0]}\n{TEXTS[1]}\n")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]  # stdout holds only the JSONL
    assert [(r["line"], r["text"]) for r in rows] == [(1, TEXTS[3]), (3, TEXTS[0]), (4, TEXTS[1])]
    np.testing.assert_allclose(probabilities_of(rows, ["0", "1"]),
                               reference_probabilities(run_dir / "teacher", [TEXTS[3], TEXTS[0], TEXTS[1]]),
                               atol=1e-4)
    assert "predict: 3 rows from <stdin>, 1 empty skipped, onnxruntime" in proc.stderr


def test_stdin_jsonl_and_its_errors_name_stdin(run_dir, tmp_path, monkeypatch, capsys):
    model = str(run_dir / "teacher")
    good = "\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(TEXTS[:2])) + "\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(good.encode())))
    assert main(["--model", model, "--format=jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["line"], r["text"]) for r in rows] == [(1, TEXTS[0]), (2, TEXTS[1])]

    bad = '{"text": "fine"}\n{"text": broken\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(bad.encode())))
    with pytest.raises(DataError) as err:
        main(["--model", model, "--format=jsonl"])
    assert str(err.value) == "<stdin>, line 2: not valid JSON (Expecting value)"


def test_bad_model_folder_exits_2_with_one_line(run_dir, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("fine\n", encoding="utf-8")
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    proc = run_cli(["--model", str(empty), "--input", str(src)])
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {empty}: not a model folder: expected an ONNX variant folder")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert proc.stdout == ""

    with pytest.raises(PredictError, match=r"holds export variants, not a model; pick one: .*teacher/fp32"):
        main(["--model", str(run_dir / "onnx" / "teacher"), "--input", str(src)])
    with pytest.raises(PredictError, match="no such model directory"):
        main(["--model", str(tmp_path / "missing"), "--input", str(src)])
    no_info = tmp_path / "student"  # weights but no distill.json: the stage's own error, with its command
    no_info.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_info / name).write_bytes((run_dir / "teacher" / name).read_bytes())
    with pytest.raises(StageInputError, match=r"distill.json: missing.*run `make distill` first"):
        main(["--model", str(no_info), "--input", str(src)])


def test_malformed_jsonl_exits_2_naming_file_and_line(run_dir, tmp_path):
    src = tmp_path / "reviews.jsonl"
    src.write_text('{"text": "fine"}\n{"text": "ok"}\n{"text": oops}\n', encoding="utf-8")
    proc = run_cli(["--model", str(run_dir / "onnx" / "teacher" / "int8"), "--input", str(src)])
    assert proc.returncode == 2
    assert proc.stderr == f"error: {src}, line 3: not valid JSON (Expecting value)\n"
    assert proc.stdout == ""


def test_int8_model_on_a_cpu_it_was_not_validated_for_says_so(run_dir, tmp_path, monkeypatch, capsys):
    """predict reads the int8 folder's quantization.json: on a CPU whose kernel path can saturate
    that target's products, it warns on stderr (and still predicts)."""
    import distill.predict as predict_module
    from distill.int8 import machine_facts, write_quantization

    int8 = tmp_path / "int8"
    shutil.copytree(run_dir / "onnx" / "teacher" / "int8", int8)
    vnni = {**machine_facts(), "kernel_path": "avx512_vnni"}
    write_quantization(int8, target_name="vnni", per_channel=True, operators=["MatMul"], exclude=[], facts=vnni)
    monkeypatch.setattr(predict_module, "machine_facts", lambda: {**vnni, "kernel_path": "avx2"})
    src = tmp_path / "in.txt"
    src.write_text(TEXTS[0] + "\n", encoding="utf-8")
    assert main(["--model", str(int8), "--input", str(src), "--output", str(tmp_path / "out.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "predict: warning: int8 model quantised for target 'vnni'" in err and "avx2 path" in err
    assert len(read_rows(tmp_path / "out.jsonl")) == 1

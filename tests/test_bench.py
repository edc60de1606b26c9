"""export/bench.py: no heavy import at module level, FLOPs formula vs torch's counter, a clear error
for a missing export, and an end-to-end run on tiny repetitions writing json / md / png."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distill.artifacts import ModelInfo, write_model_info
from distill.data import DataSpec
from export import bench
from export.bench import BenchError, bert_flops, check_load
from export.onnx_export import main as export_main

REPO = Path(__file__).resolve().parents[1]
TINY_REPS = ["--warmup=1", "--reps_b1=4", "--reps_fixed=2", "--fixed_len=32", "--batches=1", "--batch_size=4",
             "--threads=1"]
ROW_KEYS = {
    "model", "variant", "runtime", "precision", "size_mb", "dev_accuracy", "mean_dev_len",
    "p50_b1_ms", "p90_b1_ms", "p99_b1_ms", "p50_fixed_ms", "p90_fixed_ms", "p99_fixed_ms",
    "throughput_ex_s", "gflop_per_ex_mean_len", "gflop_per_ex_fixed", "gflops_b1", "gflops_fixed",
    "gflops_batch", "speedup_p50_b1", "speedup_p50_fixed", "speedup_throughput",
    "torch", "onnxruntime", "transformers", "cpu_model", "threads", "date", "loadavg_1m_before_bench",
    "loadavg_1m_after_row",
}


def _model_dir(out: Path, tiny_bert_dir: Path, data_dir: Path, layers: int) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, num_labels=2, id2label={0: "0", 1: "1"}, label2id={"0": 0, "1": 1})
    model.bert.encoder.layer = model.bert.encoder.layer[:layers]
    model.config.num_hidden_layers = layers
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(out)
    write_model_info(out, ModelInfo(role=out.name, task="classification", labels=["0", "1"], max_length=64,
                                    data=DataSpec(path=str(data_dir))))


@pytest.fixture(scope="module")
def models_run(tmp_path_factory, tiny_bert_dir, sst2_small) -> Path:
    """teacher/ (4 layers) and student/ (2 layers), not exported."""
    run = tmp_path_factory.mktemp("bench_run")
    _model_dir(run / "teacher", tiny_bert_dir, sst2_small, layers=4)
    _model_dir(run / "student", tiny_bert_dir, sst2_small, layers=2)
    return run


@pytest.fixture(scope="module")
def exported_run(models_run, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("bench_exported") / "run"
    shutil.copytree(models_run, run)
    assert export_main(["--run-dir", str(run)]) == 0
    return run


def test_module_imports_no_torch_onnxruntime_or_numpy():
    # thread env vars must be set before these load, so importing the module must not load them
    code = "import sys, export.bench; print([m for m in ('torch', 'onnxruntime', 'numpy') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bert_flops_matches_torch_flop_counter(tiny_bert_dir):
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, num_labels=3, attn_implementation="eager").eval()
    c = model.config
    for length in (7, 16):
        ids = torch.randint(1000, 2000, (1, length))
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        # the counter sees the matmuls only: exactly what the formula counts
        assert bert_flops(c.num_hidden_layers, c.hidden_size, c.intermediate_size, 3, length) == counter.get_total_flops()
    # MiniLM-L6 (H=384, I=1536, 6 layers, 2 labels) at 128 tokens: 6*(8LH²+4L²H+4LHI) + 2H² + 2HC
    assert bert_flops(6, 384, 1536, 2, 128) == 6 * 478_150_656 + 294_912 + 1_536


def test_load_warning():
    load, warning = check_load(cores=2, fraction=0.0)
    assert load >= 0 and (warning is None) == (load <= 0)
    _, warning = check_load(cores=2, fraction=1e9)
    assert warning is None


def test_missing_export_names_path_and_make_export(models_run):
    with pytest.raises(BenchError, match=r"onnx/teacher/o2/model.onnx is missing: run `make export`"):
        bench.main(["--run-dir", str(models_run), *TINY_REPS])
    with pytest.raises(BenchError, match="must include teacher"):
        bench.main(["--run-dir", str(models_run), "--models=student"])


def test_bench_end_to_end(exported_run):
    shutil.copytree(exported_run / "student", exported_run / "student_ce")  # a model without an export
    assert bench.main(["--run-dir", str(exported_run), *TINY_REPS]) == 0
    out = exported_run / "bench"
    result = json.loads((out / "bench.json").read_text())
    rows = result["rows"]
    assert [(r["model"], r["variant"]) for r in rows] == [
        (m, v) for m in ("teacher", "student") for v in ("pytorch_fp32", "ort_fp32_o2", "ort_int8")]
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert r["threads"] == 1 and r["n_b1"] == 4 and r["n_fixed"] == 2 and r["fixed_len"] == 32
        assert r["p50_b1_ms"] > 0 and r["throughput_ex_s"] > 0 and r["size_mb"] > 0
        assert r["p50_b1_ms"] <= r["p90_b1_ms"] <= r["p99_b1_ms"]
    assert rows[0]["speedup_p50_b1"] == 1.0 and rows[0]["speedup_throughput"] == 1.0
    teacher_acc = json.loads((exported_run / "onnx" / "teacher" / "validation.json").read_text())
    assert rows[2]["dev_accuracy"] == teacher_acc["variants"]["int8"]["figures"]["accuracy"]
    # student has 2 of the teacher's 4 layers: per-layer FLOPs dominate, so about half
    assert rows[3]["gflop_per_ex_fixed"] < 0.6 * rows[0]["gflop_per_ex_fixed"]
    assert any("student_ce" in w and "make export" in w for w in result["warnings"])
    md = (out / "bench.md").read_text()
    assert md.count("| teacher |") == 3 and md.count("| student |") == 3 and "speed-up" in md
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_as_a_script(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    proc = subprocess.run(
        [sys.executable, "export/bench.py", "--run-dir", str(run), *TINY_REPS, "--models=teacher"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((run / "bench" / "bench.json").read_text())["rows"]
    assert len(rows) == 3 and "already imported" not in proc.stderr

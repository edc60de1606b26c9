"""The command line: bad input is one line on stderr and exit status 2 (the traceback only with
--debug); and, behind the slow marker, the whole pipeline as a user runs it, on a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def in_process(capsys, *args: str) -> tuple[int, str]:
    """``python -m distill <args>`` without a new interpreter: (exit status, stderr)."""
    from distill.__main__ import main

    status = main(list(args))
    return status, capsys.readouterr().err


def test_bad_rows_are_one_error_listing_each(tmp_path, capsys):
    rows = "".join(f"good row {i}\t{i % 2}\n" for i in range(30))
    bad = "".join(f"bad row {i}\n" for i in range(25))  # one field instead of two, 25 times
    (tmp_path / "train.tsv").write_text("text\tlabel\n" + rows + bad)
    (tmp_path / "dev.tsv").write_text("text\tlabel\nfine\t0\n")
    status, err = in_process(capsys, "teacher", "--data", str(tmp_path), "--run-dir", str(tmp_path / "run"))
    assert status == 2 and "Traceback" not in err
    first, *listed = err.strip().splitlines()
    assert first == f"error: {tmp_path / 'train.tsv'}: 25 bad rows (the first 20 below)"
    assert listed[0] == "  line 32: expected 2 fields (text, label), found 1" and len(listed) == 20
    assert not (tmp_path / "run").exists()  # nothing half-made is left behind
    status, err = in_process(capsys, "teacher", "--data", str(tmp_path), "--run-dir", str(tmp_path / "run"), "--debug")
    assert status == 2 and "Traceback" in err and "DataError" in err


def test_missing_inputs_and_unknown_keys_are_one_line(tmp_path, capsys):
    status, err = in_process(capsys, "teacher", "--data", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "r"))
    assert status == 2 and err.strip() == f"error: {tmp_path / 'nowhere'}: no such dataset directory"
    status, err = in_process(capsys, "distill", "--run-dir", str(tmp_path / "run"))
    assert status == 2 and err.count("\n") == 1
    assert "teacher: no such model directory (run `make teacher` first)" in err
    status, err = in_process(capsys, "export", "--run-dir", str(tmp_path / "run"), "--no_such_key=1")
    assert status == 2 and "unknown config key 'no_such_key'" in err and "Traceback" not in err


def test_the_exit_status_reaches_the_shell(tmp_path):
    done = cli("distill", "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


@pytest.mark.slow
def test_the_whole_pipeline_as_a_user_runs_it(tmp_path, sst2_small, tiny_bert_dir):
    run = str(tmp_path / "run")
    small = ["--max_length=32", "--batch_size=16", "--epochs=1", "--progress=false", "--holdout_rows=40"]
    done = cli("teacher", "--data", str(sst2_small), "--run-dir", run, f"--base_model={tiny_bert_dir}",
               "--transfer=unused_train,unlabeled", "--max_train_rows=200", "--lr=1e-3", *small)
    assert done.returncode == 0, done.stderr
    assert "transfer" not in done.stderr
    done = cli("distill", "--run-dir", run, *small, "--ce_epochs=1")
    assert done.returncode == 0, done.stderr
    student = json.loads((tmp_path / "run" / "student" / "metrics.json").read_text())
    assert sorted(student["transfer"]) == ["test_unlabeled", "unused_train"] and student["transfer_rows"] == 56 + 32
    done = cli("export", "--run-dir", run)
    assert done.returncode == 0, done.stdout + done.stderr
    done = cli("bench", "--run-dir", run, "--warmup=1", "--reps_b1=4", "--reps_fixed=2", "--fixed_len=32",
               "--batches=1", "--batch_size=4", "--threads=1")
    assert done.returncode == 0, done.stderr
    done = cli("report", "--run-dir", run)  # what `make bench` runs after the bench stage
    assert done.returncode == 0, done.stderr
    report = (tmp_path / "run" / "report.md").read_text()
    assert "KD gain over CE-only" in report and "ONNX Runtime on CPU" in report
    done = subprocess.run([sys.executable, "-m", "distill", "predict", "--model", f"{run}/onnx/student/int8"],
                          input="a fine film\na dull one\n", cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["a fine film", "a dull one"] and all(r["label"] in ("0", "1") for r in rows)

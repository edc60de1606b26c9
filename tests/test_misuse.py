"""Misuse answered by one line and exit status 2, with nothing earlier lost: a second writer of a
stage folder (every stage), a NaN stop, a resume with other settings and --restart=true, a full disk
(at a checkpoint, before a cache), non-finite teacher scores, too few rows for a batch, a holdout
larger than the split, a dev split emptied by on_bad_rows=skip. In-process, on a tiny random BERT."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill import disk, scoring
from distill.disk import tensor_bytes
from distill.lock import stage_lock
from teachers import finetune


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``python -m distill <args>`` in this process: (exit status, stdout, stderr)."""
    from distill.__main__ import main

    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def teacher_args(data: Path, run: Path, tiny_bert_dir: Path, *extra: str) -> list[str]:
    return ["teacher", "--data", str(data), "--run-dir", str(run), f"--base_model={tiny_bert_dir}",
            "--max_train_rows=96", "--max_length=32", "--batch_size=16", "--epochs=1", "--lr=1e-3",
            "--evals_per_epoch=1", "--patience=0", "--holdout_rows=0", "--eval_batch_size=64", "--transfer=",
            "--scorer=pytorch", "--progress=false", *extra]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, sst2_small, tiny_bert_dir) -> Path:
    """A run directory with a finished teacher (96 rows, 6 steps)."""
    run = tmp_path_factory.mktemp("finished")
    assert finetune.main(teacher_args(sst2_small, run, tiny_bert_dir)[1:]) == 0
    return run


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run / "teacher", to / "teacher")
    return to


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def nan_at_call(monkeypatch, call: int) -> None:
    """The teacher's cross-entropy returns NaN at its ``call``-th call (training only calls it)."""
    real, calls = finetune.F.cross_entropy, [0]

    def cross_entropy(*args, **kwargs):
        calls[0] += 1
        loss = real(*args, **kwargs)
        return loss * math.nan if calls[0] == call else loss

    monkeypatch.setattr(finetune.F, "cross_entropy", cross_entropy)


# ----------------------------------------------------------------------------- a second writer


STAGES = {  # stage -> (the folder it locks, its arguments after --run-dir RUN)
    "teacher": ("teacher", None),
    "score": ("teacher", ["--transfer=unused_train"]),
    "distill": ("student", ["--epochs=1"]),
    "compare": ("compare", []),
    "gap": ("gap", []),
    "strategies": ("strategies", []),
    "export": ("onnx", ["--models=teacher"]),
    "bench": ("bench", []),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_second_writer_of_a_stage_folder_is_refused(stage, finished, sst2_small, tiny_bert_dir, capsys):
    folder, rest = STAGES[stage]
    args = teacher_args(sst2_small, finished, tiny_bert_dir) if rest is None else [stage, "--run-dir", finished, *rest]
    before = snapshot(finished)
    with stage_lock(finished / folder):
        held = json.loads((finished / folder / ".lock").read_text())
        status, _, err = cli(capsys, *args)
    assert (status, err) == (2, f"error: {finished / folder}: in use by pid {os.getpid()} on {held['host']} "
                                f"(started {held['started']}); wait for it to finish or stop it, then rerun\n")
    assert snapshot(finished) == before  # nothing written, nothing removed


# ----------------------------------------------------------------------------- NaN, resume, restart


def test_nan_stops_the_run_and_a_resume_must_keep_the_settings(tmp_path, sst2_small, tiny_bert_dir, capsys,
                                                               monkeypatch):
    run, ckpt = tmp_path / "run", tmp_path / "run" / "teacher" / "checkpoint"
    args = teacher_args(sst2_small, run, tiny_bert_dir, "--save_every_steps=2")
    nan_at_call(monkeypatch, 3)
    status, _, err = cli(capsys, *args)
    assert (status, err) == (2, f"error: step 3/6: not finite: loss nan, ce nan, grad norm nan; training stopped "
                                f"before this update, the last checkpoint (step 2, {ckpt}) is kept (try a lower "
                                "--lr, or check what feeds the term named)\n")
    assert json.loads((ckpt / "state.json").read_text())["state"]["step"] == 2
    assert all(torch.isfinite(w).all() for w in load_file(ckpt / "model.safetensors").values())
    assert not (run / "teacher" / "model.safetensors").exists()  # no NaN model saved as the best
    monkeypatch.undo()

    kept = snapshot(ckpt)
    status, _, err = cli(capsys, *args, "--lr=5e-4", "--batch_size=8")
    assert (status, err) == (2, f"error: {ckpt}: the checkpoint (at step 2) was made with other settings: "
                                "batch_size 16 -> 8; lr 0.001 -> 0.0005; resume with the checkpoint's settings, or give "
                                "--restart=true to start over (deletes the checkpoint)\n")
    assert snapshot(ckpt) == kept  # refused: the checkpoint is untouched

    nan_at_call(monkeypatch, 5)
    status, out, err = cli(capsys, *args, "--lr=5e-4", "--restart=true")
    assert f"restart: deleted the checkpoint at step 2/6 in {ckpt}; training from step 0\n" in out
    assert status == 2 and err.startswith("error: step 5/6: not finite: loss nan") and "(step 4, " in err
    monkeypatch.undo()

    # settings that do not change the run may differ (eval batch size, progress bar, device name)
    status, out, err = cli(capsys, *args, "--lr=5e-4", "--eval_batch_size=32", "--device=cpu")
    assert (status, err) == (0, "")
    assert f"resumed from {ckpt} at step 4/6" in out
    assert json.loads((run / "teacher" / "metrics.json").read_text())["total_steps"] == 6 and not ckpt.exists()


# ----------------------------------------------------------------------------- a full disk


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last_one(tmp_path, sst2_small, tiny_bert_dir,
                                                                        capsys, monkeypatch):
    run, ckpt = tmp_path / "run", tmp_path / "run" / "teacher" / "checkpoint"
    real, checkpoints = disk.free_bytes, [0]

    def free_bytes(directory: Path) -> int:  # the second checkpoint finds the disk full
        checkpoints[0] += directory.name == "checkpoint.tmp"
        return 0 if directory.name == "checkpoint.tmp" and checkpoints[0] >= 2 else real(directory)

    monkeypatch.setattr(disk, "free_bytes", free_bytes)
    args = teacher_args(sst2_small, run, tiny_bert_dir, "--save_every_steps=2")
    status, _, err = cli(capsys, *args)
    needed = tensor_bytes(load_file(ckpt / "model.safetensors"),
                          torch.load(ckpt / "optimizer.pt", weights_only=True)["optimizer"]["state"])
    assert (status, err) == (2, f"error: {ckpt}.tmp: not enough disk space for checkpoint (weights and optimizer "
                                f"state): it needs {needed / 2**20:,.1f} MiB ({needed:,} bytes), 0.0 MiB (0 bytes) "
                                "are free; free some space (or use another --run-dir) and rerun\n")
    assert json.loads((ckpt / "state.json").read_text())["state"]["step"] == 2 and not Path(f"{ckpt}.tmp").exists()
    monkeypatch.undo()
    status, out, _ = cli(capsys, *args)
    assert status == 0 and f"resumed from {ckpt} at step 2/6" in out


def test_a_full_disk_before_a_cache_is_one_line(finished, tmp_path, capsys, monkeypatch):
    finished = copy_run(finished, tmp_path / "run")
    texts = tmp_path / "more.txt"
    texts.write_text("".join(f"more text number {i}\n" for i in range(10)))
    before = snapshot(finished / "teacher" / "logits")
    monkeypatch.setattr(disk, "free_bytes", lambda directory: 1000)
    status, _, err = cli(capsys, "score", "--run-dir", finished, f"--transfer={texts}")
    needed = 10 * 2 * 4 + 4096  # 10 rows x 2 classes x float32, and room for the .npy header
    logits = finished / "teacher" / "logits"
    assert (status, err) == (2, f"error: {logits}: not enough disk space for the logit cache more.npy.partial: it "
                                f"needs 0.0 MiB ({needed:,} bytes), 0.0 MiB (1,000 bytes) are free; free some space "
                                "(or use another --run-dir) and rerun\n")
    assert not (logits / "more.npy.partial").exists()
    assert {k: v for k, v in snapshot(logits).items() if not k.startswith("more")} == before


def test_non_finite_teacher_scores_are_not_cached(finished, tmp_path, capsys, monkeypatch):
    finished = copy_run(finished, tmp_path / "run")
    texts = tmp_path / "odd.txt"
    texts.write_text("".join(f"odd text number {i}\n" for i in range(10)))
    real = scoring.predict_logits

    def predict_logits(*args, **kwargs):
        out = real(*args, **kwargs)
        out[3, 1] = math.nan
        return out

    monkeypatch.setattr(scoring, "predict_logits", predict_logits)  # the PyTorch scorer (teacher_args)
    status, _, err = cli(capsys, "score", "--run-dir", finished, f"--transfer={texts}")
    logits = finished / "teacher" / "logits"
    assert (status, err) == (2, f"error: {logits / 'odd.npy'}: set odd: the teacher's scores for row 3 of {texts} "
                                "are not finite (NaN or inf) (rows of its chunk like it: 1); none of the chunk is "
                                "cached, the chunks before it are kept\n")
    assert not (logits / "odd.npy").exists() and (logits / "train.manifest.json").exists()


# ----------------------------------------------------------------------------- too few rows


def test_too_few_rows_for_one_batch(tmp_path, sst2_small, tiny_bert_dir, capsys):
    status, _, err = cli(capsys, *teacher_args(sst2_small, tmp_path / "run", tiny_bert_dir, "--max_train_rows=20",
                                               "--batch_size=32"))
    assert (status, err) == (2, "error: --batch_size=32: there are only 20 training rows, fewer than one batch; "
                                "lower --batch_size to 20 or less, or give more rows\n")
    assert not (tmp_path / "run").exists()  # nothing half-made is left behind


def test_a_holdout_larger_than_the_split(tmp_path, sst2_small, tiny_bert_dir, capsys):
    status, _, err = cli(capsys, *teacher_args(sst2_small, tmp_path / "run", tiny_bert_dir, "--holdout_rows=300"))
    assert (status, err) == (2, "error: --holdout_rows=300: the training split has 96 rows; hold back at most 94\n")
    assert not (tmp_path / "run").exists()


def test_a_dev_split_emptied_by_skip(tmp_path, tiny_bert_dir, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_text("text\tlabel\n" + "".join(f"row {i}\t{i % 2}\n" for i in range(40)))
    (data / "dev.tsv").write_text("text\tlabel\nfirst\t7\nsecond\t8\n")  # labels training never saw
    args = teacher_args(data, tmp_path / "run", tiny_bert_dir, "--on_bad_rows=skip")
    status, _, err = cli(capsys, *args)
    assert (status, err) == (2, f"error: {data / 'dev.tsv'}: on_bad_rows=skip dropped every one of its 2 rows: their "
                                "labels never appear in the training split (known labels: 0, 1)\n")
    (data / "dev.tsv").write_text("text\tlabel\nfirst\nsecond\n")  # one field each, not two
    status, _, err = cli(capsys, *args)
    assert (status, err) == (2, f"error: {data / 'dev.tsv'}: no usable rows (every row was bad)\n")
    assert not (tmp_path / "run").exists()

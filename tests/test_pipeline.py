"""The teacher and student stages end to end on a tiny random BERT and a slice of SST-2:
outputs, seed-exact repeat, stale-cache refusal, resume after SIGKILL, and DDP == one process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from distill.cache import CacheError
from distill.config import ConfigError
from students import distill as student_stage
from teachers.finetune import TeacherConfig
from teachers.finetune import run as run_teacher

ROOT = Path(__file__).resolve().parents[1]


def teacher_config(sst2_small: Path, tiny_bert_dir: Path, **changes) -> TeacherConfig:
    base = TeacherConfig(data=str(sst2_small), base_model=str(tiny_bert_dir), max_length=32, epochs=2,
                         batch_size=16, lr=1e-3, evals_per_epoch=1, patience=0, eval_batch_size=64,
                         transfer=["unlabeled"], progress=False)
    return TeacherConfig(**{**base.__dict__, **changes})


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, sst2_small, tiny_bert_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    run_teacher(teacher_config(sst2_small, tiny_bert_dir), run_dir)
    return run_dir


def student_args(run_dir: Path, *extra: str) -> list[str]:
    return ["--run-dir", str(run_dir), "--max_length=32", "--epochs=2", "--batch_size=16", "--lr=1e-3",
            "--eval_batch_size=64", "--evals_per_epoch=1", "--patience=0", "--holdout_rows=0", "--progress=false", *extra]


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


def test_teacher_outputs(teacher_run):
    out = teacher_run / "teacher"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix", "train_time_s", "train_samples_per_s"):
        assert key in metrics
    assert sum(map(sum, metrics["confusion_matrix"])) == 64  # the whole dev slice
    assert set(metrics["per_class"]) == {"0", "1"}
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "0", "1": "1"}
    assert json.loads((out / "train_config.json").read_text())["max_length"] == 32
    assert (out / "tokenizer.json").exists() or (out / "vocab.txt").exists()
    assert metrics["cache"]["train"]["rows"] == 256 and metrics["cache"]["test_unlabeled"]["rows"] == 32
    info = json.loads((out / "distill.json").read_text())
    assert info["role"] == "teacher" and info["labels"] == ["0", "1"] and info["max_length"] == 32
    assert info["transfer"]["test_unlabeled"]["counts"]["rows"] == 32
    assert not (out / "checkpoint").exists()  # removed once the stage completed


def test_teacher_repeats_exactly_on_cpu(teacher_run, tmp_path, sst2_small, tiny_bert_dir):
    run_teacher(teacher_config(sst2_small, tiny_bert_dir, transfer=[]), tmp_path)
    first, second = weights(teacher_run / "teacher"), weights(tmp_path / "teacher")
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    a = (teacher_run / "teacher" / "logits" / "train.npy").read_bytes()
    assert a == (tmp_path / "teacher" / "logits" / "train.npy").read_bytes()


def test_teacher_strategies_train_only_their_parameters(tmp_path, sst2_small, tiny_bert_dir):
    base = weights(tiny_bert_dir)
    run_teacher(teacher_config(sst2_small, tiny_bert_dir, strategy="frozen", epochs=1, transfer=[]), tmp_path)
    trained = weights(tmp_path / "teacher")
    # the encoder stayed as it was; only pooler and classifier could move
    compared = 0
    for key, value in base.items():
        mapped = "bert." + key if "bert." + key in trained else key
        if "pooler" not in key and mapped in trained:
            assert torch.equal(trained[mapped], value), key
            compared += 1
    encoder_keys = [k for k in base if "pooler" not in k]
    assert compared == len(encoder_keys) and compared > 50  # every encoder tensor was found and checked
    moved = [k for k in trained if k.startswith(("classifier.", "bert.pooler."))]
    assert len(moved) == 4  # classifier and pooler, weight and bias
    pooler = {k: v for k, v in base.items() if "pooler" in k}
    assert any(not torch.equal(trained["bert." + k], v) for k, v in pooler.items())  # the head trained


def test_interrupted_run_resumes_to_the_same_weights(teacher_run, tmp_path):
    """The fast form of the SIGKILL test: the loop is stopped by an exception after a checkpoint
    (in-process), restarted, and ends bit-identical to an uninterrupted run."""
    from distill import trainer as trainer_mod

    straight = _clone_teacher(teacher_run, tmp_path / "straight")
    stopped = _clone_teacher(teacher_run, tmp_path / "stopped")
    args = ("--student_ce=false", "--use_transfer=false", "--dropout=0.1", "--epochs=2", "--save_every_steps=5")
    assert student_stage.main(student_args(straight, *args)) == 0
    real_train = trainer_mod.train

    def train_until_step_12(model, **kw):
        real_loss = kw["loss_fn"]
        steps = [0]

        def loss_fn(*a):
            steps[0] += 1
            if steps[0] > 12:
                raise KeyboardInterrupt("stopped after step 12")
            return real_loss(*a)

        return real_train(model, **{**kw, "loss_fn": loss_fn})

    student_stage.train = train_until_step_12
    try:
        with pytest.raises(KeyboardInterrupt):
            student_stage.main(student_args(stopped, *args))
    finally:
        student_stage.train = real_train
    state = json.loads((stopped / "student" / "checkpoint" / "state.json").read_text())["state"]
    assert state["step"] == 10  # the last checkpoint before the interruption
    assert student_stage.main(student_args(stopped, *args)) == 0
    a, b = weights(straight / "student"), weights(stopped / "student")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_student_stage_outputs_and_report(teacher_run):
    assert student_stage.main(student_args(teacher_run, "--ce_epochs=3")) == 0
    student = json.loads((teacher_run / "student" / "metrics.json").read_text())
    control = json.loads((teacher_run / "student_ce" / "metrics.json").read_text())
    assert student["student"]["layers_kept"] == [0, 2, 3]  # 3 of the tiny teacher's 4, evenly spaced
    assert json.loads((teacher_run / "student" / "config.json").read_text())["num_hidden_layers"] == 3
    assert student["train_rows"] == 256 + 32 and student["labelled_rows"] == 256 and student["transfer_rows"] == 32
    assert student["transfer"] == ["test_unlabeled"]
    assert (control["w_kd"], control["w_ce"], control["train_rows"], control["transfer"]) == (0.0, 1.0, 256, [])
    assert student["parameters"] < json.loads((teacher_run / "teacher" / "metrics.json").read_text())["parameters"]
    assert student["total_steps"] == (256 + 32) // 16 * 2 and control["total_steps"] == 256 // 16 * 3
    for name in ("student", "student_ce"):
        info = json.loads((teacher_run / name / "distill.json").read_text())
        assert info["role"] == name and info["labels"] == ["0", "1"] and info["max_length"] == 32
    report = (teacher_run / "report.md").read_text()
    assert "KD gain over CE-only" in report and "KD student" in report
    assert (teacher_run / "models.png").stat().st_size > 1000


def test_a_matched_control_gets_the_kd_students_steps_and_evaluations(teacher_run, tmp_path, capsys):
    run_dir = tmp_path / "run"  # the teacher stays where it is (--teacher_dir)
    # KD: (256 labelled + 32 transfer) // 16 x 2 epochs = 36 steps, 2 evaluations; the control's
    # 256 // 16 = 16 steps a pass: 3 passes (48 steps, never fewer than 36), its 2 evaluations spread over them
    assert student_stage.main(student_args(run_dir, "--ce_schedule=matched", "--ce_epochs=1",
                                           f"--teacher_dir={teacher_run / 'teacher'}")) == 0
    report = (run_dir / "report.md").read_text()  # the report finds the teacher the students name
    assert f"The teacher: `{teacher_run / 'teacher'}` (`--teacher_dir`)." in report and "KD gain over CE-only" in report
    student = json.loads((run_dir / "student" / "metrics.json").read_text())
    control = json.loads((run_dir / "student_ce" / "metrics.json").read_text())
    config = json.loads((run_dir / "student_ce" / "train_config.json").read_text())
    assert (student["total_steps"], student["planned_evals"]) == (36, 2)
    assert (config["epochs"], config["evals"], control["total_steps"]) == (3, 2, 48)
    assert [row["step"] for row in control["history"]] == [24, 48]
    assert "--ce_schedule=matched: 3 epochs and 2 evaluations: the 36 steps" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"^--ce_schedule=same: choose one of epochs, matched$"):
        student_stage.main(student_args(run_dir, "--ce_schedule=same"))


def test_layer_losses_online_and_from_cached_cls_states(teacher_run, tmp_path):
    run_dir = _clone_teacher(teacher_run, tmp_path / "run")
    args = ("--student_ce=false", "--epochs=1", "--use_transfer=false")
    assert student_stage.main(student_args(run_dir, *args, "--w_hidden=1", "--w_attn=1")) == 0
    online = json.loads((run_dir / "student" / "metrics.json").read_text())
    assert online["online"] and {"hidden", "attn"} <= set(online["history"][-1])
    assert online["history"][-1]["attn"] >= 0 and online["history"][-1]["hidden"] > 0
    with pytest.raises(ConfigError, match="cached no \\[CLS\\] states"):
        student_stage.main(student_args(tmp_path / "run", *args, "--w_hidden=1", "--layer_source=cached"))
    from teachers import score

    assert score.main(["--run-dir", str(run_dir), "--cache_cls=true", "--progress=false"]) == 0
    cls = np.load(run_dir / "teacher" / "logits" / "train.cls.npy", mmap_mode="r")
    assert cls.shape == (256, 5 * 32) and cls.dtype == np.float16  # (rows, (4 layers + embeddings) x hidden 32)
    shutil.rmtree(run_dir / "student")
    assert student_stage.main(student_args(run_dir, *args, "--w_hidden=1", "--layer_source=cached")) == 0
    cached = json.loads((run_dir / "student" / "metrics.json").read_text())
    assert not cached["online"] and cached["layer_source"] == "cached" and cached["history"][-1]["hidden"] > 0
    with pytest.raises(ConfigError, match="attention maps are not cached"):
        student_stage.main(student_args(run_dir, *args, "--w_hidden=1", "--w_attn=1", "--layer_source=cached"))


def test_student_refuses_a_stale_cache(teacher_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(teacher_run / "teacher", run_dir / "teacher")
    teacher_weights = weights(run_dir / "teacher")
    key = next(k for k in teacher_weights if k.endswith("classifier.weight"))
    teacher_weights[key] = teacher_weights[key] + 0.01  # the teacher changed after caching
    from safetensors.torch import save_file

    save_file(teacher_weights, run_dir / "teacher" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CacheError, match="stale logit cache.*teacher_weights"):
        student_stage.main(student_args(run_dir, "--student_ce=false", "--epochs=1"))


def test_student_rejects_other_data_than_the_teachers(teacher_run, tmp_path):
    with pytest.raises(ConfigError, match="rows the teacher cached"):
        student_stage.parse_args(student_args(teacher_run, f"--data={tmp_path}"))
    with pytest.raises(ConfigError, match="teacher scored no transfer set of that name.*test_unlabeled"):
        student_stage.main(student_args(teacher_run, "--transfer=nope", "--student_ce=false"))


def _run_student(run_dir: Path, *extra: str, env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
           **(env_extra or {})}
    args = [sys.executable, "-m", "distill", "distill", *student_args(run_dir, "--student_ce=false", "--use_transfer=false",
                                                                      "--dropout=0.1", *extra)]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _clone_teacher(teacher_run: Path, run_dir: Path) -> Path:
    shutil.copytree(teacher_run / "teacher", run_dir / "teacher")
    return run_dir


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(teacher_run, tmp_path):
    straight = _clone_teacher(teacher_run, tmp_path / "straight")
    killed = _clone_teacher(teacher_run, tmp_path / "killed")
    extra = ("--epochs=3", "--save_every_steps=5")  # 16 steps an epoch: checkpoints at 5, 10, 15, 16, ...
    first = _run_student(straight, *extra)
    victim = _run_student(killed, *extra)
    state = killed / "student" / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None:
        if state.exists() and json.loads(state.read_text())["state"]["step"] >= 20:
            break
        time.sleep(0.05)
    assert victim.poll() is None, "the run ended before it could be killed:\n" + victim.stdout.read()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    step_at_kill = json.loads(state.read_text())["state"]["step"]
    assert 20 <= step_at_kill < 48
    resumed = _run_student(killed, *extra)
    out_resumed, out_first = resumed.communicate(timeout=600)[0], first.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out_resumed
    assert first.returncode == 0, out_first
    assert f"resumed from {killed / 'student' / 'checkpoint'} at step {step_at_kill}" in out_resumed
    a, b = weights(straight / "student"), weights(killed / "student")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ma = json.loads((straight / "student" / "metrics.json").read_text())
    mb = json.loads((killed / "student" / "metrics.json").read_text())
    assert (ma["accuracy"], ma["best_step"]) == (mb["accuracy"], mb["best_step"])
    assert [h["eval"]["accuracy"] for h in ma["history"]] == [h["eval"]["accuracy"] for h in mb["history"]]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(teacher_run, tmp_path):
    single = _clone_teacher(teacher_run, tmp_path / "single")
    ddp = _clone_teacher(teacher_run, tmp_path / "ddp")
    common = ["--student_ce=false", "--use_transfer=false", "--dropout=0", "--epochs=1", "--progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    one = subprocess.run([sys.executable, "-m", "distill", "distill", *student_args(single, *common)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stdout + one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "distill", "distill", *student_args(ddp, *common)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout + two.stderr
    ma = json.loads((single / "student" / "metrics.json").read_text())
    mb = json.loads((ddp / "student" / "metrics.json").read_text())
    assert mb["world_size"] == 2 and ma["world_size"] == 1
    assert ma["total_steps"] == mb["total_steps"]
    a, b = weights(single / "student"), weights(ddp / "student")
    for key in a:  # same updates; only the order of float sums differs (all-reduce vs one batch)
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4, msg=key)
    assert abs(ma["accuracy"] - mb["accuracy"]) <= 1 / 64


def test_teacher_trains_through_bad_files_with_skip_and_lists_them(tmp_path, tiny_bert_dir):
    for split, n in (("train", 20), ("dev", 4)):
        for label in ("neg", "pos"):
            folder = tmp_path / "data" / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i}.txt").write_text(f"{label} review number {i}\n")
    (tmp_path / "data" / "train" / "pos" / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "data" / "train" / "neg" / "empty.txt").write_bytes(b"")
    cfg = TeacherConfig(data=str(tmp_path / "data"), base_model=str(tiny_bert_dir), max_length=16, epochs=1,
                        batch_size=8, lr=1e-3, transfer=[], progress=False, on_bad_rows="skip")
    metrics = run_teacher(cfg, tmp_path / "run")
    assert metrics["skipped_rows"] == 2 and metrics["train_rows"] == 40
    skipped = [json.loads(line) for line in (tmp_path / "run" / "teacher" / "skipped_rows.jsonl").read_text().splitlines()]
    assert sorted(Path(r["file"]).name for r in skipped) == ["empty.txt", "latin.txt"]
    assert {r["reason"].split(" at ")[0] for r in skipped} == {"file is empty", "bytes that are not UTF-8"}


def test_an_online_teacher_needs_no_finished_transfer_cache(teacher_run, tmp_path):
    # a time-boxed scoring run leaves a transfer set's cache unfinished: the cached student refuses
    # it, a student with the teacher online trains on the same rows without reading it
    run_dir = _clone_teacher(teacher_run, tmp_path / "run")
    logits = run_dir / "teacher" / "logits"
    [manifest] = [p for p in logits.glob("*.manifest.json") if not p.name.startswith("train")]
    manifest.unlink()
    args = ("--student_ce=false", "--epochs=1")
    with pytest.raises(CacheError, match="no logit cache manifest"):
        student_stage.main(student_args(run_dir, *args))
    assert student_stage.main(student_args(run_dir, *args, "--online=true")) == 0
    metrics = json.loads((run_dir / "student" / "metrics.json").read_text())
    assert metrics["online"] and metrics["transfer_rows"] > 0


def test_onnx_scorer_cache_equals_pytorch_and_never_passes_as_it(teacher_run, tmp_path, sst2_small, tiny_bert_dir):
    """The teacher's ONNX Runtime O2 graph as the scorer (--scorer=onnx): its cache holds PyTorch's
    logits to 1e-4, says which scorer made it in the fingerprint and in distill.json, and a
    reader expecting the other scorer's cache refuses it as stale."""
    from distill.artifacts import read_model_info
    from distill.cache import fingerprint_parts, open_logit_cache
    from distill.data import DataSpec, load_dataset
    from distill.scoring import split_files

    torch_dir = teacher_run / "teacher"
    assert json.loads((torch_dir / "metrics.json").read_text())["scorer"] == {"name": "pytorch"}  # the default
    assert read_model_info(torch_dir).scorers == {"train": "pytorch", "test_unlabeled": "pytorch"}
    run = tmp_path / "run"
    shutil.copytree(teacher_run, run)
    run_teacher(teacher_config(sst2_small, tiny_bert_dir, scorer="onnx"), run)  # trained: rescores only
    onnx_dir = run / "teacher"
    metrics = json.loads((onnx_dir / "metrics.json").read_text())
    assert metrics["scorer"]["name"] == "onnx-fp32-o2" and metrics["scorer"]["max_abs_diff"] <= 1e-4
    assert read_model_info(onnx_dir).scorers == {"train": "onnx-fp32-o2", "test_unlabeled": "onnx-fp32-o2"}
    for name in ("train", "test_unlabeled"):
        a, b = (np.load(d / "logits" / f"{name}.npy") for d in (onnx_dir, torch_dir))
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-4 and np.abs(a).max() > 0
        parts = json.loads((onnx_dir / "logits" / f"{name}.manifest.json").read_text())["parts"]
        assert parts["scorer"] == "onnx-fp32-o2"
    data = load_dataset(DataSpec(path=str(sst2_small)))
    pytorch_parts = fingerprint_parts(teacher_dir=onnx_dir, max_length=32, data_files=split_files("train", data, None),
                                      split=data.train)
    with pytest.raises(CacheError, match="stale logit cache — it was made from a different scorer"):
        open_logit_cache(onnx_dir / "logits", "train", expected_parts=pytorch_parts)
    assert student_stage.main(student_args(run, "--student_ce=false", "--max_steps=2")) == 0  # reads it


def test_onnx_scorer_refuses_a_graph_that_disagrees(teacher_run, tmp_path):
    from transformers import AutoTokenizer

    from distill.data import DataSpec, load_dataset
    from distill.scoring import ScorerError, onnx_scorer, resolve_scorer
    from distill.tokens import encode

    teacher = tmp_path / "teacher"
    shutil.copytree(teacher_run / "teacher", teacher)  # the graph is built into it
    data = load_dataset(DataSpec(path=json.loads((teacher / "distill.json").read_text())["data"]["path"]))
    dev = encode(AutoTokenizer.from_pretrained(teacher), data.dev, data.label_map.encode(data.dev), 32)
    wrong = np.zeros((len(data.dev), 2), dtype=np.float32) + np.array([0.0, 1.0], dtype=np.float32)
    with pytest.raises(ScorerError, match=r"scorer/o2/model.onnx: its dev logits differ from PyTorch's by up to"):
        onnx_scorer(teacher, kind="onnx", threads=1, dev=dev, reference=wrong, batch_size=64)
    assert resolve_scorer("onnx", torch.device("cpu")) == "onnx"
    with pytest.raises(ConfigError, match="--scorer=onnx: the ONNX Runtime scorer runs on CPU"):
        resolve_scorer("onnx", torch.device("cuda"))
    with pytest.raises(ConfigError, match="--scorer='tvm': choose one of pytorch, onnx, onnx-int8"):
        resolve_scorer("tvm", torch.device("cpu"))


def test_eval_dev_logs_the_dev_curve_but_choices_follow_the_holdout(teacher_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(teacher_run / "teacher", run / "teacher")
    args = student_args(run, "--student_ce=false", "--use_transfer=false", "--evals_per_epoch=2", "--eval_dev=true")
    assert student_stage.main([a for a in args if a != "--holdout_rows=0"] + ["--holdout_rows=64"]) == 0
    history = json.loads((run / "student" / "metrics.json").read_text())["history"]
    assert len(history) == 4 and all(0 <= h["eval"]["dev_accuracy"] <= 1 and h["eval_set"] == "holdout"
                                     for h in history)
    best = -1.0
    for h in history:  # "best" marks a new best holdout accuracy, whatever dev did
        assert h["best"] == (h["eval"]["accuracy"] > best)
        best = max(best, h["eval"]["accuracy"])

"""Pieces of the training loop: the schedule, the data order, metrics, the log line, the settings
checks, and the stop on a non-finite gradient (a toy model)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from distill.config import ConfigError
from distill.errors import PipelineError
from distill.metrics import classification_metrics
from distill.trainer import (
    LogWindow,
    LoopState,
    NonFiniteError,
    TrainConfig,
    check_loop_settings,
    epoch_batches,
    evaluation_steps,
    format_log_line,
    get_lr,
    train,
)


def test_get_lr_warms_up_then_decays_to_zero():
    lrs = [get_lr(s, lr=1.0, warmup_steps=10, total_steps=100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert get_lr(100, lr=1.0, warmup_steps=10, total_steps=100) == 0.0
    assert get_lr(55, lr=2.0, warmup_steps=10, total_steps=100) == pytest.approx(2.0 * 45 / 90)


@pytest.mark.parametrize("bucket_batches", [1, 8])
def test_epoch_batches_cover_rows_once_and_repeat_for_a_seed(bucket_batches):
    lengths = np.random.default_rng(1).integers(2, 80, size=1000)
    batches = epoch_batches(lengths, epoch=0, seed=3, batch_size=32, bucket_batches=bucket_batches)
    rows = np.concatenate(batches)
    assert len(batches) == 1000 // 32 and all(len(b) == 32 for b in batches)
    assert len(np.unique(rows)) == len(rows)  # no row twice in an epoch
    again = epoch_batches(lengths, epoch=0, seed=3, batch_size=32, bucket_batches=bucket_batches)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    other = epoch_batches(lengths, epoch=1, seed=3, batch_size=32, bucket_batches=bucket_batches)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=True))


def test_bucketing_cuts_padding():
    lengths = np.random.default_rng(2).integers(2, 80, size=4000)
    padded = {k: sum(lengths[b].max() * len(b) for b in epoch_batches(lengths, epoch=0, seed=0, batch_size=32,
                                                                       bucket_batches=k)) for k in (1, 50)}
    assert padded[50] < 0.8 * padded[1]


def test_ranks_split_each_global_batch():
    lengths = np.arange(64)
    whole = epoch_batches(lengths, epoch=0, seed=0, batch_size=8, bucket_batches=4)
    r0 = epoch_batches(lengths, epoch=0, seed=0, batch_size=8, bucket_batches=4, rank=0, world=2)
    r1 = epoch_batches(lengths, epoch=0, seed=0, batch_size=8, bucket_batches=4, rank=1, world=2)
    for w, a, b in zip(whole, r0, r1, strict=True):
        assert sorted(np.concatenate([a, b])) == sorted(w) and len(a) == len(b) == 4


def test_classification_metrics_by_hand():
    labels = np.array([0, 0, 1, 1, 2])
    logits = np.eye(3)[[0, 1, 1, 1, 0]]  # predictions 0, 1, 1, 1, 0
    m = classification_metrics(logits, labels, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["per_class"]["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3) and m["per_class"]["b"]["recall"] == 1.0
    assert m["per_class"]["c"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_log_line_shows_the_parts_the_stage_has():
    row = {"step": 5, "epoch": 0.5, "loss": 0.4, "ce": 0.3, "lr": 1e-4, "samples_per_s": 30.0,
           "eval_set": "holdout", "eval": {"accuracy": 0.8, "macro_f1": 0.79}, "best": True}
    line = format_log_line(row, 10, early_stop=False)
    assert "ce 0.3000" in line and "kd" not in line and line.endswith("best")
    assert "holdout accuracy 0.8000 macro_f1 0.7900" in line
    line = format_log_line({**row, "kd": 0.1, "hidden": 0.25, "attn": 0.05}, 10, early_stop=False)
    assert "ce 0.3000 | kd 0.1000 | hidden 0.2500 | attn 0.0500 | lr" in line
    line = format_log_line({**row, "kd": 0.1, "best": False}, 10, early_stop=True)
    assert "kd 0.1000" in line and line.endswith("early stop")


def test_log_window_means_are_per_step_and_speed_is_rows_over_seconds():
    window = LogWindow()
    window.add(1.0, {"ce": 0.6, "kd": 0.4}, samples=32, seconds=2.0)
    window.add(3.0, {"ce": 1.4}, samples=32, seconds=6.0)  # a step without a kd term still counts
    assert window.means() == pytest.approx({"loss": 2.0, "ce": 1.0, "kd": 0.2, "samples_per_s": 8.0})
    assert LogWindow().means() == {"loss": 0.0, "samples_per_s": 0.0}  # no steps: no division by zero


def test_loop_state_keeps_the_best_and_stops_after_patience_evaluations_without_gain():
    state = LoopState(step=10)
    assert state.record(0.5, patience=2) and (state.best_score, state.best_step) == (0.5, 10)
    state.step = 20
    assert not state.record(0.5, patience=2) and not state.stopped_early  # a tie is no gain
    state.step = 30
    assert not state.record(0.4, patience=2) and state.stopped_early and state.best_step == 10
    never = LoopState()
    assert not any(never.record(-1.0, patience=0) for _ in range(5)) and not never.stopped_early


class _Rows:
    """The least a training set gives ``train``: (R,) lengths and batches of one input tensor."""

    def __init__(self, n: int):
        self.lengths = np.ones(n, dtype=np.int64)
        self.x = torch.ones(n, 1)

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, rows: np.ndarray, device) -> dict:
        return {"x": self.x[rows]}


class _Root(torch.nn.Module):
    """sqrt(|w|) at w = 0: a finite loss (0) whose gradient is not finite."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1, 1))

    def forward(self, x):
        return SimpleNamespace(logits=x @ self.w, root=torch.sqrt(self.w.abs()).sum())


def test_a_non_finite_gradient_stops_training_even_without_clipping(tmp_path):
    model = _Root()
    cfg = TrainConfig(batch_size=2, epochs=1, grad_clip=0.0, progress=False, save_every_steps=0)
    with pytest.raises(NonFiniteError) as err:
        train(model, cfg=cfg, train_set=_Rows(4), evaluate=lambda m: {"score": 0.0}, eval_name="dev",
              loss_fn=lambda out, rows, batch: (out.root, {}), out_dir=tmp_path, save_best=lambda m, d: None)
    assert str(err.value) == ("step 1/2: not finite: grad norm nan; training stopped before this update, no "
                              "checkpoint had been written yet (try a lower --lr, or check what feeds the term named)")
    assert isinstance(err.value, PipelineError) and model.w.item() == 0.0  # the update was not made


class _Line(torch.nn.Module):
    """x @ w: a smooth toy loss whose training the loop can run to its end."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1, 1))

    def forward(self, x):
        return SimpleNamespace(logits=x @ self.w)


@pytest.mark.parametrize("evals_per_epoch, evals, expected", [
    (2, None, [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]),  # 5 epochs of 6 steps, 2 an epoch
    (1, 3, [10, 20, 30]),  # 3 over the whole run, whatever the epochs
    (4, 4, [8, 15, 22, 30]),  # evals wins over evals_per_epoch; rounded, the last at the end
])
def test_the_loop_evaluates_at_the_steps_its_settings_name(tmp_path, evals_per_epoch, evals, expected):
    cfg = TrainConfig(batch_size=2, epochs=5, evals_per_epoch=evals_per_epoch, evals=evals, patience=0,
                      progress=False, save_every_steps=0)
    assert sorted(evaluation_steps(cfg, steps_per_epoch=6)) == expected
    seen = []
    model = _Line()
    train(model, cfg=cfg, train_set=_Rows(12), evaluate=lambda m: seen.append(1) or {"score": float(len(seen))},
          eval_name="dev", loss_fn=lambda out, rows, batch: (out.logits.square().mean(), {}), out_dir=tmp_path,
          save_best=lambda m, d: None)
    assert len(seen) == len(expected)


def test_batch_settings_the_loop_cannot_run_with():
    with pytest.raises(ConfigError, match=r"^--evals_per_epoch=1, --evals=0: evaluations must be 1 or more$"):
        check_loop_settings(TrainConfig(evals=0), rows=100, world=1)
    with pytest.raises(ConfigError) as err:
        check_loop_settings(TrainConfig(batch_size=15), rows=100, world=2)
    assert str(err.value) == "--batch_size=15: does not split evenly over 2 processes"
    with pytest.raises(ConfigError) as err:
        check_loop_settings(TrainConfig(batch_size=32, epochs=0), rows=100, world=1)
    assert str(err.value) == "--batch_size=32, --epochs=0: both must be 1 or more"
    check_loop_settings(TrainConfig(batch_size=32), rows=32, world=2)  # one full batch, 16 rows a process


def test_a_disk_that_fills_during_a_checkpoint_keeps_the_previous_one(tmp_path):
    import errno

    from distill.disk import DiskFullError
    from distill.trainer import atomic_save_dir

    target = tmp_path / "checkpoint"
    atomic_save_dir(target, lambda d: (d / "state.json").write_text("step 2"))

    def full(directory):
        (directory / "state.json").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError) as err:
        atomic_save_dir(target, full, needed=1234)
    assert str(err.value) == (f"{tmp_path / 'checkpoint.tmp'}: the disk filled while writing it (about 1,234 "
                              "bytes); the previous checkpoint is kept; free some space and rerun")
    assert (target / "state.json").read_text() == "step 2" and not (tmp_path / "checkpoint.tmp").exists()


@pytest.mark.parametrize("scores, steps, stopped", [
    ([3.0, 2.0, 1.0], 18, False),  # no gain at the last two evaluations: the run is over, not stopped early
    ([3.0, 2.0, 1.0, 0.0, 0.0], 18, True),  # no gain twice with two evaluations to go: stopped at step 18
])
def test_early_stop_is_reported_only_when_steps_were_left(tmp_path, scores, steps, stopped):
    cfg = TrainConfig(batch_size=2, epochs=len(scores), evals_per_epoch=1, patience=2, progress=False,
                      save_every_steps=0)
    left = list(scores)
    summary = train(_Line(), cfg=cfg, train_set=_Rows(12), evaluate=lambda m: {"score": left.pop(0)},
                    eval_name="dev", loss_fn=lambda out, rows, batch: (out.logits.square().mean(), {}),
                    out_dir=tmp_path, save_best=lambda m, d: None)
    assert (summary["step"], summary["stopped_early"], summary["best_step"]) == (steps, stopped, 6)

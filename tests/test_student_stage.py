"""The student stage's shared parts (students/stage.py) and the classification parts' small units
(students/distill.py): the control's settings, the transfer-set check, the one task dispatch, the
layer-loss settings and the transfer-row sample. The stage end to end: tests/test_pipeline.py
(classification) and tests/test_ner.py (NER)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from distill.config import ConfigError
from distill.data import Split
from students.config import NER_PRESETS, PRESETS, StudentConfig
from students.distill import CLASSIFICATION, soft_target_line, student_task, teacher_use, training_split
from students.ner import NER
from students.stage import StageInputs, check_labels, control_settings, transfer_names


def inputs(tmp_path: Path, *, train: Split | None = None, kept=(0, 1), transfer=("a", "b")) -> StageInputs:
    teacher = SimpleNamespace(transfer={name: {} for name in transfer}, data=SimpleNamespace(seed=0))
    data = SimpleNamespace(train=train)
    return StageInputs(teacher_dir=tmp_path / "teacher", teacher=teacher, data=data, kept=np.array(kept),
                       eval_rows=None, eval_name="dev", out=tmp_path / "student", device=None, rank=0)


def test_one_dispatch_gives_each_task_its_presets():
    assert student_task("ner") is NER and NER.presets is NER_PRESETS
    assert student_task("classification") is CLASSIFICATION and CLASSIFICATION.presets is PRESETS
    assert student_task(None) is CLASSIFICATION  # no teacher yet: main reports it missing


def test_the_control_is_ce_only_on_the_labelled_rows():
    cfg = StudentConfig(w_kd=0.7, w_ce=0.3, pseudo_labels=True, epochs=1, ce_epochs=4, patience=3, ce_patience=0,
                        w_hidden=1.0, layer_source="cached")
    control = CLASSIFICATION.settings(cfg, role="student_ce")
    assert (control.w_kd, control.w_ce, control.use_transfer, control.pseudo_labels) == (0.0, 1.0, False, False)
    assert (control.epochs, control.patience, control.w_hidden, control.w_attn, control.online) == (4, 0, 0.0, 0.0,
                                                                                                  False)
    assert CLASSIFICATION.settings(cfg, role="student") is cfg
    # a tagger's control reads the same --ce_epochs / --ce_patience (it once took --patience instead)
    ner = NER.settings(StudentConfig(w_kd=0.7, epochs=8, ce_epochs=None, patience=3, ce_patience=2), role="student_ce")
    assert (ner.w_kd, ner.w_ce, ner.use_transfer, ner.epochs, ner.patience) == (0.0, 1.0, False, 8, 2)
    assert NER.settings(StudentConfig(patience=3), role="student").patience == 3  # the KD student keeps its own
    assert control_settings(cfg, seed=5).seed == 5  # a task's further changes


def test_settings_refuse_what_the_task_cannot_do():
    with pytest.raises(ConfigError, match="expected online or cached"):
        CLASSIFICATION.settings(StudentConfig(layer_source="disk"), role="student")
    with pytest.raises(ConfigError, match="attention maps are not cached"):
        CLASSIFICATION.settings(StudentConfig(w_hidden=1, w_attn=1, layer_source="cached"), role="student")
    with pytest.raises(ConfigError, match="--online apply to classification only"):
        NER.settings(StudentConfig(online=True), role="student")


def test_where_a_classifier_reads_its_teacher():
    for cfg in (StudentConfig(), StudentConfig(layer_source="cached")):  # no layer loss: cached logits only
        use = teacher_use(cfg)
        assert (use.cached_layers, use.layers_on, use.online) == (False, False, False)
    online = teacher_use(StudentConfig(w_hidden=1))
    assert (online.cached_layers, online.layers_on, online.online) == (False, True, True)
    cached = teacher_use(StudentConfig(w_hidden=1, layer_source="cached"))
    assert (cached.cached_layers, cached.layers_on, cached.online) == (True, True, False)
    assert teacher_use(StudentConfig(online=True)).online


def test_transfer_names_are_checked_against_the_teachers(tmp_path):
    where = inputs(tmp_path)
    assert transfer_names(StudentConfig(), where) == ["a", "b"]
    assert transfer_names(StudentConfig(transfer=["b"]), where) == ["b"]
    assert transfer_names(StudentConfig(use_transfer=False, transfer=["nope"]), where) == []
    with pytest.raises(ConfigError, match=r"--transfer=nope: the teacher scored no transfer set of that name "
                                          r"\(it has: a, b; see .*teacher/distill.json\)"):
        transfer_names(StudentConfig(transfer=["a", "nope"]), where)


def test_labels_that_changed_are_one_line(tmp_path):
    check_labels(tmp_path, ["0", "1"], ["0", "1"], what="labels")
    with pytest.raises(ConfigError, match=r"distill.json: tags \['O'\] but the data now has \['O', 'B-X'\]"):
        check_labels(tmp_path, ["O"], ["O", "B-X"], what="tags")


def test_training_split_samples_the_transfer_rows_and_keeps_their_teacher_rows(tmp_path):
    train = Split(texts=[f"t{i}" for i in range(5)], labels=["0"] * 5, source="train.tsv")
    sets = {"a": Split(texts=["a0", "a1", "a2"], labels=None, source="a"),
            "b": Split(texts=["b0", "b1"], labels=None, source="b")}
    where = inputs(tmp_path, train=train, kept=(1, 3))
    labelled = train.subset(where.kept)
    split, rows = training_split(StudentConfig(), where, labelled, sets)
    assert split.texts == ["t1", "t3", "a0", "a1", "a2", "b0", "b1"] and split.labels is None
    assert rows.tolist() == [1, 3, 5, 6, 7, 8, 9]  # train's 5 rows, then each set in turn
    capped, capped_rows = training_split(StudentConfig(transfer_rows=2), where, labelled, sets)
    assert capped.texts[:2] == ["t1", "t3"] and len(capped) == 4
    assert [5 + ["a0", "a1", "a2", "b0", "b1"].index(t) for t in capped.texts[2:]] == capped_rows[2:].tolist()
    assert capped_rows[2:].tolist() == sorted(capped_rows[2:].tolist())  # set order kept
    again, _ = training_split(StudentConfig(transfer_rows=2), where, labelled, sets)
    assert again.texts == capped.texts  # seeded by the data seed


def test_the_soft_target_line_says_when_a_teacher_barely_commits():
    # two classes: the top probability at T is the sigmoid of margin / T (a second formula)
    unsure = np.array([[0.0, 0.35], [0.35, 0.0], [0.1, 0.0]] * 5, dtype=np.float32)  # (15, 2) margins 0.35, 0.35, 0.1
    line = soft_target_line(unsure, 2.0)
    assert f"median top probability {1 / (1 + np.exp(-0.35 / 2)):.3f} over 15 rows" in line
    assert "uniform 0.500" in line and "--pseudo_labels=true" in line
    sure = np.array([[4.0, -2.0], [-3.0, 3.0]], dtype=np.float16)  # (2, 2) margins 6: 0.9526 at T 2
    line = soft_target_line(sure, 2.0)
    assert f"median top probability {1 / (1 + np.exp(-3.0)):.3f}" in line and "pseudo" not in line
    assert "pseudo" in soft_target_line(sure, 20.0)  # a high T flattens even a sure teacher's targets
    assert "may teach better" not in soft_target_line(unsure, 2.0, pseudo_labels=True)  # already on: no advice
    three = np.array([[9.0, 0.0, 0.0]], dtype=np.float32)  # (1, 3): 1 / (1 + 2 e^-9)
    assert f"{1 / (1 + 2 * np.exp(-9.0)):.3f}" in soft_target_line(three, 1.0)


@pytest.mark.parametrize("rank, order", [(0, ["build", "barrier"]), (1, ["barrier", "build"])])
def test_rank0_builds_a_token_store_before_the_other_ranks(monkeypatch, rank, order):
    """Under torchrun rank 0 writes the store and only then do the others read it (the online
    teacher's store was built by every rank at once); without a process group: no barrier."""
    import students.stage as stage

    events = []

    class FakeDist:
        @staticmethod
        def is_initialized():
            return True

        @staticmethod
        def barrier():
            events.append("barrier")

    monkeypatch.setattr(stage, "dist", FakeDist)
    assert stage.rank0_first(rank, lambda: events.append("build") or 7) == 7
    assert events == order
    monkeypatch.undo()
    events.clear()
    stage.rank0_first(rank, lambda: events.append("build"))
    assert events == ["build"]

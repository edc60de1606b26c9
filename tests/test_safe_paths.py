"""Paths a user gives are taken for what they are, and nothing outside the run is touched:
export's model names are names, ``make clean`` removes only a run a stage made (its marker),
predict loads safetensors only, and a model name that is no local folder reaches the hub only
under ``DISTILL_ALLOW_HUB=1``. Each misuse: one line, exit status 2, nothing made or removed."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distill.artifacts import RUN_MARKER, ModelInfo, claim_run_dir, write_model_info
from distill.data import DataSpec
from distill.modeling import HUB_ENV, ModelSourceError, load_classifier, resolve_model_name

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
ENV.pop(HUB_ENV, None)


def in_process(capsys, *args: str) -> tuple[int, str]:
    """``python -m distill <args>`` without a new interpreter: (exit status, stderr)."""
    from distill.__main__ import main

    status = main(list(args))
    return status, capsys.readouterr().err


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# ----------------------------------------------------------------------------- export --models


@pytest.mark.parametrize("given", ["../x", "a/b", "ABS", "..", ".hidden", "teacher,../../x"])
def test_export_model_names_are_names_not_paths(tmp_path, capsys, given):
    """A path in --models would build onnx/<path> and onnx/<path>.failed, replaced or removed: refused
    before anything is built. ``x`` beside the run is a model folder that ../x would have reached."""
    run, outside = tmp_path / "run", tmp_path / "x"
    (run / "teacher").mkdir(parents=True)
    (run / "teacher" / "config.json").write_text("{}")
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (tmp_path / "x.failed").mkdir()  # what a failed export of ../x would have replaced
    before = tree(tmp_path)
    given = str(outside) if given == "ABS" else given
    status, err = in_process(capsys, "export", "--run-dir", str(run), f"--models={given}")
    name = given.split(",")[-1]  # the first that is not a name
    assert status == 2
    assert err == (f"error: --models={given}: {name!r} is not a model name: give the name of a folder directly "
                   "under the run directory (e.g. teacher, student), not a path\n")
    assert tree(tmp_path) == before  # nothing built (no onnx/), nothing removed


# ----------------------------------------------------------------------------- make clean

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make clean is a Makefile target: needs make")
CLEAN_REFUSED = (r"Makefile:\d+: \*\*\* {run}: not removed: it has no \.distill-run marker, so no distill stage "
                 r"made it \(a run from before markers: touch {run}/\.distill-run, then make clean\)\.  Stop\.")


def make_clean(run: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "clean", f"RUN={run}"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=60)


@needs_make
def test_clean_refuses_a_directory_no_stage_made(tmp_path):
    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    for run in (mine, tmp_path):  # a folder of the user's, and one holding it
        done = make_clean(str(run))
        assert done.returncode == 2 and done.stdout == ""
        assert re.fullmatch(CLEAN_REFUSED.format(run=re.escape(str(run))), done.stderr.strip()), done.stderr
        assert done.stderr.count("\n") == 1
    assert (mine / "thesis.tex").read_text() == "years of work"
    done = make_clean("")
    assert done.returncode == 2
    assert re.fullmatch(r"Makefile:\d+: \*\*\* make clean needs RUN=<a run directory>; nothing removed\.  Stop\.",
                        done.stderr.strip()), done.stderr


@needs_make
def test_clean_removes_a_run_a_stage_made(tmp_path, sst2_small, minilm_path):
    """``make inspect`` writes into a new run directory: both are marked, and ``make clean`` removes the run."""
    run = tmp_path / "runs" / "demo"
    from distill import inspect as inspect_stage

    assert inspect_stage.main(["--data", str(sst2_small), "--out", str(run / "inspect"),
                               f"--base_model={minilm_path}"]) == 0
    assert (run / RUN_MARKER).is_file() and (run / "inspect" / RUN_MARKER).is_file()
    assert "make clean" in (run / RUN_MARKER).read_text()
    done = make_clean(str(run))
    assert done.returncode == 0, done.stderr
    assert not run.exists() and (tmp_path / "runs").is_dir()


def test_claim_marks_only_what_is_distills(tmp_path):
    new = claim_run_dir(tmp_path / "a" / "run", stage="teacher")  # both a and a/run made here
    assert (new / RUN_MARKER).is_file() and (tmp_path / "a" / RUN_MARKER).is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (claim_run_dir(empty, stage="teacher") / RUN_MARKER).is_file()  # nothing in it to lose
    staged = tmp_path / "staged"
    claim_run_dir(staged / "inspect", stage="inspect")
    (staged / RUN_MARKER).unlink()  # as if staged/ had existed before inspect ran
    assert (claim_run_dir(staged, stage="teacher") / RUN_MARKER).is_file()  # holds only a marked inspect/
    users = tmp_path / "users"
    (users / "unmarked").mkdir(parents=True)
    (users / "notes.txt").write_text("mine")
    assert not (claim_run_dir(users, stage="teacher") / RUN_MARKER).exists()  # used, never claimed
    (users / "notes.txt").unlink()
    assert not (claim_run_dir(users, stage="teacher") / RUN_MARKER).exists()  # a folder distill did not mark
    with pytest.raises(FileNotFoundError, match="not a directory"):
        claim_run_dir(tmp_path / "a" / RUN_MARKER, stage="teacher")  # a file is no run directory


def test_a_teacher_run_is_claimed_before_training(tmp_path, capsys, sst2_small):
    """The teacher stage marks the run as soon as its inputs are checked; a bad base model stops
    it before: one line, exit 2, no run directory."""
    run = tmp_path / "run"
    status, err = in_process(capsys, "teacher", "--data", str(sst2_small), "--run-dir", str(run),
                             "--base_model=no-such-model")
    assert status == 2
    assert err == ("error: no-such-model: no such model folder (the local models: packaged, mpnet, paraphrase-l3, "
                   f"or a folder with config.json; a model hub name is fetched only with {HUB_ENV}=1)\n")
    assert not run.exists()
    status, err = in_process(capsys, "teacher", "--data", str(sst2_small), "--run-dir", str(run),
                             f"--base_model={tmp_path / 'nowhere'}")
    assert status == 2 and err == f"error: {tmp_path / 'nowhere'}: no such model folder\n"
    assert not run.exists()


# ----------------------------------------------------------------------------- predict: safetensors only


class _Trap:
    """Unpickling this writes a file: what a hostile pytorch_model.bin could do instead."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "unpickled"))


def model_folder(out: Path, tiny_bert_dir: Path, data_dir: Path) -> Path:
    """The tiny BERT as a model folder predict reads (config, safetensors weights, tokenizer, distill.json)."""
    shutil.copytree(tiny_bert_dir, out)
    write_model_info(out, ModelInfo(role="teacher", task="classification", labels=["0", "1"], max_length=32,
                                    data=DataSpec(path=str(data_dir))))
    return out


def test_predict_refuses_pickled_weights(tmp_path, tiny_bert_dir, sst2_small):
    folder = model_folder(tmp_path / "model", tiny_bert_dir, sst2_small)
    (folder / "model.safetensors").unlink()
    trap = tmp_path / "pwned"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(trap)))
    done = subprocess.run([sys.executable, "-m", "distill", "predict", "--model", str(folder)], input="a fine film\n",
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"error: {folder / 'pytorch_model.bin'}: predict loads safetensors weights only "
                           "(model.safetensors; a .bin file is a pickle, which can run code when loaded); re-save "
                           "the model with save_pretrained(safe_serialization=True)\n")
    assert not trap.exists()


def test_predict_reads_the_safetensors_beside_a_pickle(tmp_path, tiny_bert_dir, sst2_small):
    """Both files present: the safetensors weights are loaded, the pickle is never opened."""
    from distill.predict import load_model, predict_logits

    folder = model_folder(tmp_path / "model", tiny_bert_dir, sst2_small)
    trap = tmp_path / "pwned"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(trap)))
    model = load_model(folder)
    assert predict_logits(model, ["a fine film", "a dull one"], batch_size=2).shape == (2, 2)
    assert not trap.exists()


# ----------------------------------------------------------------------------- the hub: only when asked


def test_a_name_that_is_no_folder_is_an_error_unless_the_hub_is_allowed(tmp_path, monkeypatch):
    monkeypatch.delenv(HUB_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    message = (f"bert-base-uncased: no such model folder (the local models: packaged, mpnet, paraphrase-l3, or a "
               f"folder with config.json; a model hub name is fetched only with {HUB_ENV}=1)")
    with pytest.raises(ModelSourceError) as err:
        resolve_model_name("bert-base-uncased")
    assert str(err.value) == message
    with pytest.raises(ModelSourceError, match=r"^some-org/some-model: no such model folder \(the local"):
        resolve_model_name("some-org/some-model")
    monkeypatch.setenv(HUB_ENV, "1")
    assert resolve_model_name("some-org/some-model") == "some-org/some-model"  # passed on to the hub
    with pytest.raises(ModelSourceError, match=r"^\./x: no such model folder$"):
        resolve_model_name("./x")  # a path is never a hub name, even when the hub is allowed


def test_the_hub_path_is_reached_when_allowed(monkeypatch):
    """Under DISTILL_ALLOW_HUB=1 the name goes to transformers' hub download (offline here, so its own
    error): the online path is the library's, untouched."""
    monkeypatch.setenv(HUB_ENV, "1")
    with pytest.raises(OSError) as err:
        load_classifier("some-org/some-model", id2label={0: "a", 1: "b"})
    assert not isinstance(err.value, ModelSourceError) and "huggingface.co" in str(err.value)


def test_a_pretrained_student_name_is_checked(tmp_path, monkeypatch):
    from students.build import build_student
    from students.config import StudentConfig

    monkeypatch.delenv(HUB_ENV, raising=False)
    with pytest.raises(ModelSourceError, match=r"^no-such-student: no such model folder \(the local"):
        build_student(StudentConfig(student="pretrained", pretrained="no-such-student"), teacher_dir=tmp_path,
                      id2label={0: "a", 1: "b"})

"""distill/lock.py: one writer per stage directory; a second one is refused in one line naming the
holder; a lock whose holder died is taken over with a line saying so; torchrun's other ranks take
none; a folder the lock made is gone again when the stage left it empty."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.errors import PipelineError
from distill.lock import LOCK_NAME, StageLockedError, stage_lock

ROOT = Path(__file__).resolve().parents[1]
HOST = socket.gethostname()


def holder(directory: Path) -> dict:
    return json.loads((directory / LOCK_NAME).read_text())


def refusal(directory: Path, held: dict) -> str:
    return (f"{directory}: in use by pid {held['pid']} on {held['host']} (started {held['started']}); "
            "wait for it to finish or stop it, then rerun")


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    stage = tmp_path / "run" / "teacher"
    with stage_lock(stage):
        held = holder(stage)
        assert held["pid"] == os.getpid() and held["host"] == HOST
        with pytest.raises(StageLockedError) as err, stage_lock(stage):
            pass
        assert str(err.value) == refusal(stage, held) and isinstance(err.value, PipelineError)
        assert holder(stage) == held  # the refused writer changed nothing
    assert not (stage / LOCK_NAME).exists()  # a clean release leaves no lock file
    with stage_lock(stage):  # and the next writer gets it
        assert holder(stage)["pid"] == os.getpid()


def test_a_lock_file_without_a_live_holder_is_taken_over_with_a_line(tmp_path, capsys):
    stage = tmp_path / "student"
    stage.mkdir()
    (stage / "kept.txt").write_text("earlier work")
    dead = int(Path("/proc/sys/kernel/pid_max").read_text())  # pids are below pid_max: never a live one
    (stage / LOCK_NAME).write_text(json.dumps({"pid": dead, "host": HOST, "started": "2026-12-01T10:00:00+00:00"}))
    with stage_lock(stage):
        assert capsys.readouterr().out == (f"lock: {stage}: taking over the lock left by pid {dead} on {HOST} "
                                           "(started 2026-12-01T10:00:00+00:00), which is no longer running\n")
        assert holder(stage)["pid"] == os.getpid()
    assert (stage / "kept.txt").read_text() == "earlier work"


def test_other_ranks_under_torchrun_take_no_lock(tmp_path, monkeypatch):
    stage = tmp_path / "student"
    with stage_lock(stage):
        held = holder(stage)
        monkeypatch.setenv("RANK", "1")
        with stage_lock(stage):  # rank 0 (here: this process) holds it for the group: no refusal
            assert holder(stage) == held
    monkeypatch.setenv("RANK", "0")
    with stage_lock(stage):
        pass


def test_a_folder_the_lock_made_goes_when_the_stage_left_it_empty(tmp_path):
    with pytest.raises(KeyboardInterrupt), stage_lock(tmp_path / "run" / "teacher"):
        raise KeyboardInterrupt  # a stage that fails before writing anything
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()
    with stage_lock(tmp_path / "run" / "teacher") as stage:
        (stage / "model.safetensors").write_bytes(b"w")
    assert (tmp_path / "run" / "teacher" / "model.safetensors").exists()


def test_the_lock_of_a_killed_process_is_released_and_taken_over(tmp_path, capsys):
    """A real second process: while it holds the lock this one is refused; SIGKILL leaves its lock
    file behind but the kernel drops the flock, and the next writer takes over, naming it."""
    stage = tmp_path / "teacher"
    code = ("import sys, time; from distill.lock import stage_lock\n"
            f"with stage_lock({str(stage)!r}):\n    print('held', flush=True)\n    time.sleep(120)\n")
    other = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert other.stdout.readline() == "held\n"
        held = holder(stage)
        assert held["pid"] == other.pid
        with pytest.raises(StageLockedError) as err, stage_lock(stage):
            pass
        assert str(err.value) == refusal(stage, held)
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
    assert holder(stage) == held  # SIGKILL ran no clean-up: the file is still there
    time.sleep(0.05)
    with stage_lock(stage):
        assert capsys.readouterr().out == (f"lock: {stage}: taking over the lock left by pid {held['pid']} on "
                                           f"{HOST} (started {held['started']}), which is no longer running\n")

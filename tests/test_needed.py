"""tests/needed.py: a package the suite needs but cannot import fails the suite (a broken install
must not pass as a smaller green run); DISTILL_ALLOW_SKIP=1 makes it a skip instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

PROBE = '''
from needed import needed

mod = needed("no_such_module_for_distill", what="the probe's tests")


def test_probe():
    assert mod is not None
'''


def run_probe(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(PROBE)
    environ = {k: v for k, v in os.environ.items() if k != "DISTILL_ALLOW_SKIP"} | env
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--rootdir",
                           str(tmp_path), str(tmp_path / "test_probe.py")], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_a_missing_package_fails_the_suite(tmp_path):
    done = run_probe(tmp_path)
    assert done.returncode != 0, done.stdout
    assert ("no_such_module_for_distill is not installed (No module named 'no_such_module_for_distill'): the probe's "
            "tests need it; `make setup` installs it (or set DISTILL_ALLOW_SKIP=1 to skip these tests)") in done.stdout
    assert "1 error" in done.stdout


def test_skipping_is_opt_in(tmp_path):
    done = run_probe(tmp_path, DISTILL_ALLOW_SKIP="1")
    assert done.returncode == 5, done.stdout  # pytest's "no tests collected": the file was skipped, not failed
    assert "1 skipped" in done.stdout and "skipped because DISTILL_ALLOW_SKIP=1" in done.stdout

"""Run a pipeline stage in its own process: what the multi-run commands (compare, strategies) use,
so one run failing, running out of memory or being killed loses nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_stage(stage: str, args: list[str], *, log: Path, threads: int = 0) -> int:
    """``python -m distill <stage> <args>`` with its output appended to ``log`` (the command line
    first); ``threads`` > 0 sets OMP/MKL threads. Returns the exit status."""
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ python -m distill {stage} {' '.join(args)}\n")
        handle.flush()
        done = subprocess.run([sys.executable, "-m", "distill", stage, *args], stdout=handle,
                              stderr=subprocess.STDOUT, env=env)
    return done.returncode

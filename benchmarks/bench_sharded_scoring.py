"""Sharded scoring against one process: the same cache, and how much faster.

    python benchmarks/bench_sharded_scoring.py --teacher runs/demo/teacher --rows 16384 [--procs 2] [--threads 1]

On two scratch copies of a finished teacher, ``python -m distill score`` scores the same
``--rows`` augmented variants of the teacher's labelled rows: once as one process with
``--threads`` threads, once under ``torchrun --nproc_per_node=--procs`` with ``--threads`` threads
each. Prints rows/s of both, their ratio, and whether the two caches are byte-identical (else the
largest absolute difference). Check ``uptime`` first: on a busy machine the ratio means little.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_transfer_scale import scratch_copy  # noqa: E402  (same folder)


def score(run_dir: Path, *, rows: int, factor: int, procs: int, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] \
        if procs > 1 else [sys.executable]
    args = [*launcher, "-m", "distill", "score", "--run-dir", str(run_dir), "--transfer=augmented",
            f"--augment_factor={factor}", f"--transfer_rows={rows}", "--progress=false"]
    t0 = time.perf_counter()
    with open(run_dir / "score.log", "w") as log:
        done = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"scoring failed, see {run_dir / 'score.log'}")
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scratch", type=Path, default=REPO / "runs" / "sharded")
    args = parser.parse_args(argv)
    labelled = json.loads((args.teacher / "metrics.json").read_text())["train_rows"]
    factor = math.ceil(args.rows / labelled)
    results = {}
    for procs in (1, args.procs):
        run_dir = args.scratch / f"procs{procs}"
        scratch_copy(args.teacher, run_dir)
        wall = score(run_dir, rows=args.rows, factor=factor, procs=procs, threads=args.threads)
        cache = json.loads((run_dir / "teacher" / "metrics.json").read_text())["cache"]["augmented"]
        results[procs] = {"wall_s": round(wall, 1), "scoring_s": cache["seconds"], "rows_per_s": cache["rows_per_s"],
                          "load_1m_after": os.getloadavg()[0]}
        print(f"{procs} process(es) x {args.threads} thread(s): {cache['rows']} rows in {cache['seconds']:.1f}s "
              f"scoring ({cache['rows_per_s']:.0f} rows/s), {wall:.1f}s wall", flush=True)
    one = np.load(args.scratch / "procs1" / "teacher" / "logits" / "augmented.npy")
    many = np.load(args.scratch / f"procs{args.procs}" / "teacher" / "logits" / "augmented.npy")
    identical = (args.scratch / "procs1" / "teacher" / "logits" / "augmented.npy").read_bytes() == \
        (args.scratch / f"procs{args.procs}" / "teacher" / "logits" / "augmented.npy").read_bytes()
    ratio = results[args.procs]["rows_per_s"] / results[1]["rows_per_s"]
    print(f"ratio {args.procs} processes / 1: {ratio:.2f}x rows/s; caches "
          + ("byte-identical" if identical else f"differ, max |diff| {np.abs(one - many).max():.2e}"))
    (args.scratch / "sharded.json").write_text(json.dumps({"rows": args.rows, "threads": args.threads,
                                                          "results": results, "ratio": ratio,
                                                          "byte_identical": identical}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

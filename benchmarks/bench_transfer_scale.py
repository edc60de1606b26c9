"""Memory and speed of the transfer-set path as the set grows: tokenise -> store -> score -> train.

    python benchmarks/bench_transfer_scale.py --teacher runs/demo/teacher --rows 100000,1000000 \
        --score-chunks 0,4 --steps 150

For each size N, on a scratch copy of a finished teacher (the original is never written to):
1. ``python -m distill score``: N augmented variants of the teacher's labelled rows
   (``--transfer=augmented``, ``augment_factor`` = ceil(N / labelled rows), capped at N) are
   generated, filtered against dev and scored into the logit cache. ``--score-chunks`` time-boxes
   scoring to that many 4,096-row chunks (0: score everything), so rows/s projects the full time.
2. ``python -m distill distill`` for ``--steps`` steps on the labelled rows + the N transfer rows:
   the token store of every row is built (memory-mapped), then training reads batches from it.
   When the cache was time-boxed (incomplete), the student runs the teacher online instead of
   reading the cache: the same rows, store and batches; only the targets come from a forward pass.
Each stage runs in its own process and records its peak RSS (``peak_rss_mb`` in metrics.json);
this script prints one row per stage and size, and writes them as JSON beside the scratch runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], log: Path, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        done = subprocess.run([sys.executable, "-m", "distill", *args], stdout=handle, stderr=subprocess.STDOUT,
                              env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - t0


def scratch_copy(teacher: Path, run_dir: Path) -> None:
    """The teacher's model files and its training-split cache; no transfer caches, no outputs."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    target = run_dir / "teacher"
    shutil.copytree(teacher, target, ignore=shutil.ignore_patterns("logits", "checkpoint"))
    (target / "logits").mkdir()
    for f in (teacher / "logits").glob("train.*"):
        shutil.copy2(f, target / "logits" / f.name)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", type=Path, required=True, help="a finished teacher directory")
    parser.add_argument("--rows", default="100000,1000000", help="transfer-set sizes, comma-separated")
    parser.add_argument("--score-chunks", default="0,4", help="chunks to score per size (0: all), comma-separated")
    parser.add_argument("--steps", type=int, default=150, help="student steps per size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scratch", type=Path, default=REPO / "runs" / "scale")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.rows.split(",")]
    chunks = [int(x) for x in args.score_chunks.split(",")]
    labelled = json.loads((args.teacher / "metrics.json").read_text())["train_rows"]
    results = []
    for n, n_chunks in zip(sizes, chunks, strict=True):
        run_dir = args.scratch / f"rows{n}"
        scratch_copy(args.teacher, run_dir)
        factor = math.ceil(n / labelled)
        score_args = ["score", "--run-dir", str(run_dir), "--transfer=augmented", f"--augment_factor={factor}",
                      f"--transfer_rows={n}", "--progress=false"]
        if n_chunks:
            score_args.append(f"--cache_max_chunks={n_chunks}")
        wall = run(score_args, run_dir / "score.log", args.threads)
        teacher = json.loads((run_dir / "teacher" / "metrics.json").read_text())
        cache = teacher["cache"]["augmented"]
        results.append({"rows": n, "stage": "score", "peak_rss_mb": teacher["peak_rss_mb"], "wall_s": round(wall, 1),
                        "complete": cache["complete"], "rows_scored": cache.get("rows_scored_this_call", cache["rows"]),
                        "rows_per_s": cache["rows_per_s"], "threads": args.threads})
        print(json.dumps(results[-1]), flush=True)
        student_args = ["distill", "--run-dir", str(run_dir), "--student_ce=false", f"--max_steps={args.steps}",
                        "--progress=false", "--evals_per_epoch=1", "--save_every_steps=100000"]
        if not cache["complete"]:
            student_args.append("--online=true")
        wall = run(student_args, run_dir / "student.log", args.threads)
        student = json.loads((run_dir / "student" / "metrics.json").read_text())
        results.append({"rows": n, "stage": "student", "peak_rss_mb": student["peak_rss_mb"], "wall_s": round(wall, 1),
                        "train_rows": student["train_rows"], "steps": student["steps_done"],
                        "samples_per_s": student["train_samples_per_s"], "online_teacher": student["online"],
                        "threads": args.threads})
        print(json.dumps(results[-1]), flush=True)
    (args.scratch / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| rows | stage | peak RSS (MB) | wall (s) | detail |\n|---|---|---|---|---|")
    for r in results:
        detail = (f"{r['rows_scored']:,} rows scored at {r['rows_per_s']:.0f} rows/s" + ("" if r["complete"] else
                  " (time-boxed)")) if r["stage"] == "score" else (
            f"{r['train_rows']:,} rows, {r['steps']} steps at {r['samples_per_s']:.0f} samples/s"
            + (", teacher online" if r["online_teacher"] else ", cached logits"))
        print(f"| {r['rows']:,} | {r['stage']} | {r['peak_rss_mb']:.0f} | {r['wall_s']:.0f} | {detail} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

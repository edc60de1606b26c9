"""Student training speed from the logit cache vs with the teacher run online, back to back.

    .venv/bin/python benchmarks/bench_cache_vs_online.py --run-dir runs/demo [--epochs=1 ...]

Trains the same student twice for the same steps (one epoch by default, no CE-only control),
once reading the cached teacher logits and once running the teacher forward every step, into
``<run-dir>/bench_online/{cached,online}``, and prints the training samples/s of each (time in
training steps only, not eval) and their ratio. Extra ``--key=value`` go to the student config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import apply_overrides  # noqa: E402
from students.config import PRESETS  # noqa: E402
from students.distill import CLASSIFICATION, train_student  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    args, overrides = parser.parse_known_args(argv)
    run_dir = Path(args.run_dir)
    teacher_dir = run_dir / "teacher"
    cfg = apply_overrides(dataclasses.replace(PRESETS[args.preset], epochs=1, patience=0, progress=False),
                          overrides)
    rates = {}
    for mode in ("cached", "online"):
        metrics = train_student(dataclasses.replace(cfg, online=mode == "online"), task=CLASSIFICATION,
                                teacher_dir=teacher_dir, out=run_dir / "bench_online" / mode, role="student")
        rates[mode] = metrics["train_samples_per_s"]
    row = {"cached_samples_per_s": rates["cached"], "online_samples_per_s": rates["online"],
           "cached_over_online": round(rates["cached"] / rates["online"], 2), "epochs": cfg.epochs,
           "batch_size": cfg.batch_size, "machine": platform.processor() or platform.machine(),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    print(json.dumps(row, indent=2))
    (run_dir / "bench_online" / "result.json").write_text(json.dumps(row, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

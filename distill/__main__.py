"""``python -m distill <stage> [options]``: teacher | strategies | score | distill | compare | gap | export | bench |
predict | report.

Stage modules are imported only once chosen: the benchmark must set thread counts before torch
and onnxruntime are imported. An error in the input (data, options, a cache, another stage's
output) prints one line, ``error: <file>, line <n>: <problem>``, and exits with status 2; the
traceback only with ``--debug`` (or ``DISTILL_DEBUG=1``).
"""

from __future__ import annotations

import os
import sys
import traceback

USAGE = """usage: python -m distill <stage> [--data DIR] [--run-dir DIR] [--preset quick|full] [--key=value ...] [--debug]

stages:
  inspect   one page about the data before training: sizes, classes, token lengths, duplicates, bad rows
  teacher   fine-tune the teacher, cache its logits on the training rows and transfer sets
  strategies  the four teacher strategies on the same rows (+ a student from each): one table, one plot
  score     score more label-free text with a finished teacher (its transfer sets)
  distill   train the student on the cached logits, and the CE-only control
  compare   KD against its controls over several seeds (one table, one plot)
  gap       students of several sizes, CE-only and distilled: accuracy, share of the teacher, int8 latency
  export    export teacher and students to ONNX (fp32, O2, int8) and validate them
  bench     benchmark PyTorch vs ONNX Runtime on CPU
  predict   label text with a trained model (ONNX variant or PyTorch directory)
  report    gather the run into <run-dir>/report.md
"""

STAGES = {
    "inspect": "distill.inspect",
    "teacher": "teachers.finetune",
    "strategies": "experiments.strategies",
    "score": "teachers.score",
    "distill": "students.distill",
    "compare": "experiments.compare",
    "gap": "experiments.gap",
    "export": "export.onnx_export",
    "bench": "export.bench",
    "predict": "distill.predict",
    "report": "distill.report",
}


# Stages whose causal-LM runs (teacher distill.json task lm) have their own module
LM_STAGES = {"export": "export.lm_export", "bench": "export.lm_bench"}


def lm_run(args: list[str]) -> bool:
    """Whether ``--run-dir``'s teacher is a causal LM (its distill.json says task lm)."""
    import argparse
    import json

    from distill import layout

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--run-dir", default=None)
    run_dir = parser.parse_known_args(args)[0].run_dir
    info = layout.teacher_dir(run_dir or ".") / layout.MODEL_INFO
    return run_dir is not None and info.is_file() and json.loads(info.read_text(encoding="utf-8")).get("task") == "lm"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    debug = "--debug" in argv or os.environ.get("DISTILL_DEBUG", "") not in ("", "0")
    stage, rest = argv[0], [a for a in argv[1:] if a != "--debug"]
    if stage not in STAGES:
        print(f"error: unknown stage {stage!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    from distill.errors import PipelineError

    try:
        name = LM_STAGES[stage] if stage in LM_STAGES and lm_run(rest) else STAGES[stage]
        module = __import__(name, fromlist=["main"])
        return module.main(rest)
    except PipelineError as err:
        if debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

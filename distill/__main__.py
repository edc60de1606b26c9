"""``python -m distill <stage> [options]``: teacher | distill | export | bench | report.

Stage modules are imported only once chosen: the benchmark must set thread counts before torch
and onnxruntime are imported.
"""

from __future__ import annotations

import sys

USAGE = """usage: python -m distill <stage> [--data DIR] [--run-dir DIR] [--preset quick|full] [--key=value ...]

stages:
  teacher   fine-tune the teacher and cache its logits       (teachers/finetune.py)
  distill   train the student on the cached logits          (students/distill.py)
  export    export teacher and student to ONNX, validate     (export/onnx_export.py)
  bench     benchmark PyTorch vs ONNX Runtime on CPU         (export/bench.py)
  report    gather the run into <run-dir>/report.md          (distill/report.py)
"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    stage, rest = argv[0], argv[1:]
    if stage == "teacher":
        from teachers.finetune import main as run
    elif stage == "distill":
        from students.distill import main as run
    elif stage == "export":
        from export.onnx_export import main as run
    elif stage == "bench":
        from export.bench import main as run
    elif stage == "report":
        from distill.report import main as run
    else:
        print(f"unknown stage {stage!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return run(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

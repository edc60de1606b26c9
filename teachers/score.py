"""Score more label-free text with a finished teacher: new transfer sets for the student.

    python -m distill score --run-dir runs/demo --transfer=more_reviews.txt [--transfer_rows=N] [--key=value ...]
    torchrun --nproc_per_node=2 -m distill score --run-dir runs/demo --transfer=big.txt   # sharded

The teacher's own config (``teacher/train_config.json``) is reused; only the settings that
change what is scored may be given (transfer sources, their caps and columns, augmentation, cache
dtype and chunking). The sets already scored stay; the new ones are added to ``distill.json``.
Resumable like every cache write: rerun the same command after an interruption.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch.distributed as dist

from distill import layout
from distill.artifacts import StageInputError, read_model_info
from distill.config import ConfigError, apply_overrides, load_config, override_key
from teachers.finetune import SCORING_ONLY, TeacherConfig, run


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill score", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default="runs/demo", help="the run directory holding teacher/")
    args, overrides = parser.parse_known_args(argv)
    run_dir = Path(args.run_dir)
    teacher_dir = layout.teacher_dir(run_dir)
    info = read_model_info(teacher_dir, hint="make teacher")
    if not (teacher_dir / layout.METRICS_FILE).exists():
        raise StageInputError(teacher_dir / layout.METRICS_FILE, "the teacher has not finished training", "make teacher")
    keys = [override_key(o) for o in overrides]
    not_scoring = [k for k in keys if k not in SCORING_ONLY]
    if not_scoring:
        raise ConfigError(f"--{not_scoring[0]}: score takes only what changes what is scored "
                          f"({', '.join(SCORING_ONLY)}); train a new teacher for the rest")
    saved = load_config(TeacherConfig, teacher_dir / layout.TRAIN_CONFIG_FILE)
    if "scorer" not in json.loads((teacher_dir / layout.TRAIN_CONFIG_FILE).read_text()):
        saved = dataclasses.replace(saved, scorer="pytorch")  # a teacher from before scorers: keep its caches' scorer
    cfg = apply_overrides(dataclasses.replace(saved, transfer=[]), overrides)
    print(f"score: {teacher_dir} already has {', '.join(info.transfer) or 'no transfer sets'}; adding "
          f"{', '.join(cfg.transfer) or 'nothing (give --transfer=...)'}")
    run(cfg, run_dir)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0

"""The distillation loss's defaults and its output type, in one place.

``distill/losses.py`` (the convention and the PyTorch reference) and ``distill/kd_loss_triton.py``
(the fused kernel) both read these; neither imports the other's implementation. ``check_temperature``
is the one T > 0 check every path runs (the reference, hence the CPU path, and the kernel's launcher).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from distill.errors import PipelineError

DEFAULT_TEMPERATURE = 2.0  # softening T for teacher and student
DEFAULT_W_KD = 0.5  # weight of the T²-scaled KL term
DEFAULT_W_CE = 0.5  # weight of the hard-label cross-entropy term
IGNORE_INDEX = -100  # label value meaning "no hard label: KD only" (teacher-scored transfer rows)


class KDLossOutput(NamedTuple):
    loss: torch.Tensor  # scalar, differentiable: w_kd * T² * kd + w_ce * ce
    kd: torch.Tensor  # scalar, detached: the KL mean (before T² and w_kd), for logging
    ce: torch.Tensor  # scalar, detached: the CE mean (before w_ce), for logging


class LossSettingError(ValueError, PipelineError):
    """A loss setting no loss can be computed with (T <= 0); reported in one line."""


def check_temperature(temperature: float) -> None:
    """T must be a finite number > 0: both sets of logits are divided by it (T = 0 divides by zero,
    T < 0 reverses the softmax, NaN poisons every row). Raises ``LossSettingError``."""
    if not (math.isfinite(float(temperature)) and float(temperature) > 0):
        raise LossSettingError(f"temperature={temperature}: the distillation temperature T must be a finite "
                               "number > 0 (both teacher and student logits are divided by T)")

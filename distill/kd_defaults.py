"""The distillation loss's defaults and its output type, in one place.

``distill/losses.py`` (the convention and the PyTorch reference) and ``distill/kd_loss_triton.py``
(the fused kernel) both read these; neither imports the other's implementation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

DEFAULT_TEMPERATURE = 2.0  # softening T for teacher and student
DEFAULT_W_KD = 0.5  # weight of the T²-scaled KL term
DEFAULT_W_CE = 0.5  # weight of the hard-label cross-entropy term
IGNORE_INDEX = -100  # label value meaning "no hard label: KD only" (teacher-scored transfer rows)


class KDLossOutput(NamedTuple):
    loss: torch.Tensor  # scalar, differentiable: w_kd * T² * kd + w_ce * ce
    kd: torch.Tensor  # scalar, detached: the KL mean (before T² and w_kd), for logging
    ce: torch.Tensor  # scalar, detached: the CE mean (before w_ce), for logging

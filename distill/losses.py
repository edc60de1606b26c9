"""The distillation loss: the convention, its defaults, and the plain PyTorch reference.

The convention (written once, here; the README quotes it):

    loss = w_kd * T² * KD + w_ce * CE

    KD = mean over valid rows i of  KL( softmax(t_i / T) ‖ softmax(s_i / T) )
       = mean_i  Σ_v p_t(v) · (log p_t(v) − log p_s(v)),   p_t = softmax(t_i/T), p_s = softmax(s_i/T)
    CE = mean over valid *labelled* rows i of  −log softmax(s_i)[y_i]      (at temperature 1)

- ``w_kd`` weighs the soft (teacher) term, ``w_ce`` the hard-label term; they are not forced to
  sum to one.
- T² is applied to the KD term so its gradient keeps the same scale as T changes
  (Hinton et al., 2015).
- A row whose label equals ``ignore_index`` has no hard label (e.g. teacher-labelled
  augmentation on unlabeled text): it takes the KD term only, and does not count in CE's mean.
- ``row_mask`` (optional, bool (N,)) drops rows entirely: a masked-out row contributes nothing to
  either term and gets a zero gradient (e.g. padding positions in token-level distillation).
- Means are over the rows that take part; a term with no rows is 0 (never NaN).
- Teacher entries of −inf are allowed (p_t = 0 there, contributing 0 to KL).
- T must be a finite number > 0; every path (this reference, so the CPU path, and the kernel's
  launcher) checks it with ``kd_defaults.check_temperature`` and raises ``LossSettingError``.

The fused Triton kernel in ``distill/kd_loss_triton.py`` implements exactly this; tests and
benchmarks import ``kd_loss_reference`` as the spec.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Defaults live in kd_defaults.py and only there: the config, the reference and the kernel read them.
from distill.kd_defaults import (
    DEFAULT_TEMPERATURE,
    DEFAULT_W_CE,
    DEFAULT_W_KD,
    IGNORE_INDEX,
    KDLossOutput,
    LossSettingError,
    check_temperature,
)

__all__ = ["DEFAULT_TEMPERATURE", "DEFAULT_W_CE", "DEFAULT_W_KD", "IGNORE_INDEX", "KDLoss", "KDLossConfig",
           "KDLossOutput", "LossSettingError", "kd_loss", "kd_loss_reference"]


@dataclass(frozen=True)
class KDLossConfig:
    temperature: float = DEFAULT_TEMPERATURE  # softening T for both teacher and student
    w_kd: float = DEFAULT_W_KD  # weight of the T²-scaled KL term
    w_ce: float = DEFAULT_W_CE  # weight of the hard-label cross-entropy term
    ignore_index: int = IGNORE_INDEX  # label value meaning "no hard label: KD only"


def kd_loss_reference(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    w_kd: float = DEFAULT_W_KD,
    w_ce: float = DEFAULT_W_CE,
    ignore_index: int = IGNORE_INDEX,
    row_mask: torch.Tensor | None = None,
) -> KDLossOutput:
    """The spec. student_logits, teacher_logits: (N, V), any float dtype; labels: (N,) int64;
    row_mask: (N,) bool or None. Computes in fp32 and returns fp32 scalars. A temperature that is not
    a finite number > 0 raises ``LossSettingError``."""
    check_temperature(temperature)
    s = student_logits.float()  # (N, V)
    t = teacher_logits.float()  # (N, V)
    n = s.shape[0]
    valid = torch.ones(n, dtype=torch.bool, device=s.device) if row_mask is None else row_mask.bool()
    labelled = valid & (labels != ignore_index)  # (N,)

    log_p_s_T = F.log_softmax(s / temperature, dim=-1)  # (N, V)
    log_p_t_T = F.log_softmax(t / temperature, dim=-1)  # (N, V)
    p_t_T = log_p_t_T.exp()
    # where p_t == 0 (teacher −inf) the KL contribution is 0, not 0 * (−inf − x) = NaN
    kl_terms = torch.where(p_t_T > 0, p_t_T * (log_p_t_T - log_p_s_T), torch.zeros_like(p_t_T))
    kl_rows = kl_terms.sum(dim=-1)  # (N,)
    n_valid = valid.sum()
    # torch.where, not a multiply: a dropped row contributes nothing even if it holds NaN
    kd = torch.where(valid, kl_rows, 0.0).sum() / n_valid.clamp(min=1)

    safe_labels = torch.where(labelled, labels, torch.zeros_like(labels))
    ce_rows = -F.log_softmax(s, dim=-1).gather(1, safe_labels[:, None]).squeeze(1)  # (N,)
    n_labelled = labelled.sum()
    ce = torch.where(labelled, ce_rows, 0.0).sum() / n_labelled.clamp(min=1)

    loss = w_kd * temperature**2 * kd + w_ce * ce
    return KDLossOutput(loss=loss, kd=kd.detach(), ce=ce.detach())


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    w_kd: float = DEFAULT_W_KD,
    w_ce: float = DEFAULT_W_CE,
    ignore_index: int = IGNORE_INDEX,
    row_mask: torch.Tensor | None = None,
) -> KDLossOutput:
    """The loss the trainer calls: the fused Triton kernel on CUDA, the reference elsewhere.
    Same shapes and convention as ``kd_loss_reference``."""
    if student_logits.is_cuda:
        from distill.kd_loss_triton import kd_loss_fused

        return kd_loss_fused(
            student_logits, teacher_logits, labels,
            temperature=temperature, w_kd=w_kd, w_ce=w_ce,
            ignore_index=ignore_index, row_mask=row_mask,
        )
    return kd_loss_reference(
        student_logits, teacher_logits, labels,
        temperature=temperature, w_kd=w_kd, w_ce=w_ce,
        ignore_index=ignore_index, row_mask=row_mask,
    )


class KDLoss(torch.nn.Module):
    """Module form of ``kd_loss`` with its settings taken from a ``KDLossConfig``
    (defaults and convention as above). ``forward`` returns a ``KDLossOutput``."""

    def __init__(self, config: KDLossConfig | None = None):
        super().__init__()
        self.config = KDLossConfig() if config is None else config

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor,
        row_mask: torch.Tensor | None = None,
    ) -> KDLossOutput:
        c = self.config
        return kd_loss(
            student_logits, teacher_logits, labels,
            temperature=c.temperature, w_kd=c.w_kd, w_ce=c.w_ce,
            ignore_index=c.ignore_index, row_mask=row_mask,
        )

    def extra_repr(self) -> str:
        return repr(self.config)

"""The chunk loop shared by the two sparse-target LM losses that never hold the full logits:
the PyTorch path (distill/lm_loss.py, CPU) and the Triton kernel (distill/lm_loss_triton.py, CUDA),
and the values both take (so the kernel module need not import the spec's).

For each chunk of C positions it forms that chunk's logits (C, V) = hidden_c (C, D) @ W^T, asks
a ``step`` for the chunk's per-row loss terms while the step overwrites the logits buffer with
d loss / d logits (the gradient is written during the forward), and folds that into the
gradients of the hidden states and the output matrix:

    grad_hidden[c] = G_c @ W        (C, V) @ (V, D) -> (C, D)
    grad_W        += G_c^T @ h_c     (V, C) @ (C, D) -> (V, D)

so the largest tensors alive are one (C, V) chunk and the (V, D) gradient of W: no
(N, V) tensor is ever formed. The row counts of the means (rows with a KD term, labelled rows)
are the whole batch's, passed to every step, so the chunks' terms simply add up.

The values the losses take (N predicted positions, k target slots each):

- ``SparseTargets``: the teacher's cached targets (distill/lm_cache.py's records as tensors);
- ``LossWeights``: w_kd, w_ce and the temperature of ``w_kd · T² · KD + w_ce · CE``;
- ``Positions``: the next-token labels and which rows take each term (``positions`` builds it).

``chunked_loss`` is the autograd layer both chunked losses share: its backward only scales the
gradients the forward wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from distill.kd_defaults import IGNORE_INDEX, KDLossOutput

DEFAULT_CHUNK = 256  # positions per chunk: (256, 49152) fp32 is 50 MB
LM_TEMPERATURE = 1.0  # the cache's default T (distill/lm_cache.py); the student trains at the cache's T

# step(logits (C, V) fp32, rows: the chunk's slice of the N rows) -> (kd_rows (C,), ce_rows (C,)), each
# already divided by its count; the logits buffer holds d loss / d logits afterwards when grads are wanted
Step = Callable[[torch.Tensor, slice], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class SparseTargets:
    """The teacher's sparse target at N positions, either rule of distill/lm_cache.py: the top-k
    ids with their log-probabilities and the mass of the rest, or the distinct sampled ids with
    log(count / k) and no tail. The loss treats both alike (it renormalises a + r to 1)."""

    ids: torch.Tensor  # (N, k) integer token ids; -1 marks an unused slot
    values: torch.Tensor  # (N, k) float log target probabilities (-inf in unused slots)
    tail: torch.Tensor  # (N,) float target mass off ``ids`` (rule topk), 0 (rule sample)

    def take(self, rows: slice) -> SparseTargets:
        """The targets of a chunk of rows (views, no copy)."""
        return SparseTargets(self.ids[rows], self.values[rows], self.tail[rows])


@dataclass(frozen=True)
class LossWeights:
    """The weights of ``loss = w_kd · T² · KD + w_ce · CE`` (distill/lm_loss.py's convention)."""

    w_kd: float = 0.5  # weight of the KL term (already multiplied by T² in the loss)
    w_ce: float = 0.5  # weight of the next-token cross-entropy (at T = 1)
    temperature: float = LM_TEMPERATURE  # T of the student's softmax in the KL; must be the cache's T

    def combine(self, kd: torch.Tensor, ce: torch.Tensor) -> torch.Tensor:
        """The loss from the two means: w_kd · T² · kd + w_ce · ce."""
        return kd * (self.w_kd * self.temperature**2) + ce * self.w_ce


DEFAULT_WEIGHTS = LossWeights()  # the losses' default (frozen, so one value serves every call)


@dataclass(frozen=True)
class Positions:
    """The N positions' next-token labels and which rows take part in each term."""

    labels: torch.Tensor  # (N,) int next tokens; ``ignore_index`` marks a row without CE
    valid: torch.Tensor  # (N,) bool rows taking part in KD and CE (the row mask; every row without one)
    labelled: torch.Tensor  # (N,) bool valid rows with a label (they take the CE term)
    counts: torch.Tensor  # (2,) fp32 [max(valid rows, 1), max(labelled rows, 1)] over the batch, on its device
    ignore_index: int = IGNORE_INDEX  # the label that marks "no CE" (the kernel re-derives ``labelled`` from it)

    def take(self, rows: slice) -> Positions:
        """The labels and masks of a chunk of rows; the counts stay the whole batch's."""
        return Positions(self.labels[rows], self.valid[rows], self.labelled[rows], self.counts, self.ignore_index)


def row_counts(valid: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """(2,) fp32 [max(rows taking part, 1), max(labelled rows, 1)] as a device tensor (no host sync)."""
    return torch.stack((valid, labelled)).sum(dim=1).clamp_(min=1).to(torch.float32)


def positions(labels: torch.Tensor, row_mask: torch.Tensor | None, *, ignore_index: int = IGNORE_INDEX) -> Positions:
    """labels (N,), row_mask (N,) bool or None (every row) -> the rows taking each term."""
    # (N,) contiguous: the kernel reads it through a pointer, as bytes
    valid = torch.ones_like(labels, dtype=torch.bool) if row_mask is None else row_mask.bool().contiguous()
    labelled = valid & (labels != ignore_index)  # (N,)
    return Positions(labels, valid, labelled, row_counts(valid, labelled), ignore_index)


def chunked(hidden: torch.Tensor, weight: torch.Tensor, step: Step, *, chunk: int, want_grads: bool
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """hidden (N, D), weight (V, D) -> (kd, ce) fp32 scalars and, when ``want_grads``, the
    gradients (N, D) and (V, D) in fp32 of the step's loss. ``step`` sees each chunk's logits."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    n = hidden.shape[0]
    w = weight.float()  # (V, D): one fp32 copy (none when already fp32)
    grad_hidden = torch.zeros((n, w.shape[1]), dtype=torch.float32, device=hidden.device) if want_grads else None
    grad_weight = torch.zeros_like(w) if want_grads else None
    kd = torch.zeros((), dtype=torch.float32, device=hidden.device)
    ce = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, n, chunk):
        rows = slice(start, min(n, start + chunk))
        h = hidden[rows].float()  # (C, D)
        logits = h @ w.T  # (C, V) the only vocabulary-wide buffer
        kd_rows, ce_rows = step(logits, rows)
        kd, ce = kd + kd_rows.sum(), ce + ce_rows.sum()
        if want_grads:  # logits now holds G_c = d loss / d logits (C, V)
            grad_hidden[rows] = logits @ w  # (C, D)
            grad_weight.addmm_(logits.T, h)  # (V, D) += (V, C) @ (C, D)
        del logits
    return kd, ce, grad_hidden, grad_weight


class _ChunkedLoss(torch.autograd.Function):
    """The autograd layer of both chunked losses. Only ``hidden`` and ``weight`` are inputs: the
    targets and labels are constants (no gradient), held by the step that ``make_step`` returns."""

    @staticmethod
    def forward(ctx, hidden, weight, make_step, weights, chunk):
        want = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        kd, ce, grad_h, grad_w = chunked(hidden, weight, make_step(want), chunk=chunk, want_grads=want)
        if want:
            ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        ctx.mark_non_differentiable(kd, ce)
        return weights.combine(kd, ce), kd, ce

    @staticmethod
    def backward(ctx, grad_loss, grad_kd, grad_ce):
        grad_h, grad_w = ctx.saved_tensors  # (N, D), (V, D) fp32, written by the forward
        # scaled in place (no second (V, D) buffer): the version bump makes a second backward fail loudly
        grad_h.mul_(grad_loss)
        grad_w.mul_(grad_loss)
        return grad_h.to(ctx.dtypes[0]), grad_w.to(ctx.dtypes[1]), None, None, None


def chunked_loss(hidden: torch.Tensor, weight: torch.Tensor, make_step: Callable[[bool], Step], *,
                 weights: LossWeights, chunk: int) -> KDLossOutput:
    """hidden (N, D), weight (V, D) -> the loss, kd and ce of the steps ``make_step(want_grads)``
    returns; the gradients of hidden and weight are written during the forward (once per forward)."""
    loss, kd, ce = _ChunkedLoss.apply(hidden, weight, make_step, weights, int(chunk))
    return KDLossOutput(loss=loss, kd=kd, ce=ce)

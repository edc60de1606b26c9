"""The chunk loop shared by the two sparse-target LM losses that never hold the full logits:
the PyTorch path (distill/lm_loss.py, CPU) and the Triton kernel (distill/lm_loss_triton.py, CUDA).

For each chunk of C positions it forms that chunk's logits (C, V) = hidden_c (C, D) @ W^T, asks
a ``step`` for the chunk's per-row loss terms while the step overwrites the logits buffer with
d loss / d logits (the gradient is written during the forward), and folds that into the
gradients of the hidden states and the output matrix:

    grad_hidden[c] = G_c @ W        (C, V) @ (V, D) -> (C, D)
    grad_W        += G_c^T @ h_c     (V, C) @ (C, D) -> (V, D)

so the largest tensors alive are one (C, V) chunk and the (V, D) gradient of W: no
(N, V) tensor is ever formed. The row counts of the means (rows with a KD term, labelled rows)
are the whole batch's, passed to every step, so the chunks' terms simply add up.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# step(logits (C, V) fp32, rows: the chunk's slice of the N rows) -> (kd_rows (C,), ce_rows (C,)), each
# already divided by its count; the logits buffer holds d loss / d logits afterwards when grads are wanted
Step = Callable[[torch.Tensor, slice, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def row_counts(valid: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """(2,) fp32 [max(rows taking part, 1), max(labelled rows, 1)] as a device tensor (no host sync)."""
    return torch.stack((valid, labelled)).sum(dim=1).clamp_(min=1).to(torch.float32)


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

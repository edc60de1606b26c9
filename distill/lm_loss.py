"""The causal-LM distillation loss on sparse teacher targets, without the full logits.

The convention (written once, here; the README quotes it). Row i is one predicted position:
h_i (D,) the student's last hidden state, W (V, D) its output matrix, z_i = W h_i its logits,
q_i = softmax(z_i / T). The teacher's cached target (distill/lm_cache.py) is a support S_i of k
distinct token ids (id -1: an unused slot), their target probabilities a_ij = exp(values_ij) and the
remaining mass r_i (the topk rule's tail; 0 for the sample rule), renormalised here so that
Σ_j a_ij + r_i = 1 (the fp16 log-probabilities round).

    loss = w_kd · T² · KD + w_ce · CE

    KD = mean over rows i with row_mask of
         Σ_j a_ij (log a_ij − log q_i(S_ij))  +  r_i (log r_i − log Q_i),   Q_i = Σ_{u ∉ S_i} q_i(u)
       = KL between the teacher and the student over the k + 1 outcomes "token S_ij, or any other"
    CE = mean over rows with row_mask and a label y_i ≠ ignore_index of −log softmax(z_i)[y_i]   (T = 1)

Terms with a = 0 or r = 0 are 0; a term with no rows is 0. The gradient w.r.t. the logits is

    d KD_i / d z_iu = (q_i(u) − p̃_i(u)) / T,   p̃_i(u) = a_ij if u = S_ij,  r_i q_i(u) / Q_i if u ∉ S_i

(the teacher's tail spread over the non-support tokens as the student spreads its own), and
d CE_i / d z_iu = softmax(z_i)(u) − 1[u = y_i]. The gradients of h and W follow from z = W h.

Every implementation takes hidden (N, D) and weight (V, D) float, the targets as a
``SparseTargets`` (ids (N, k), values (N, k), tail (N,)), labels (N,) int64, and keyword-only the
``LossWeights`` (w_kd, w_ce, temperature), ``ignore_index`` and ``row_mask`` (N,) bool or None (the
bundles live in distill/lm_chunks.py, which the kernel module shares). Each is tested against the
reference:
- ``lm_kd_reference``: the spec; full (N, V) logits, PyTorch autograd. For tests on small V.
- ``lm_kd_buckets``: a second formula (probabilities summed into k + 1 buckets with scatter_add,
  then KL); no shared code with the reference.
- ``lm_kd_chunked``: the CPU path: chunks of positions (distill/lm_chunks.py), the logits gradient
  written from the closed form above during the forward; no (N, V) tensor is formed.
- ``distill.lm_loss_triton.lm_kd_fused``: the same chunks with a Triton kernel per chunk (CUDA).
``lm_kd_loss`` picks the kernel on CUDA and the chunked path elsewhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.kd_defaults import IGNORE_INDEX, KDLossOutput
from distill.lm_chunks import (
    DEFAULT_CHUNK,
    DEFAULT_WEIGHTS,
    LossWeights,
    Positions,
    SparseTargets,
    chunked_loss,
    positions,
)


def _targets(targets: SparseTargets):
    """(present (N, k) bool, a (N, k) fp32, r (N,) fp32), renormalised to sum 1 per row."""
    present = targets.ids >= 0
    a = torch.where(present, targets.values.float().exp(), 0.0)  # (N, k)
    r = targets.tail.float().clamp(min=0)  # (N,)
    total = (a.sum(-1) + r).clamp(min=1e-30)  # (N,) a row without any target mass takes no KD term
    return present, a / total[:, None], r / total


def _means(kl_rows, ce_rows, pos: Positions, weights: LossWeights):
    valid, labelled = pos.valid, pos.labelled
    kd = torch.where(valid, kl_rows, 0.0).sum() / valid.sum().clamp(min=1)
    ce = torch.where(labelled, ce_rows, 0.0).sum() / labelled.sum().clamp(min=1)
    loss = weights.w_kd * weights.temperature**2 * kd + weights.w_ce * ce
    return KDLossOutput(loss=loss, kd=kd.detach(), ce=ce.detach())


def lm_kd_reference(hidden, weight, targets: SparseTargets, labels, *, weights: LossWeights = DEFAULT_WEIGHTS,
                    ignore_index: int = IGNORE_INDEX, row_mask=None) -> KDLossOutput:
    """The spec. hidden (N, D), weight (V, D) float; targets: ids (N, k) int64 (-1: unused), values
    (N, k) log target probs, tail (N,) mass; labels (N,) int64; row_mask (N,) bool or None."""
    temperature = weights.temperature
    z = hidden.float() @ weight.float().T  # (N, V)
    log_q = F.log_softmax(z / temperature, dim=-1)  # (N, V)
    present, a, r = _targets(targets)
    safe = targets.ids.clamp(min=0)  # (N, k)
    in_support = torch.zeros_like(z).scatter_add(1, safe, present.float()) > 0  # (N, V)
    log_tail = torch.logsumexp(log_q.masked_fill(in_support, float("-inf")), dim=-1)  # (N,) log Q
    head = torch.where(a > 0, a * (a.clamp(min=1e-30).log() - log_q.gather(1, safe)), 0.0).sum(-1)
    rest = torch.where(r > 0, r * (r.clamp(min=1e-30).log() - log_tail), 0.0)
    pos = positions(labels, row_mask, ignore_index=ignore_index)
    ce_rows = -F.log_softmax(z, dim=-1).gather(1, torch.where(pos.labelled, labels, 0)[:, None]).squeeze(1)
    return _means(head + rest, ce_rows, pos, weights)


def lm_kd_buckets(hidden, weight, targets: SparseTargets, labels, *, weights: LossWeights = DEFAULT_WEIGHTS,
                  ignore_index: int = IGNORE_INDEX, row_mask=None) -> KDLossOutput:
    """The same loss by another route: each token's student probability is added into its
    bucket (the support slot holding it, or bucket k for every other token), and the KL taken
    between the (k + 1)-bucket distributions. Full logits; for tests."""
    ids, values, tail = targets.ids, targets.values, targets.tail
    n, k = ids.shape
    v = weight.shape[0]
    q = torch.softmax((hidden.float() @ weight.float().T) / weights.temperature, dim=-1)  # (N, V)
    slot = torch.full((n, v + 1), k, dtype=torch.int64, device=q.device)  # bucket of each token; column v: unused slots
    slot.scatter_(1, torch.where(ids >= 0, ids, v), torch.arange(k, device=q.device).expand(n, k))
    q_buckets = torch.zeros(n, k + 1, device=q.device).scatter_add(1, slot[:, :v], q)  # (N, k + 1)
    p = torch.cat([torch.where(ids >= 0, values.float().exp(), 0.0), tail.float().clamp(min=0)[:, None]], dim=1)
    p = p / p.sum(-1, keepdim=True).clamp(min=1e-30)  # (N, k + 1)
    kl_rows = torch.where(p > 0, p * (p.clamp(min=1e-30).log() - q_buckets.clamp(min=1e-30).log()), 0.0).sum(-1)
    z1 = hidden.float() @ weight.float().T
    pos = positions(labels, row_mask, ignore_index=ignore_index)
    y = torch.where(pos.labelled, labels, 0)
    ce_rows = torch.logsumexp(z1, dim=-1) - z1.gather(1, y[:, None]).squeeze(1)
    return _means(kl_rows, ce_rows, pos, weights)


def torch_step(targets: SparseTargets, pos: Positions, *, weights: LossWeights, want_grads: bool):
    """The PyTorch chunk step for ``distill.lm_chunks.chunked``: the rows' KD and CE terms (divided
    by the counts) from a chunk's logits, and the closed-form gradient written over them."""
    temperature, w_kd, w_ce = weights.temperature, weights.w_kd, weights.w_ce
    counts = pos.counts

    def step(z: torch.Tensor, rows: slice):
        chunk_targets, at = targets.take(rows), pos.take(rows)
        present, a, r = _targets(chunk_targets)  # (C, k), (C, k), (C,)
        safe = chunk_targets.ids.clamp(min=0)
        chunk_rows = torch.arange(len(safe), device=z.device)[:, None].expand_as(safe)  # (C, k)
        in_support = torch.zeros_like(z, dtype=torch.bool)  # (C, V)
        in_support[chunk_rows[present], safe[present]] = True
        y = torch.where(at.labelled, at.labels, 0)  # (C,)
        lse_1 = torch.logsumexp(z, dim=-1)  # (C,)
        ce_rows = lse_1 - z.gather(1, y[:, None]).squeeze(1)
        zt = z.div_(temperature)  # (C, V) in place: the buffers stay few (see module docstring)
        lse_t = torch.logsumexp(zt, dim=-1)  # (C,)
        log_tail = torch.logsumexp(zt.masked_fill(in_support, float("-inf")), dim=-1) - lse_t  # (C,) log Q
        log_q_s = zt.gather(1, safe) - lse_t[:, None]  # (C, k)
        head = torch.where(a > 0, a * (a.clamp(min=1e-30).log() - log_q_s), 0.0).sum(-1)
        rest = torch.where(r > 0, r * (r.clamp(min=1e-30).log() - log_tail), 0.0)
        kd_rows = torch.where(at.valid, head + rest, 0.0) / counts[0]
        ce_rows = torch.where(at.labelled, ce_rows, 0.0) / counts[1]
        if want_grads:
            q = torch.exp(zt - lse_t[:, None])  # (C, V) softmax(z / T)
            # p̃: the tail spread as the student spreads it off the support (r q / Q), then the support's a
            off = torch.where(r > 0, r / log_tail.exp().clamp(min=1e-30), 0.0)  # (C,) r / Q
            target = (q * off[:, None]).masked_fill_(in_support, 0.0).scatter_add_(1, safe, a)  # (C, V)
            kd_scale = torch.where(at.valid, w_kd * temperature / counts[0], 0.0)  # (C,)
            ce_scale = torch.where(at.labelled, w_ce / counts[1], 0.0)
            grad = q.sub_(target).mul_(kd_scale[:, None])  # (C, V) in q's buffer
            del target
            p1 = zt.mul_(temperature).sub_(lse_1[:, None]).exp_()  # (C, V) softmax(z), in the logits buffer
            p1.scatter_add_(1, y[:, None], torch.full_like(lse_1[:, None], -1.0))
            p1.mul_(ce_scale[:, None]).add_(grad)  # the logits buffer now holds d loss / d z
        return kd_rows, ce_rows

    return step


def lm_kd_chunked(hidden, weight, targets: SparseTargets, labels, *, weights: LossWeights = DEFAULT_WEIGHTS,
                  ignore_index: int = IGNORE_INDEX, row_mask=None, chunk: int = DEFAULT_CHUNK) -> KDLossOutput:
    """The chunked PyTorch path: same arguments and result as ``lm_kd_reference``; the largest
    vocabulary-wide tensors are (chunk, V)."""
    pos = positions(labels, row_mask, ignore_index=ignore_index)

    def make_step(want_grads: bool):
        return torch_step(targets, pos, weights=weights, want_grads=want_grads)

    return chunked_loss(hidden, weight, make_step, weights=weights, chunk=chunk)


def lm_kd_loss(hidden, weight, targets: SparseTargets, labels, *, weights: LossWeights = DEFAULT_WEIGHTS,
               ignore_index: int = IGNORE_INDEX, row_mask=None, chunk: int = DEFAULT_CHUNK) -> KDLossOutput:
    """What the LM student calls: the Triton kernel on CUDA, the chunked PyTorch path elsewhere."""
    kwargs = dict(weights=weights, ignore_index=ignore_index, row_mask=row_mask, chunk=chunk)
    if hidden.is_cuda:
        from distill.lm_loss_triton import lm_kd_fused

        return lm_kd_fused(hidden, weight, targets, labels, **kwargs)
    return lm_kd_chunked(hidden, weight, targets, labels, **kwargs)

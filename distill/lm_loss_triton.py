"""Triton kernel for the sparse-target LM distillation loss of ``distill/lm_loss.py`` (the spec
and its convention live there; this module does not import it).

Three layers, as ``distill/kd_loss_triton.py``:

1. ``_lm_kd_chunk_kernel`` (``@triton.jit``): one program per row of a chunk of logits (C, V). It
   reads the row's sparse target (k ids, their log-probabilities, the tail mass), makes one pass
   over V for the online statistics (student log-sum-exp at T and at 1, and over the tokens off
   the support), and a second pass that writes d loss / d logits over the logits, during the
   forward.
2. ``_launch_chunk`` (host launcher): checks shapes and devices, picks BLOCK_V / BLOCK_K /
   num_warps and launches the kernel on one chunk; the chunk loop (``distill.lm_chunks.chunked``)
   forms each chunk's logits with a matmul and folds the written gradient into the gradients of
   the hidden states and the output matrix, so no (N, V) tensor exists.
3. ``lm_kd_fused``: the public entry, taking the bundles of ``distill/lm_chunks.py`` as
   ``distill.lm_loss``'s functions do; it checks the inputs, makes them kernel-ready and hands a
   step per chunk to ``distill.lm_chunks.chunked_loss``, the autograd layer the PyTorch path
   shares (its backward only scales the stored gradients).

Runs on CUDA tensors, or on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1`` set
before import), which is how tests/test_lm_loss.py runs it without a GPU. Limits, as the other
kernel: the targets are constants (no gradient), backward once per forward, and a label outside
[0, V) gives a NaN CE instead of an error (no host sync).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

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

INTERPRETED = bool(triton.knobs.runtime.interpret)
MAX_BLOCK_V = 2048  # vocabulary entries a program holds at a time (untuned: no GPU was available)
MIN_BLOCK_V = 16

# Derivation (row i; z its logits, T the temperature; S the support: ids with a_j > 0 slots,
# a_j and r renormalised so Σ a + r = 1; q = softmax(z / T)).
#
#   lse_T = log Σ_v e^{z_v/T}          lse_1 = log Σ_v e^{z_v}
#   log Q = log Σ_{u ∉ S} e^{z_u/T} − lse_T                      (the student's mass off the support)
#   KL    = Σ_j a_j (log a_j − (z_{S_j}/T − lse_T)) + r (log r − log Q)
#   CE    = lse_1 − z_y
#
# Pass 1 keeps three running maxima and sums (all v; all v at T = 1 shares the raw max; v ∉ S)
# and rescales a sum by e^{(m − m')/T} when its max grows from m to m'. A max still at −inf is
# replaced by 0 as the shift, so no −inf − (−inf) appears. Membership of a block's columns in S is
# a (BLOCK_V, BLOCK_K) comparison with the row's ids.
#
# Gradient of loss = w_kd T² KD + w_ce CE, KD = Σ_i KL_i / n_valid, CE = Σ_i CE_i / n_labelled:
#   d loss / d z_u = w_kd T / n_valid · (q_u − p̃_u) + [labelled] w_ce / n_labelled · (softmax(z)_u − 1[u = y])
#   p̃_u = a_j if u = S_j;  r e^{z_u/T} / Σ_{u' ∉ S} e^{z_u'/T} = r e^{(z_u − m_r)/T − log Z_r} otherwise
# (the last form never divides by a small Q). Rows outside row_mask get a zero gradient.


@triton.jit
def _lm_kd_chunk_kernel(
    z_ptr,  # (C, V) fp32 logits of the chunk, unit stride along V; overwritten with d loss / d z (WRITE_GRAD)
    z_row_stride,
    ids_ptr,  # (C, K) int64 support ids, -1 = unused slot; contiguous
    values_ptr,  # (C, K) fp32 log target probabilities (−inf in unused slots); contiguous
    tail_ptr,  # (C,) fp32 target mass off the support (0: none)
    labels_ptr,  # (C,) int64 next-token labels; ignore_index = no CE
    valid_ptr,  # (C,) uint8 row mask (1: the row takes part)
    counts_ptr,  # (2,) fp32 [max(n_valid, 1), max(n_labelled, 1)] over the whole batch
    kd_rows_ptr,  # (C,) fp32 out: KL_i / n_valid (0 for masked rows)
    ce_rows_ptr,  # (C,) fp32 out: CE_i / n_labelled (0 for unlabelled rows)
    V,
    K,
    inv_T,  # 1 / temperature
    kd_grad_scale,  # w_kd * T
    w_ce,
    ignore_index,
    WRITE_GRAD: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    z_row = z_ptr + row * z_row_stride
    offs = tl.arange(0, BLOCK_V)  # (BLOCK_V,)
    offs_k = tl.arange(0, BLOCK_K)  # (BLOCK_K,)
    k_in = offs_k < K
    ids = tl.load(ids_ptr + row * K + offs_k, mask=k_in, other=-1).to(tl.int32)  # (BLOCK_K,)
    present = ids >= 0
    vals = tl.load(values_ptr + row * K + offs_k, mask=k_in & present, other=-float("inf"))  # (BLOCK_K,)
    a_raw = tl.where(present, tl.exp(vals), 0.0)
    r_raw = tl.maximum(tl.load(tail_ptr + row), 0.0)
    total = tl.maximum(tl.sum(a_raw, axis=0) + r_raw, 1e-30)  # a row without target mass takes no KD term
    a = a_raw / total  # (BLOCK_K,)
    r = r_raw / total
    label = tl.load(labels_ptr + row)
    valid = tl.load(valid_ptr + row) != 0
    labelled = valid & (label != ignore_index)
    n_valid = tl.load(counts_ptr)
    n_labelled = tl.load(counts_ptr + 1)

    # ---- pass 1: online statistics over V ---------------------------------------------------------
    m = -float("inf")  # running max of z (all v)
    z_t = 0.0  # Σ e^{(z − m)/T}
    z_1 = 0.0  # Σ e^{z − m}
    m_r = -float("inf")  # running max of z over v ∉ S
    z_r = 0.0  # Σ_{v ∉ S} e^{(z − m_r)/T}
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + offs  # (BLOCK_V,)
        in_row = cols < V
        z = tl.load(z_row + cols, mask=in_row, other=-float("inf"))  # (BLOCK_V,)
        in_s = tl.sum(((cols[:, None] == ids[None, :]) & present[None, :]).to(tl.int32), axis=1) > 0
        m_new = tl.maximum(m, tl.max(z, axis=0))
        shift = tl.where(m_new == -float("inf"), 0.0, m_new)
        z_1 = z_1 * tl.exp(m - shift) + tl.sum(tl.exp(z - shift), axis=0)
        z_t = z_t * tl.exp((m - shift) * inv_T) + tl.sum(tl.exp((z - shift) * inv_T), axis=0)
        m = m_new
        z_off = tl.where(in_s, -float("inf"), z)  # (BLOCK_V,) −inf on the support and past V
        m_r_new = tl.maximum(m_r, tl.max(z_off, axis=0))
        shift_r = tl.where(m_r_new == -float("inf"), 0.0, m_r_new)
        z_r = z_r * tl.exp((m_r - shift_r) * inv_T) + tl.sum(tl.exp((z_off - shift_r) * inv_T), axis=0)
        m_r = m_r_new

    shift = tl.where(m == -float("inf"), 0.0, m)
    shift_r = tl.where(m_r == -float("inf"), 0.0, m_r)
    lse_t = shift * inv_T + tl.log(z_t)
    lse_1 = shift + tl.log(z_1)
    has_tail = r > 0
    log_z_r = tl.log(tl.where(has_tail, z_r, 1.0))
    log_q_tail = shift_r * inv_T + log_z_r - lse_t
    z_s = tl.load(z_row + ids, mask=present, other=0.0)  # (BLOCK_K,) logits at the support
    log_a = tl.log(tl.where(a > 0, a, 1.0))
    head = tl.sum(tl.where(a > 0, a * (log_a - (z_s * inv_T - lse_t)), 0.0), axis=0)
    rest = tl.where(has_tail, r * (tl.log(tl.where(has_tail, r, 1.0)) - log_q_tail), 0.0)
    kd_row = tl.where(valid, head + rest, 0.0) / n_valid
    label_ok = labelled & (label >= 0) & (label < V)
    z_y = tl.load(z_row + label, mask=label_ok, other=float("nan"))
    ce_row = tl.where(labelled, (lse_1 - z_y) / n_labelled, 0.0)

    # ---- pass 2: d loss / d z over the logits ----------------------------------------------------------
    if WRITE_GRAD:
        kd_scale = tl.where(valid, kd_grad_scale / n_valid, 0.0)
        ce_scale = tl.where(labelled, w_ce / n_labelled, 0.0)
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + offs  # (BLOCK_V,)
            in_row = cols < V
            z = tl.load(z_row + cols, mask=in_row, other=-float("inf"))
            eq = (cols[:, None] == ids[None, :]) & present[None, :]  # (BLOCK_V, BLOCK_K)
            in_s = tl.sum(eq.to(tl.int32), axis=1) > 0
            a_col = tl.sum(tl.where(eq, a[None, :], 0.0), axis=1)  # (BLOCK_V,) a at a support column
            q = tl.exp(z * inv_T - lse_t)
            tail_p = tl.where(has_tail, r * tl.exp((z - shift_r) * inv_T - log_z_r), 0.0)
            target = tl.where(in_s, a_col, tail_p)
            p_1 = tl.exp(z - lse_1)
            one_hot = tl.where(cols == label, 1.0, 0.0)
            g = kd_scale * (q - target) + ce_scale * (p_1 - one_hot)
            tl.store(z_row + cols, tl.where(valid, g, 0.0), mask=in_row)

    tl.store(kd_rows_ptr + row, kd_row)
    tl.store(ce_rows_ptr + row, ce_row)


def _blocks(v: int, k: int) -> tuple[int, int, int]:
    """BLOCK_V, BLOCK_K and num_warps."""
    block_v = min(MAX_BLOCK_V, max(MIN_BLOCK_V, triton.next_power_of_2(v)))
    block_k = max(2, triton.next_power_of_2(k))
    return block_v, block_k, min(16, max(1, block_v // 256))


def _launch_chunk(z, targets: SparseTargets, pos: Positions, *, weights: LossWeights, write_grad: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the kernel on one chunk z (C, V) fp32 (its gradient written over it when
    ``write_grad``) with the chunk's kernel-ready targets and positions (contiguous int64 ids and
    labels, fp32 values and tail); returns (kd_rows, ce_rows) (C,) fp32, already divided by the counts."""
    c, v = z.shape
    k = targets.ids.shape[1]
    if z.dtype != torch.float32 or z.stride(1) != 1:
        raise ValueError("the chunk's logits must be fp32 with unit stride along V")
    kd_rows = torch.empty(c, dtype=torch.float32, device=z.device)  # (C,)
    ce_rows = torch.empty(c, dtype=torch.float32, device=z.device)  # (C,)
    block_v, block_k, num_warps = _blocks(v, k)
    temperature = weights.temperature
    if c > 0:
        _lm_kd_chunk_kernel[(c,)](
            z, z.stride(0), targets.ids, targets.values, targets.tail, pos.labels, pos.valid.view(torch.uint8),
            pos.counts, kd_rows, ce_rows, v, k, 1.0 / temperature, weights.w_kd * temperature, weights.w_ce,
            pos.ignore_index, WRITE_GRAD=write_grad, BLOCK_V=block_v, BLOCK_K=block_k, num_warps=num_warps,
        )
    return kd_rows, ce_rows


def _check_inputs(hidden, weight, targets: SparseTargets, labels, row_mask) -> None:
    n, d = hidden.shape
    ids, values, tail = targets.ids, targets.values, targets.tail
    if weight.dim() != 2 or weight.shape[1] != d:
        raise ValueError(f"weight must be (V, {d}); got {tuple(weight.shape)}")
    if ids.dim() != 2 or ids.shape[0] != n or values.shape != ids.shape or tail.shape != (n,) or labels.shape != (n,):
        raise ValueError(f"targets must be ids, values (N, k), tail (N,) and labels (N,) with N = {n}; got "
                         f"{tuple(ids.shape)}, {tuple(values.shape)}, {tuple(tail.shape)}, {tuple(labels.shape)}")
    if row_mask is not None and row_mask.shape != (n,):
        raise ValueError(f"row_mask must be ({n},); got {tuple(row_mask.shape)}")
    if hidden.device.type != "cuda" and not INTERPRETED:
        raise ValueError("lm_kd_fused needs CUDA tensors (or TRITON_INTERPRET=1 set before import); use "
                         "distill.lm_loss.lm_kd_loss, which takes the chunked PyTorch path elsewhere")
    for name, x in (("weight", weight), ("ids", ids), ("values", values), ("tail", tail), ("labels", labels),
                    ("row_mask", row_mask)):
        if x is not None and x.device != hidden.device:
            raise ValueError(f"{name} is on {x.device}, hidden on {hidden.device}")


def lm_kd_fused(hidden, weight, targets: SparseTargets, labels, *, weights: LossWeights = DEFAULT_WEIGHTS,
                ignore_index: int = IGNORE_INDEX, row_mask=None, chunk: int = DEFAULT_CHUNK) -> KDLossOutput:
    """The fused loss: same arguments, convention and result as ``distill.lm_loss.lm_kd_reference``
    (hidden (N, D), weight (V, D); targets' ids, values (N, k) and tail (N,); labels (N,); row_mask
    (N,) or None)."""
    _check_inputs(hidden, weight, targets, labels, row_mask)
    pos = positions(labels.to(torch.int64).contiguous(), row_mask, ignore_index=int(ignore_index))
    ready = SparseTargets(targets.ids.to(torch.int64).contiguous(), targets.values.float().contiguous(),
                          targets.tail.float().contiguous())  # what the kernel's pointers expect

    def make_step(want_grads: bool):
        def step(z, rows):
            return _launch_chunk(z, ready.take(rows), pos.take(rows), weights=weights, write_grad=want_grads)

        return step

    return chunked_loss(hidden, weight, make_step, weights=weights, chunk=chunk)

"""Fused Triton kernel for the distillation loss in ``distill/losses.py``.

Three layers under one public name, Liger-Kernel style:

1. ``_kd_loss_fwd_kernel`` (``@triton.jit``): one program per row. A first pass over V computes
   everything the row's loss needs with online max / log-sum-exp; a second pass writes the
   gradient w.r.t. the student logits into a buffer, during the forward.
2. ``_launch_kd_loss`` (host launcher): validates shapes, picks BLOCK_V / num_warps from V,
   computes the row counts as device tensors (no host sync) and launches the kernel.
3. ``_KDLossFunction`` (``torch.autograd.Function``): its backward only scales the stored
   gradient by the incoming grad_output.

``kd_loss_fused`` is the public entry point; same convention and defaults as
``kd_loss_reference``.

It runs on CUDA tensors, or on CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1``
set before this module is imported), which is how the tests exercise it without a GPU.

Deliberate limits (documented, not hidden):
- The teacher is a constant: no gradient is computed for ``teacher_logits`` (distillation
  never back-propagates into the teacher; the reference would give one).
- The student gradient is written in the forward, so backward can be called once per forward.
  A second backward through the same graph (``retain_graph=True``) raises autograd's
  "modified by an inplace operation" error rather than silently returning a rescaled gradient.
- A label that is neither ``ignore_index`` nor in ``[0, V)`` makes that row's CE NaN (the
  reference raises an index error instead); a kernel cannot raise without a host sync.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from distill.kd_defaults import (
    DEFAULT_TEMPERATURE,
    DEFAULT_W_CE,
    DEFAULT_W_KD,
    IGNORE_INDEX,
    KDLossOutput,
    check_temperature,
)

# Whether the kernels were built for the interpreter: decided by triton when @triton.jit runs,
# i.e. when this module is imported, so setting the variable later has no effect.
INTERPRETED = bool(triton.knobs.runtime.interpret)

# Largest block of the vocabulary one program holds at a time. Each program keeps ~6 fp32
# vectors of BLOCK_V live; 4096 keeps that in registers at 16 warps (8 values per thread per
# vector) while making V = 32000 only 8 iterations per pass. Untuned: no GPU was available.
MAX_BLOCK_V = 4096
MIN_BLOCK_V = 16  # tests lower MAX_BLOCK_V (read at each call) to force the multi-block path

# Derivation (row i; s, t: the row's student and teacher logits; T the temperature; m_s, m_t the
# row maxima of the raw logits s and t).
#
#   log p_s^T(v) = (s_v − m_s)/T − log z_sT,  z_sT = Σ_v e^{(s_v − m_s)/T}
#   log p_t^T(v) = (t_v − m_t)/T − log z_t,   z_t  = Σ_v e^{(t_v − m_t)/T}
#   log p_s^1(v) = (s_v − m_s)   − log z_s1,  z_s1 = Σ_v e^{s_v − m_s}
#
#   KL = Σ_v p_t(v) (log p_t(v) − log p_s(v))
#      = Σ_v p_t(v) ((t_v − m_t) − (s_v − m_s))/T − log z_t + log z_sT          (Σ p_t = 1)
#      = A / z_t − log z_t + log z_sT,   A = Σ_v e^{(t_v − m_t)/T} ((t_v − m_t) − (s_v − m_s))/T
#   CE = (m_s − s_y) + log z_s1
#
# Precision: the shifts are combined inside the sum. Summing (t_v − s_v)/T and subtracting
# lse_t − lse_sT afterwards (two numbers of size |offset|/T, rounded at fp32's spacing there)
# cancels away the KL's digits when the logits carry a large per-row offset: at ±1e4 that was off
# by 5e-4 to 4.5e-3 per row, and is ~1e-6 this way (docs/RESULTS.md). CE likewise: m_s − s_y first.
# t_v − m_t and s_v − m_s are exact for entries near their row's max (Sterbenz), and the scaling
# by 1/T comes after the subtraction, so every term is O(spread of the row), not O(offset).
#
# One pass over V in blocks keeps, online, the running maxima m and sums relative to them; when a
# max grows from m to m', z is multiplied by e^{(m − m')/T} (z_s1 by e^{m − m'}). A's terms are
# relative to both shifts, so moving them from (m_t, m_s) to (m_t', m_s') adds
# ((m_t − m_t') − (m_s − m_s'))/T to each term, z_t · that to A, before A takes the teacher's
# factor. Both maxima are tracked on the raw logits: max(x/T) = max(x)/T for T > 0.
#
# Entries with t = −inf have e^{(t − m_t)/T} = 0, but their difference is −inf there and
# 0·(−inf) = NaN, so those terms are zeroed explicitly. A running max still at −inf (every entry
# so far −inf) is replaced by 0 as the shift, so no −inf − (−inf) appears; its sums are 0 then.
#
# Gradient of loss = w_kd T² KD + w_ce CE, KD = (1/n_valid) Σ_i KL_i, CE = (1/n_labelled) Σ_i CE_i:
#   d KL_i / d s_v = (p_s^T(v) − p_t^T(v)) / T
#   d CE_i / d s_v = p_s^1(v) − 1[v = y_i]
#   d loss / d s_v = w_kd T / n_valid · (p_s^T − p_t^T) + [labelled] w_ce / n_labelled · (p_s^1 − 1[v = y])
# and 0 for rows with row_mask False. A row whose teacher is −inf everywhere takes no KD term and
# no KD gradient, like the reference.


@triton.jit
def _kd_loss_fwd_kernel(
    s_ptr,  # (N, V) student logits, fp32/fp16/bf16; unit stride along V
    s_row_stride,
    t_ptr,  # (N, V) teacher logits, fp32/fp16/bf16; unit stride along V
    t_row_stride,
    labels_ptr,  # (N,) integer labels; ignore_index = no hard label
    mask_ptr,  # (N,) uint8 row mask (bool viewed as bytes); read only when HAS_MASK
    counts_ptr,  # (2,) fp32: [max(n_valid, 1), max(n_labelled, 1)]
    kd_rows_ptr,  # (N,) fp32 out: KL_i / n_valid (0 for masked rows); their sum is KD
    ce_rows_ptr,  # (N,) fp32 out: CE_i / n_labelled (0 for unlabelled rows); their sum is CE
    grad_ptr,  # (N, V) out, student dtype, contiguous: d loss / d student logits
    grad_row_stride,
    V,
    inv_T,  # 1 / temperature
    kd_grad_scale,  # w_kd * T  (= w_kd * T² * 1/T)
    w_ce,
    ignore_index,
    HAS_MASK: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # int64: row * stride overflows int32 for N·V > 2^31
    s_row = s_ptr + row * s_row_stride
    t_row = t_ptr + row * t_row_stride
    g_row = grad_ptr + row * grad_row_stride
    offs = tl.arange(0, BLOCK_V)  # (BLOCK_V,)

    label = tl.load(labels_ptr + row)
    if HAS_MASK:
        valid = tl.load(mask_ptr + row) != 0
    else:
        valid = row >= 0  # always true, as a tensor like the masked case
    labelled = valid & (label != ignore_index)

    kd_row = 0.0
    ce_row = 0.0
    if valid:
        n_valid = tl.load(counts_ptr)
        n_labelled = tl.load(counts_ptr + 1)

        # ---- pass 1: online statistics over V -------------------------------------------------
        m_s = -float("inf")  # running max of the raw student logits
        z_sT = 0.0  # Σ e^{(s − m_s)/T}
        z_s1 = 0.0  # Σ e^{s − m_s}
        m_t = -float("inf")  # running max of the raw teacher logits
        z_t = 0.0  # Σ e^{(t − m_t)/T}
        a_t = 0.0  # Σ e^{(t − m_t)/T} ((t − m_t) − (s − m_s))/T
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + offs  # (BLOCK_V,)
            in_row = cols < V
            s = tl.load(s_row + cols, mask=in_row, other=-float("inf")).to(tl.float32)  # (BLOCK_V,)
            t = tl.load(t_row + cols, mask=in_row, other=-float("inf")).to(tl.float32)  # (BLOCK_V,)

            # the shifts the running sums are relative to so far (0 while the max is still −inf)
            old_shift_s = tl.where(m_s == -float("inf"), 0.0, m_s)
            old_shift_t = tl.where(m_t == -float("inf"), 0.0, m_t)

            m_s_new = tl.maximum(m_s, tl.max(s, axis=0))
            shift_s = tl.where(m_s_new == -float("inf"), 0.0, m_s_new)
            z_s1 = z_s1 * tl.exp(m_s - shift_s) + tl.sum(tl.exp(s - shift_s), axis=0)
            z_sT = z_sT * tl.exp((m_s - shift_s) * inv_T) + tl.sum(tl.exp((s - shift_s) * inv_T), axis=0)
            m_s = m_s_new

            m_t_new = tl.maximum(m_t, tl.max(t, axis=0))
            shift_t = tl.where(m_t_new == -float("inf"), 0.0, m_t_new)
            alpha_t = tl.exp((m_t - shift_t) * inv_T)
            e_t = tl.exp((t - shift_t) * inv_T)  # (BLOCK_V,), 0 where t = −inf (and past V)
            # Guard 0·(−inf): zero both sides where t = −inf (incl. past V, where s = −inf too)
            # rather than masking the difference afterwards, so no NaN is ever formed.
            t_finite = t != -float("inf")
            diff = (tl.where(t_finite, t - shift_t, 0.0) - tl.where(t_finite, s - shift_s, 0.0)) * inv_T
            # earlier terms of A move from the old shifts to the new ones (0 · finite while z_t = 0)
            moved = ((old_shift_t - shift_t) - (old_shift_s - shift_s)) * inv_T
            a_t = (a_t + z_t * moved) * alpha_t + tl.sum(e_t * diff, axis=0)
            z_t = z_t * alpha_t + tl.sum(e_t, axis=0)
            m_t = m_t_new

        shift_s = tl.where(m_s == -float("inf"), 0.0, m_s)
        shift_t = tl.where(m_t == -float("inf"), 0.0, m_t)
        log_z_sT = tl.log(z_sT)  # lse_sT = shift_s/T + log_z_sT
        log_z_s1 = tl.log(z_s1)  # lse_s1 = shift_s + log_z_s1
        # A teacher row that is −inf everywhere has no distribution (z_t = 0). The reference
        # gives it KL = 0 and no KD gradient (its p_t > 0 guard is false on NaN); match that
        # rather than produce 0/0, and keep log z_t finite so pass 2's p_t is 0, not NaN.
        has_teacher = z_t > 0
        safe_z_t = tl.where(has_teacher, z_t, 1.0)
        log_z_t = tl.log(safe_z_t)  # lse_t = shift_t/T + log_z_t
        kl = tl.where(has_teacher, a_t / safe_z_t - log_z_t + log_z_sT, 0.0)  # the shifts are inside A
        kd_row = kl / n_valid

        # CE needs s_y; a label outside [0, V) loads NaN so the error shows in the loss.
        label_ok = labelled & (label >= 0) & (label < V)
        s_y = tl.load(s_row + label, mask=label_ok, other=float("nan")).to(tl.float32)
        # (m_s − s_y) first: exact near the max, where m_s + log z_s1 would round at the offset's size
        ce_row = tl.where(labelled, ((shift_s - s_y) + log_z_s1) / n_labelled, 0.0)

        # ---- pass 2: gradient w.r.t. the student logits -----------------------------------------
        if WRITE_GRAD:
            kd_scale = tl.where(has_teacher, kd_grad_scale / n_valid, 0.0)
            ce_scale = tl.where(labelled, w_ce / n_labelled, 0.0)
            for v0 in range(0, V, BLOCK_V):
                cols = v0 + offs  # (BLOCK_V,)
                in_row = cols < V
                s = tl.load(s_row + cols, mask=in_row, other=-float("inf")).to(tl.float32)
                t = tl.load(t_row + cols, mask=in_row, other=-float("inf")).to(tl.float32)
                p_sT = tl.exp((s - shift_s) * inv_T - log_z_sT)  # (BLOCK_V,) softmax(s/T)
                p_t = tl.exp((t - shift_t) * inv_T - log_z_t)  # (BLOCK_V,) softmax(t/T)
                p_s1 = tl.exp(s - shift_s - log_z_s1)  # (BLOCK_V,) softmax(s)
                one_hot = tl.where(cols == label, 1.0, 0.0)
                g = kd_scale * (p_sT - p_t) + ce_scale * (p_s1 - one_hot)
                tl.store(g_row + cols, g.to(grad_ptr.dtype.element_ty), mask=in_row)
    else:
        if WRITE_GRAD:
            for v0 in range(0, V, BLOCK_V):
                cols = v0 + offs
                zeros = tl.zeros((BLOCK_V,), dtype=grad_ptr.dtype.element_ty)
                tl.store(g_row + cols, zeros, mask=cols < V)

    tl.store(kd_rows_ptr + row, kd_row)
    tl.store(ce_rows_ptr + row, ce_row)


@triton.jit
def _scale_grad_kernel(
    grad_ptr,  # (numel,) contiguous gradient buffer, scaled in place
    grad_output_ptr,  # () the incoming d(out)/d(loss)
    numel,
    BLOCK: tl.constexpr,
):
    # The "grad_output == 1" check happens here, on the device: the host never reads grad_output
    # (that would be a sync). With grad_output == 1 each program does one scalar load and exits,
    # so the common `loss.backward()` costs a launch and no pass over the (N, V) buffer.
    g = tl.load(grad_output_ptr).to(tl.float32)
    if g != 1.0:
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,)
        in_range = offs < numel
        x = tl.load(grad_ptr + offs, mask=in_range).to(tl.float32)
        tl.store(grad_ptr + offs, (x * g).to(grad_ptr.dtype.element_ty), mask=in_range)


_SCALE_BLOCK = 4096


def _block_config(V: int) -> tuple[int, int]:
    """BLOCK_V and num_warps for a vocabulary of V entries."""
    block_v = min(MAX_BLOCK_V, max(MIN_BLOCK_V, triton.next_power_of_2(V)))
    # ~256 values per warp per vector; at least 1 warp, at most 16.
    num_warps = min(16, max(1, block_v // 256))
    return block_v, num_warps


def _launch_kd_loss(
    student_logits: torch.Tensor,  # (N, V)
    teacher_logits: torch.Tensor,  # (N, V)
    labels: torch.Tensor,  # (N,)
    row_mask: torch.Tensor | None,  # (N,) bool or None
    temperature: float,
    w_kd: float,
    w_ce: float,
    ignore_index: int,
    write_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Runs the kernel. Returns (kd, ce, grad): fp32 scalars (before w_kd·T² / w_ce) and the
    (N, V) gradient of the loss w.r.t. the student logits in the student's dtype (None when
    not ``write_grad``)."""
    if student_logits.dim() != 2 or teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"student and teacher logits must both be (N, V); got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_logits.shape)}"
        )
    n, v = student_logits.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must be ({n},); got {tuple(labels.shape)}")
    if row_mask is not None and row_mask.shape != (n,):
        raise ValueError(f"row_mask must be ({n},); got {tuple(row_mask.shape)}")
    check_temperature(temperature)  # T > 0 and finite: LossSettingError, as the reference raises
    device = student_logits.device
    if device.type != "cuda" and not INTERPRETED:
        raise ValueError(
            "kd_loss_fused needs CUDA tensors (or TRITON_INTERPRET=1 set before import); "
            f"got {device}. Use distill.losses.kd_loss, which falls back to the reference."
        )
    for name, x in (("teacher_logits", teacher_logits), ("labels", labels), ("row_mask", row_mask)):
        if x is not None and x.device != device:
            raise ValueError(f"{name} is on {x.device}, student_logits on {device}")

    # The kernel indexes rows by stride and columns by position: only V needs unit stride,
    # so row slices / transposed-batch views pass through without a copy.
    s = student_logits if student_logits.stride(1) == 1 else student_logits.contiguous()
    t = teacher_logits if teacher_logits.stride(1) == 1 else teacher_logits.contiguous()
    labels = labels.contiguous()

    # Row counts as device tensors: the kernel loads them, the host never reads them.
    valid = torch.ones(n, dtype=torch.bool, device=device) if row_mask is None else row_mask.bool()  # (N,)
    labelled = valid & (labels != ignore_index)  # (N,)
    counts = torch.stack((valid, labelled)).sum(dim=1).clamp_(min=1).to(torch.float32)  # (2,)
    mask_bytes = valid.contiguous().view(torch.uint8)  # (N,) bool → bytes, no copy

    kd_rows = torch.empty(n, dtype=torch.float32, device=device)  # (N,)
    ce_rows = torch.empty(n, dtype=torch.float32, device=device)  # (N,)
    # Without a gradient to write, pass the logits as a never-written placeholder pointer.
    grad = torch.empty((n, v), dtype=s.dtype, device=device) if write_grad else None  # (N, V)
    grad_arg = grad if grad is not None else s

    block_v, num_warps = _block_config(v)
    if n > 0:
        _kd_loss_fwd_kernel[(n,)](
            s, s.stride(0),
            t, t.stride(0),
            labels, mask_bytes, counts,
            kd_rows, ce_rows,
            grad_arg, grad_arg.stride(0),
            v, 1.0 / temperature, w_kd * temperature, w_ce, ignore_index,
            HAS_MASK=row_mask is not None,
            WRITE_GRAD=write_grad,
            BLOCK_V=block_v,
            num_warps=num_warps,
        )
    return kd_rows.sum(), ce_rows.sum(), grad


class _KDLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_logits, teacher_logits, labels, row_mask, temperature, w_kd, w_ce,
                ignore_index):
        write_grad = ctx.needs_input_grad[0]
        kd, ce, grad = _launch_kd_loss(
            student_logits, teacher_logits, labels, row_mask,
            temperature, w_kd, w_ce, ignore_index, write_grad,
        )
        loss = kd * (w_kd * temperature**2) + ce * w_ce
        if write_grad:
            ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(kd, ce)
        return loss, kd, ce

    @staticmethod
    def backward(ctx, grad_loss, grad_kd, grad_ce):
        (grad,) = ctx.saved_tensors  # (N, V) d loss / d student, written by the forward
        grad_loss = grad_loss.to(torch.float32).contiguous()  # () on the same device
        _scale_grad_kernel[(triton.cdiv(grad.numel(), _SCALE_BLOCK),)](
            grad, grad_loss, grad.numel(), BLOCK=_SCALE_BLOCK, num_warps=8,
        )
        # The buffer was changed in place behind autograd's back: tell it, so that a second
        # backward through this graph fails loudly instead of using the scaled buffer.
        torch.autograd.graph.increment_version(grad)
        return grad, None, None, None, None, None, None, None


def kd_loss_fused(
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
    """The fused KD loss. Same shapes, convention and outputs as
    ``distill.losses.kd_loss_reference``: student_logits, teacher_logits (N, V) fp32/fp16/bf16;
    labels (N,) integer; row_mask (N,) bool or None. Returns fp32 scalars; the gradient reaches
    ``student_logits`` in its own dtype. The teacher gets no gradient (see module docstring)."""
    loss, kd, ce = _KDLossFunction.apply(
        student_logits, teacher_logits, labels, row_mask,
        float(temperature), float(w_kd), float(w_ce), int(ignore_index),
    )
    return KDLossOutput(loss=loss, kd=kd, ce=ce)

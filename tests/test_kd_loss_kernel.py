"""The fused Triton KD loss against ``kd_loss_reference`` (the spec): loss, kd, ce and the gradient
w.r.t. the student logits (the reference's via autograd).

Where the kernel runs:
- with CUDA, directly on the GPU;
- without CUDA, under the Triton interpreter on CPU tensors. ``TRITON_INTERPRET`` is read when
  ``@triton.jit`` decorates the kernels (at import), so it cannot be switched on inside an
  already-running pytest process that may have imported them. Instead, plain ``pytest tests/``
  runs ``test_kernel_suite_under_interpreter``, which re-runs this file in a child pytest with
  ``TRITON_INTERPRET=1`` and fails if the child fails. ``TRITON_INTERPRET=1 pytest
  tests/test_kd_loss_kernel.py`` runs the kernel tests directly (and shows each one).

The ``gpu``-marked tests at the end use full-size shapes; run them with ``pytest -m gpu``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from needed import needed

from distill.losses import (
    DEFAULT_W_CE,
    DEFAULT_W_KD,
    IGNORE_INDEX,
    KDLoss,
    KDLossConfig,
    LossSettingError,
    kd_loss_reference,
)

if sys.platform != "linux":  # pyproject.toml installs triton on Linux only
    pytest.skip("the Triton kernel's tests: triton is installed on Linux only", allow_module_level=True)
triton = needed("triton", what="the fused kernel's tests")

INTERPRET = bool(triton.knobs.runtime.interpret)
HAS_CUDA = torch.cuda.is_available()
RUN_KERNEL = INTERPRET or HAS_CUDA
DEVICE = "cuda" if HAS_CUDA and not INTERPRET else "cpu"

needs_kernel = pytest.mark.skipif(
    not RUN_KERNEL,
    reason="needs CUDA or TRITON_INTERPRET=1; covered here by test_kernel_suite_under_interpreter",
)

if RUN_KERNEL:
    import distill.kd_loss_triton as kdt
    from distill.kd_loss_triton import kd_loss_fused

# Losses: the reference upcasts the very same fp16/bf16 inputs to fp32, so only the fp32
# summation order differs (online vs two-pass) and one tight tolerance fits every dtype.
LOSS_TOL = dict(atol=1e-5, rtol=1e-5)
# Gradients are returned in the input dtype: one rounding in the reference (fp32 → dtype), one or
# two in the kernel (fp32 → dtype, then × grad_output when that is not 1).
FP32 = (torch.float32, 1e-7, 1e-4)  # (dtype, gradient atol, gradient rtol)
FP16 = (torch.float16, 1e-6, 2e-3)
BF16 = (torch.bfloat16, 1e-5, 2e-2)
DTYPES = [pytest.param(FP32, id="fp32"), pytest.param(FP16, id="fp16"), pytest.param(BF16, id="bf16")]
# (N, V, MAX_BLOCK_V): the kernel's block size is min(next_pow2(V), MAX_BLOCK_V), so
# (41, 1271, None) is one partial block of 2048 and (13, 1271, 256) five blocks, the last one
# partial: the online max / log-sum-exp rescaling across blocks. The interpreter's cost grows
# with rows × blocks (each block's reductions cost milliseconds there), hence N = 13 for the
# multi-block case.
SHAPES = [
    pytest.param((41, 1271, None), id="41x1271"),
    pytest.param((13, 1271, 256), id="13x1271-multiblock"),
    pytest.param((6, 2, None), id="6x2"),
]
MULTIBLOCK = (13, 1271, 256)


def _seed(*params) -> int:
    """A fresh but reproducible seed per test, derived from its parameters."""
    return zlib.crc32(repr(params).encode())


def _inputs(n, v, dtype, seed, *, scale=3.0, ignore_frac=0.0, mask_frac=None):
    """student (N, V), teacher (N, V) in ``dtype``, labels (N,) int64, row_mask (N,) bool or None."""
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, v, generator=g) * scale).to(dtype)
    t = (torch.randn(n, v, generator=g) * scale).to(dtype)
    labels = torch.randint(0, v, (n,), generator=g)
    labels[torch.rand(n, generator=g) < ignore_frac] = IGNORE_INDEX
    row_mask = None if mask_frac is None else torch.rand(n, generator=g) >= mask_frac
    return s, t, labels, row_mask


def _run(fn, s, t, labels, row_mask, grad_scale, **kw):
    """Forward + backward of ``fn`` on DEVICE; returns (KDLossOutput, grad of the student)."""
    s = s.to(DEVICE).clone().requires_grad_(True)  # a fresh leaf: .to() alone may return `s` itself
    out = fn(s, t.to(DEVICE), labels.to(DEVICE),
             row_mask=None if row_mask is None else row_mask.to(DEVICE), **kw)
    (out.loss if grad_scale == 1.0 else out.loss * grad_scale).backward()
    return out, s.grad


def _check(s, t, labels, row_mask=None, *, grad_tol, grad_scale=1.0, loss_tol=LOSS_TOL, **kw):
    """Kernel vs reference on the same inputs: loss, kd, ce and student gradient; all finite."""
    ref, ref_grad = _run(kd_loss_reference, s, t, labels, row_mask, grad_scale, **kw)
    out, grad = _run(kd_loss_fused, s, t, labels, row_mask, grad_scale, **kw)
    for name in ("loss", "kd", "ce"):
        got, want = getattr(out, name), getattr(ref, name)
        assert got.shape == () and got.dtype == torch.float32, name
        assert torch.isfinite(got), (name, got)
        torch.testing.assert_close(got, want, **loss_tol, msg=lambda m, n=name: f"{n}: {m}")
    assert grad.dtype == s.dtype and grad.shape == s.shape
    assert torch.isfinite(grad).all()
    atol, rtol = grad_tol
    torch.testing.assert_close(grad.float(), ref_grad.float(), atol=atol, rtol=rtol)
    return out, grad


@pytest.fixture
def max_block(monkeypatch):
    """Sets the kernel's MAX_BLOCK_V for one test (None keeps the default)."""

    def set_max(value):
        if value is not None:
            monkeypatch.setattr(kdt, "MAX_BLOCK_V", value)

    return set_max


@needs_kernel
@pytest.mark.parametrize("masking", ["none", "some"])
@pytest.mark.parametrize("dtype_tol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference(shape, dtype_tol, masking, max_block):
    n, v, block = shape
    dtype, atol, rtol = dtype_tol
    max_block(block)
    some = masking == "some"  # a quarter of labels ignored and a quarter of rows masked
    s, t, labels, row_mask = _inputs(
        n, v, dtype, _seed(shape, dtype, masking),
        ignore_frac=0.25 if some else 0.0, mask_frac=0.25 if some else None,
    )
    _check(s, t, labels, row_mask, grad_tol=(atol, rtol))


@needs_kernel
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
@pytest.mark.parametrize("shape", SHAPES)
def test_temperatures(shape, temperature, max_block):
    n, v, block = shape
    max_block(block)
    s, t, labels, row_mask = _inputs(n, v, torch.float32, _seed(shape, temperature), ignore_frac=0.25, mask_frac=0.25)
    _check(s, t, labels, row_mask, grad_tol=FP32[1:], temperature=temperature)


@needs_kernel
@pytest.mark.parametrize("w_kd, w_ce", [(0.0, 1.0), (1.0, 0.0), (0.3, 0.9)])
def test_weights(w_kd, w_ce, max_block):
    n, v, block = MULTIBLOCK
    max_block(block)
    s, t, labels, row_mask = _inputs(n, v, torch.float32, _seed(w_kd, w_ce), ignore_frac=0.2, mask_frac=0.2)
    _check(s, t, labels, row_mask, grad_tol=FP32[1:], w_kd=w_kd, w_ce=w_ce, temperature=3.0)


@needs_kernel
@pytest.mark.parametrize(
    "dtype_tol, grad_scale",
    [
        pytest.param(FP32, 3.7, id="fp32-3.7"),
        pytest.param(FP16, 3.7, id="fp16-3.7"),
        pytest.param(BF16, 3.7, id="bf16-3.7"),
        pytest.param(FP32, -0.25, id="fp32--0.25"),
        pytest.param(FP32, 0.0, id="fp32-0"),
    ],
)
def test_incoming_grad_not_one(dtype_tol, grad_scale, max_block):
    dtype, atol, rtol = dtype_tol
    n, v, block = MULTIBLOCK
    max_block(block)
    s, t, labels, row_mask = _inputs(n, v, dtype, _seed(dtype, grad_scale), ignore_frac=0.2, mask_frac=0.2)
    _check(s, t, labels, row_mask, grad_tol=(atol, rtol), grad_scale=grad_scale)


@needs_kernel
@pytest.mark.parametrize("shape", SHAPES)
def test_all_labels_ignored(shape, max_block):
    n, v, block = shape
    max_block(block)
    s, t, labels, _ = _inputs(n, v, torch.float32, _seed(shape), ignore_frac=1.0)
    out, _ = _check(s, t, labels, grad_tol=FP32[1:])
    assert out.ce == 0


@needs_kernel
@pytest.mark.parametrize("dtype_tol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_all_rows_masked(shape, dtype_tol, max_block):
    n, v, block = shape
    dtype, atol, rtol = dtype_tol
    max_block(block)
    s, t, labels, _ = _inputs(n, v, dtype, _seed(shape, dtype), ignore_frac=0.3)
    row_mask = torch.zeros(n, dtype=torch.bool)
    out, grad = _check(s, t, labels, row_mask, grad_tol=(atol, rtol), grad_scale=3.7)
    assert out.loss == 0 and out.kd == 0 and out.ce == 0
    assert (grad == 0).all()


@needs_kernel
@pytest.mark.parametrize("dtype_tol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_extreme_logits(shape, dtype_tol, max_block):
    """Entries of ±1e4 (representable in fp16 and bf16): no overflow, no NaN."""
    n, v, block = shape
    dtype, atol, rtol = dtype_tol
    max_block(block)
    seed = _seed(shape, dtype)
    s, t, labels, row_mask = _inputs(n, v, dtype, seed, ignore_frac=0.2, mask_frac=0.2)
    g = torch.Generator().manual_seed(seed + 1)
    for x in (s, t):
        pick = torch.rand(n, v, generator=g)
        x[pick < 0.05] = 1e4
        x[pick > 0.95] = -1e4
    # KL reaches ~1e4 here; ~1e4 · fp32 eps of cancellation in log-space is expected on both sides.
    _check(s, t, labels, row_mask, grad_tol=(atol, rtol), loss_tol=dict(atol=1e-2, rtol=1e-5))


@needs_kernel
@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("block", [None, 256], ids=["one-block", "multiblock"])
def test_precise_at_large_offsets(block, temperature, max_block):
    """KL and CE are invariant to a constant added to a row's logits; at offsets of ±1e4 (student and
    teacher rows offset independently, so many rows have opposite offsets) the kernel's per-row KL and
    CE must match float64 to 2e-5. Summing (t − s)/T and subtracting lse_t − lse_sT afterwards, as the
    kernel did, was off by 5e-4 to 4.5e-3 here (docs/RESULTS.md); the gradient stays tight too."""
    max_block(block)
    n, v = 13, 1271
    g = torch.Generator().manual_seed(_seed("offsets", block, temperature))
    s, t = torch.randn(n, v, generator=g) * 3, torch.randn(n, v, generator=g) * 3  # (N, V)
    s += torch.where(torch.rand(n, 1, generator=g) < 0.5, -1e4, 1e4)
    t += torch.where(torch.rand(n, 1, generator=g) < 0.5, -1e4, 1e4)
    labels = torch.randint(0, v, (n,), generator=g)
    s64 = s.double().requires_grad_(True)
    log_p_t = torch.log_softmax(t.double() / temperature, -1)
    kl = (log_p_t.exp() * (log_p_t - torch.log_softmax(s64 / temperature, -1))).sum(-1)  # (N,)
    ce = -torch.log_softmax(s64, -1).gather(1, labels[:, None]).squeeze(1)  # (N,)
    (DEFAULT_W_KD * temperature**2 * kl.mean() + DEFAULT_W_CE * ce.mean()).backward()
    for i in range(n):  # one row per call: each row's own error, not a mean that could hide one
        row = slice(i, i + 1)
        out = kd_loss_fused(s[row].to(DEVICE), t[row].to(DEVICE), labels[row].to(DEVICE), temperature=temperature)
        assert abs(out.kd.item() - kl[i].item()) < 2e-5, (i, out.kd.item(), kl[i].item())
        assert abs(out.ce.item() - ce[i].item()) < 2e-5, (i, out.ce.item(), ce[i].item())
    out, grad = _run(kd_loss_fused, s, t, labels, None, 1.0, temperature=temperature)
    torch.testing.assert_close(grad.cpu().double(), s64.grad, atol=1e-7, rtol=1e-4)


@needs_kernel
@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_temperature_checked_by_the_launcher(temperature):
    """T <= 0 (or not finite) is refused before launch with the reference's error and message."""
    s, t, labels, _ = _inputs(4, 6, torch.float32, _seed("bad-T"))
    with pytest.raises(LossSettingError) as err:
        kd_loss_fused(s.to(DEVICE), t.to(DEVICE), labels.to(DEVICE), temperature=temperature)
    assert str(err.value) == (f"temperature={temperature}: the distillation temperature T must be a finite number "
                              "> 0 (both teacher and student logits are divided by T)")


@needs_kernel
@pytest.mark.parametrize("dtype_tol", DTYPES)
def test_teacher_neg_inf(dtype_tol, max_block):
    """p_t = 0 where the teacher is −inf, including whole −inf blocks (running max still −inf)
    and a row with a single finite teacher entry."""
    dtype, atol, rtol = dtype_tol
    max_block(256)
    n, v = 24, 1271
    seed = _seed(dtype)
    s, t, labels, row_mask = _inputs(n, v, dtype, seed, ignore_frac=0.2, mask_frac=0.2)
    g = torch.Generator().manual_seed(seed + 1)
    t[torch.rand(n, v, generator=g) < 0.3] = -float("inf")
    t[:10, :600] = -float("inf")  # the first two 256-blocks entirely −inf
    t[10:20, 700:] = -float("inf")  # the last blocks entirely −inf
    t[20, :] = -float("inf")
    t[20, 1000] = 5.0  # one finite entry: p_t is one-hot
    _check(s, t, labels, row_mask, grad_tol=(atol, rtol), temperature=2.0)


@needs_kernel
def test_teacher_row_all_neg_inf(max_block):
    """A teacher row with no finite entry has no distribution. The reference gives it KL = 0 but a
    NaN gradient (its p_t > 0 guard is false on NaN, and 0·NaN in backward); the kernel gives
    KL = 0 and no KD gradient, consistent with that loss. Other rows must match the reference."""
    n, v, block = MULTIBLOCK
    max_block(block)
    s, t, labels, _ = _inputs(n, v, torch.float32, _seed("teacher-all-inf"))
    row = 5
    t[row] = -float("inf")
    ref, ref_grad = _run(kd_loss_reference, s, t, labels, None, 1.0)
    out, grad = _run(kd_loss_fused, s, t, labels, None, 1.0)
    for name in ("loss", "kd", "ce"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), **LOSS_TOL)
    grad, ref_grad = grad.cpu(), ref_grad.cpu()  # (N, V), compared with CPU-built expectations
    others = torch.arange(n) != row
    torch.testing.assert_close(grad[others], ref_grad[others], atol=FP32[1], rtol=FP32[2])
    assert torch.isnan(ref_grad[row]).all()  # if the reference changes, revisit this test
    # The row keeps its CE gradient only: w_ce / n_labelled · (softmax(s) − onehot(y)).
    ce_grad = torch.softmax(s[row].double(), dim=-1)
    ce_grad[labels[row]] -= 1
    torch.testing.assert_close(grad[row].double(), ce_grad * (DEFAULT_W_CE / n), atol=FP32[1], rtol=FP32[2])


@needs_kernel
def test_forward_without_grad(max_block):
    """A student that does not require grad skips the gradient pass; values are unchanged."""
    n, v, block = MULTIBLOCK
    max_block(block)
    s, t, labels, row_mask = _inputs(n, v, torch.float32, _seed("nograd"), ignore_frac=0.2, mask_frac=0.2)
    args = (s.to(DEVICE), t.to(DEVICE), labels.to(DEVICE))
    out = kd_loss_fused(*args, row_mask=row_mask.to(DEVICE))
    ref = kd_loss_reference(*args, row_mask=row_mask.to(DEVICE))
    assert not out.loss.requires_grad
    for name in ("loss", "kd", "ce"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), **LOSS_TOL)


@needs_kernel
def test_non_contiguous_inputs(max_block):
    """A column slice (row stride ≠ V, used as is) and a transposed view (column stride ≠ 1,
    copied) give the same result as contiguous inputs."""
    n, v, block = MULTIBLOCK
    max_block(block)
    s, t, labels, row_mask = _inputs(n, v + 9, torch.float32, _seed("strided"), ignore_frac=0.2, mask_frac=0.2)
    s = s[:, 3 : 3 + v]  # (N, V) with row stride V + 9
    t = t[:, :v].t().contiguous().t()  # (N, V) with strides (1, N)
    labels = labels.clamp(max=v - 1)  # ignore_index (-100) stays as is
    assert s.stride() == (v + 9, 1) and t.stride() == (1, n)
    _check(s, t, labels, row_mask, grad_tol=FP32[1:])


@needs_kernel
def test_outputs_and_autograd_contract():
    s, t, labels, _ = _inputs(8, 50, torch.float32, _seed("contract"))
    s = s.to(DEVICE).requires_grad_(True)
    out = kd_loss_fused(s, t.to(DEVICE), labels.to(DEVICE))
    assert out.loss.requires_grad
    assert not out.kd.requires_grad and not out.ce.requires_grad
    out.loss.backward(retain_graph=True)
    # The stored gradient is scaled in place in backward; a second backward must fail loudly.
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.loss.backward()


@needs_kernel
def test_out_of_range_label_gives_nan():
    """Documented: a label outside [0, V) that is not ignore_index poisons CE (no host sync to raise)."""
    s, t, labels, _ = _inputs(8, 50, torch.float32, _seed("badlabel"))
    labels[3] = 50
    out = kd_loss_fused(s.to(DEVICE), t.to(DEVICE), labels.to(DEVICE))
    assert torch.isnan(out.ce) and torch.isfinite(out.kd)


def test_kd_loss_module_matches_reference():
    """The nn.Module wrapper passes its config through to kd_loss (reference on CPU)."""
    s, t, labels, row_mask = _inputs(8, 50, torch.float32, _seed("module"), ignore_frac=0.3, mask_frac=0.3)
    cfg = KDLossConfig(temperature=3.0, w_kd=0.7, w_ce=0.2)
    out = KDLoss(cfg)(s, t, labels, row_mask=row_mask)
    ref = kd_loss_reference(s, t, labels, row_mask=row_mask, temperature=3.0, w_kd=0.7, w_ce=0.2)
    for name in ("loss", "kd", "ce"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), atol=0, rtol=0)


@pytest.mark.skipif(INTERPRET, reason="the interpreter does not compile")
@pytest.mark.parametrize("has_mask, write_grad", [(True, True), (False, False)])
@pytest.mark.parametrize("dtype", ["*fp32", "*bf16"])
@pytest.mark.parametrize("v", [2, 128_000])
def test_kernel_compiles_for_sm90(v, dtype, has_mask, write_grad):
    """Ahead-of-time compile to an sm_90 cubin (triton bundles ptxas; no GPU needed). Catches
    what the interpreter lets through: type mismatches across if/loop, unsupported ops."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import distill.kd_loss_triton as kernels

    block_v, num_warps = kernels._block_config(v)
    signature = {
        "s_ptr": dtype, "s_row_stride": "i32", "t_ptr": "*fp16", "t_row_stride": "i32",
        "labels_ptr": "*i64", "mask_ptr": "*u8", "counts_ptr": "*fp32",
        "kd_rows_ptr": "*fp32", "ce_rows_ptr": "*fp32", "grad_ptr": dtype, "grad_row_stride": "i32",
        "V": "i32", "inv_T": "fp32", "kd_grad_scale": "fp32", "w_ce": "fp32", "ignore_index": "i32",
        "HAS_MASK": "constexpr", "WRITE_GRAD": "constexpr", "BLOCK_V": "constexpr",
    }
    constexprs = {"HAS_MASK": has_mask, "WRITE_GRAD": write_grad, "BLOCK_V": block_v}
    fwd = ASTSource(kernels._kd_loss_fwd_kernel, signature, constexprs=constexprs)
    scale = ASTSource(
        kernels._scale_grad_kernel,
        {"grad_ptr": dtype, "grad_output_ptr": "*fp32", "numel": "i64", "BLOCK": "constexpr"},
        constexprs={"BLOCK": kernels._SCALE_BLOCK},
    )
    target = GPUTarget("cuda", 90, 32)
    assert "cubin" in triton.compile(fwd, target=target, options={"num_warps": num_warps}).asm
    assert "cubin" in triton.compile(scale, target=target, options={"num_warps": 8}).asm


@pytest.mark.skipif(RUN_KERNEL, reason="the kernel tests run directly in this process")
def test_kernel_suite_under_interpreter():
    """No CUDA and no interpreter here: run this file again in a child with TRITON_INTERPRET=1."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", str(Path(__file__).resolve()), "-q", "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    print(proc.stdout[-3000:])  # visible with -s / -rP
    assert proc.returncode == 0, f"interpreter run failed:\n{proc.stdout[-20000:]}\n{proc.stderr[-5000:]}"


# ---- full-size shapes, GPU only -----------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not HAS_CUDA or INTERPRET, reason="needs CUDA (not the interpreter)")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("n, v", [(4096, 32000), (1024, 128000), (8192, 2)])
@pytest.mark.parametrize("dtype_tol", DTYPES)
def test_gpu_full_size(n, v, dtype_tol):
    dtype, atol, rtol = dtype_tol
    s, t, labels, row_mask = _inputs(n, v, dtype, _seed(n, v, dtype), ignore_frac=0.1, mask_frac=0.05)
    # Sums over 1e5-scale vocabularies and 4096 rows: a slightly looser loss tolerance.
    _check(s, t, labels, row_mask, grad_tol=(atol, rtol), grad_scale=3.7, loss_tol=dict(atol=1e-4, rtol=1e-4))


@pytest.mark.gpu
@needs_cuda
def test_gpu_offsets_beyond_int32():
    """N·V > 2^31 elements: row offsets must be 64-bit. Checks the last rows' gradient against the
    reference on those rows alone (scaled by the row count, all rows valid and labelled)."""
    n, v = 17_000, 128_000  # 2.18e9 elements, 4.4 GB per bf16 tensor
    g = torch.Generator(device="cuda").manual_seed(0)
    s = torch.randn(n, v, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_(True)
    t = torch.randn(n, v, device="cuda", dtype=torch.bfloat16, generator=g)
    labels = torch.randint(0, v, (n,), device="cuda", generator=g)
    out = kd_loss_fused(s, t, labels)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    k = 4
    tail = s.detach()[-k:].clone().requires_grad_(True)
    kd_loss_reference(tail, t[-k:], labels[-k:]).loss.backward()
    torch.testing.assert_close(s.grad[-k:].float(), tail.grad.float() * (k / n), atol=1e-9, rtol=2e-2)

"""The sparse-target LM loss (distill/lm_loss.py): the reference against a second formula, the
chunked CPU path and the Triton kernel against the reference (loss, kd, ce and the gradients of
the hidden states and the output matrix), on ugly shapes and both target rules.

The kernel runs on CUDA, or under the Triton interpreter on CPU tensors: ``TRITON_INTERPRET`` is
read when the kernels are decorated (at import), so plain ``pytest`` runs
``test_kernel_suite_under_interpreter``, which re-runs this file in a child with the variable set
(as tests/test_kd_loss_kernel.py does).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

from distill.lm_chunks import positions
from distill.lm_loss import (
    LossWeights,
    SparseTargets,
    lm_kd_buckets,
    lm_kd_chunked,
    lm_kd_loss,
    lm_kd_reference,
)

triton = pytest.importorskip("triton")
INTERPRET = bool(triton.knobs.runtime.interpret)
HAS_CUDA = torch.cuda.is_available()
RUN_KERNEL = INTERPRET or HAS_CUDA
DEVICE = "cuda" if HAS_CUDA and not INTERPRET else "cpu"
needs_kernel = pytest.mark.skipif(not RUN_KERNEL, reason="needs CUDA or TRITON_INTERPRET=1 (run by the suite test)")
if RUN_KERNEL:
    import distill.lm_loss_triton as lkt

LOSS_TOL = dict(atol=2e-5, rtol=2e-5)
GRAD_TOL = dict(atol=2e-6, rtol=1e-4)
# (N rows, D width, V vocabulary, k ids): odd sizes, k near V, a single row
SHAPES = [pytest.param((37, 24, 301, 7), id="37x24x301k7"), pytest.param((5, 8, 19, 17), id="5x8x19k17"),
          pytest.param((1, 4, 50, 3), id="1x4x50k3")]
RULES = ["topk", "sample"]



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster than two on a shared 2-core machine (no spin-waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

def _seed(*params) -> int:
    return zlib.crc32(repr(params).encode())


def make_inputs(n, d, v, k, rule, seed, *, ignore_frac=0.25, mask_frac=0.2):
    """hidden (N, D), weight (V, D), targets of ``rule`` from a random teacher (ids (N, k) with -1
    in unused slots, fp16-rounded log-probs, tail), labels (N,) with some ignored, row_mask (N,)."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g)
    weight = torch.randn(v, d, generator=g) * 0.6
    log_p = torch.log_softmax(torch.randn(n, v, generator=g) * 2.5, dim=-1)
    if rule == "topk":
        values, ids = log_p.topk(k, dim=-1)
        tail = torch.logsumexp(log_p.scatter(1, ids, float("-inf")), dim=-1).exp()
        ids[0, k - 1:] = -1  # an unused slot
        values[0, k - 1:] = float("-inf")
    else:  # k draws, distinct ids with weight count / k, unused slots -1
        draws = torch.multinomial(log_p.exp(), k, replacement=True, generator=g)
        ids = torch.full((n, k), -1, dtype=torch.int64)
        values = torch.full((n, k), float("-inf"))
        for i in range(n):
            unique, counts = draws[i].unique(return_counts=True)
            ids[i, : len(unique)] = unique
            values[i, : len(unique)] = (counts.float() / k).log()
        tail = torch.zeros(n)
    labels = torch.randint(0, v, (n,), generator=g)
    labels[torch.rand(n, generator=g) < ignore_frac] = -100
    row_mask = torch.rand(n, generator=g) >= mask_frac
    row_mask[0] = True
    return hidden, weight, ids, values.half().float(), tail, labels, row_mask


def run(fn, inputs, *, grad_scale=1.0, device="cpu", chunk=None, **weights):
    """``fn`` on ``inputs`` (hidden, weight, ids, values, tail, labels, row_mask); ``weights``: LossWeights' fields."""
    hidden, weight, ids, values, tail, labels, row_mask = (x.to(device) for x in inputs)
    h = hidden.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    kw = {} if chunk is None else {"chunk": chunk}
    out = fn(h, w, SparseTargets(ids, values, tail), labels, row_mask=row_mask, weights=LossWeights(**weights), **kw)
    (out.loss * grad_scale).backward()
    return out, h.grad, w.grad


def assert_same(got, want):
    (out, gh, gw), (ref, rh, rw) = got, want
    for name in ("loss", "kd", "ce"):
        a, b = getattr(out, name), getattr(ref, name)
        assert a.shape == () and torch.isfinite(a), name
        torch.testing.assert_close(a.cpu(), b.cpu(), **LOSS_TOL, msg=lambda m, n=name: f"{n}: {m}")
    torch.testing.assert_close(gh.cpu(), rh.cpu(), **GRAD_TOL)
    torch.testing.assert_close(gw.cpu(), rw.cpu(), **GRAD_TOL)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("shape", SHAPES)
def test_reference_matches_the_bucket_formula(shape, temperature, rule):
    inputs = make_inputs(*shape, rule, _seed(shape, temperature, rule))
    kw = dict(temperature=temperature, w_kd=0.7, w_ce=0.4)
    assert_same(run(lm_kd_buckets, inputs, **kw), run(lm_kd_reference, inputs, **kw))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("chunk", [1, 6, 1000])
@pytest.mark.parametrize("shape", SHAPES)
def test_chunked_matches_reference(shape, chunk, rule):
    inputs = make_inputs(*shape, rule, _seed(shape, chunk, rule))
    kw = dict(temperature=2.0, w_kd=0.6, w_ce=0.3)
    got = run(lm_kd_chunked, inputs, grad_scale=1.7, chunk=chunk, **kw)
    assert_same(got, run(lm_kd_reference, inputs, grad_scale=1.7, **kw))


def test_kd_is_zero_when_the_student_matches_a_full_support_teacher():
    """With every token in the support (k = V, no tail) and the student's own distribution as the
    target, KL is 0 and its gradient vanishes."""
    g = torch.Generator().manual_seed(3)
    hidden, weight = torch.randn(6, 5, generator=g), torch.randn(11, 5, generator=g)
    log_q = torch.log_softmax(hidden @ weight.T, dim=-1)
    ids = torch.arange(11).expand(6, 11).clone()
    out, gh, gw = run(lm_kd_chunked, (hidden, weight, ids, log_q, torch.zeros(6), torch.zeros(6, dtype=torch.long),
                                      torch.ones(6, dtype=torch.bool)), w_kd=1.0, w_ce=0.0, chunk=4)
    assert abs(out.kd.item()) < 1e-5 and gh.abs().max() < 1e-5 and gw.abs().max() < 1e-5


def test_the_tail_term_counts():
    """The same support and support probabilities with and without tail mass give different KD:
    the tail bucket is part of the loss, not dropped."""
    hidden, weight, ids, values, tail, labels, mask = make_inputs(9, 6, 40, 4, "topk", 11)
    with_tail = lm_kd_chunked(hidden, weight, SparseTargets(ids, values, tail), labels, row_mask=mask).kd
    without = lm_kd_chunked(hidden, weight, SparseTargets(ids, values, torch.zeros_like(tail)), labels,
                            row_mask=mask).kd
    assert tail.mean() > 0.1 and abs(with_tail.item() - without.item()) > 1e-3


def test_masked_rows_take_no_part():
    hidden, weight, ids, values, tail, labels, _ = make_inputs(8, 6, 30, 5, "topk", 5)
    mask = torch.tensor([True, False] * 4)
    full = run(lm_kd_chunked, (hidden, weight, ids, values, tail, labels, mask), chunk=3)
    kept = mask.nonzero().squeeze(1)
    sub = run(lm_kd_chunked, (hidden[kept], weight, ids[kept], values[kept], tail[kept], labels[kept], mask[kept]),
              chunk=3)
    torch.testing.assert_close(full[0].loss, sub[0].loss, **LOSS_TOL)
    assert full[1][~mask].abs().max() == 0


def test_lm_kd_loss_takes_the_chunked_path_on_cpu():
    inputs = make_inputs(10, 6, 30, 5, "topk", 2)
    hidden, weight, ids, values, tail, labels, mask = inputs
    out = lm_kd_loss(hidden, weight, SparseTargets(ids, values, tail), labels, row_mask=mask, chunk=4)
    ref = lm_kd_reference(hidden, weight, SparseTargets(ids, values, tail), labels, row_mask=mask)
    torch.testing.assert_close(out.loss, ref.loss, **LOSS_TOL)


def test_the_bundles_the_losses_take():
    """positions(): the rows of each term and the batch's counts, kept whole by take(); the
    weights' combination w_kd T² kd + w_ce ce; a chunk of targets."""
    labels = torch.tensor([3, -100, 5, 7])
    pos = positions(labels, torch.tensor([True, True, False, True]))
    assert pos.valid.tolist() == [True, True, False, True] and pos.labelled.tolist() == [True, False, False, True]
    assert pos.counts.tolist() == [3.0, 2.0]
    part = pos.take(slice(1, 3))
    assert part.labels.tolist() == [-100, 5] and part.counts is pos.counts
    assert positions(labels, None).counts.tolist() == [4.0, 3.0]
    assert positions(torch.full((2,), -100), None).counts.tolist() == [2.0, 1.0]  # no labelled row: divide by 1
    assert LossWeights(w_kd=0.5, w_ce=0.25, temperature=2.0).combine(torch.tensor(1.0), torch.tensor(2.0)) == 2.5
    targets = SparseTargets(torch.arange(6).reshape(3, 2), torch.zeros(3, 2), torch.tensor([0.1, 0.2, 0.3]))
    assert targets.take(slice(1, 3)).ids.tolist() == [[2, 3], [4, 5]]


# ---- the Triton kernel (interpreter on CPU, or CUDA) ---------------------------------------------------


@needs_kernel
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("case", [pytest.param((13, 8, 301, 7, 64, 5), id="13x301k7-multiblock-chunk5"),
                                  pytest.param((6, 4, 19, 17, None, 4), id="6x19k17"),
                                  pytest.param((1, 4, 50, 3, 16, 1), id="1x50k3-multiblock")])
def test_kernel_matches_reference(case, rule, monkeypatch):
    n, d, v, k, block, chunk = case
    if block is not None:
        monkeypatch.setattr(lkt, "MAX_BLOCK_V", block)
    inputs = make_inputs(n, d, v, k, rule, _seed(case, rule))
    for temperature in (1.0, 2.0):
        kw = dict(temperature=temperature, w_kd=0.8, w_ce=0.3)
        got = run(lkt.lm_kd_fused, inputs, grad_scale=1.3, device=DEVICE, chunk=chunk, **kw)
        assert_same(got, run(lm_kd_reference, inputs, grad_scale=1.3, **kw))


@needs_kernel
def test_kernel_without_labels_or_kd():
    """Every label ignored (CE 0) and w_kd 0 (only CE): the kernel still matches."""
    inputs = list(make_inputs(7, 4, 40, 5, "topk", 9))
    inputs[5] = torch.full_like(inputs[5], -100)
    for kw in (dict(w_kd=1.0, w_ce=1.0), dict(w_kd=0.0, w_ce=1.0)):
        assert_same(run(lkt.lm_kd_fused, inputs, device=DEVICE, chunk=3, **kw), run(lm_kd_reference, inputs, **kw))


@pytest.mark.skipif(RUN_KERNEL, reason="the kernel tests run directly in this process")
def test_kernel_suite_under_interpreter():
    """No CUDA and no interpreter here: run this file again in a child with TRITON_INTERPRET=1."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", str(Path(__file__).resolve()), "-q", "-p", "no:cacheprovider", "-k", "kernel"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, f"interpreter run failed:\n{proc.stdout[-20000:]}\n{proc.stderr[-5000:]}"
    assert " passed" in proc.stdout and "7 passed" in proc.stdout, proc.stdout[-2000:]


def test_a_second_backward_fails_loudly():
    """The gradients are written in the forward and scaled in place: a second backward through the
    same graph raises instead of returning a rescaled gradient."""
    hidden, weight, ids, values, tail, labels, mask = make_inputs(6, 4, 30, 3, "topk", 4)
    h = hidden.clone().requires_grad_(True)
    out = lm_kd_chunked(h, weight, SparseTargets(ids, values, tail), labels, row_mask=mask, chunk=4)
    out.loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.loss.backward()

"""``kd_loss_reference`` (the spec the fused kernel is tested against) pinned a second time: against
the same convention written independently with torch's own losses, loss and gradients; and the
temperature check every path runs.

The independent formula (README, "The distillation loss"), on the rows that take part:

    KD = F.kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean")   over rows with row_mask true
    CE = F.cross_entropy(s, y, ignore_index=-100)                           over those rows
    loss = w_kd * T² * KD + w_ce * CE,  a term with no rows = 0

Here rows are selected by indexing (the reference uses ``torch.where``), the KL is torch's
``kl_div`` (the reference writes Σ p_t (log p_t − log p_s) itself), CE is ``cross_entropy`` with
its own ``ignore_index`` mean (the reference gathers and divides by the labelled count), and the
whole formula runs in float64 (the reference in float32). A convention error in the reference (T²
missing, CE averaged over every row, masked rows counted, log-targets swapped) fails here even if
the kernel shares it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distill.losses import IGNORE_INDEX, KDLoss, KDLossConfig, LossSettingError, kd_loss, kd_loss_reference

ROOT = Path(__file__).resolve().parents[1]


def independent(s, t, labels, row_mask, *, temperature, w_kd, w_ce):
    """(loss, kd, ce) as float64 tensors, by torch's own KL and CE on the selected rows."""
    keep = torch.ones(len(s), dtype=torch.bool) if row_mask is None else row_mask
    s_k, t_k, y_k = s[keep], t[keep], labels[keep]
    zero = (s.sum() + t.sum()) * 0  # keeps the graph (zero gradients) when a term has no rows
    kd = (F.kl_div(F.log_softmax(s_k / temperature, -1), F.softmax(t_k / temperature, -1), reduction="batchmean")
          if len(s_k) else zero)
    ce = F.cross_entropy(s_k, y_k, ignore_index=IGNORE_INDEX) if (y_k != IGNORE_INDEX).any() else zero
    return w_kd * temperature**2 * kd + w_ce * ce, kd, ce


def inputs(n, v, seed, *, ignore_frac, mask_frac, teacher_inf_frac=0.0):
    """student, teacher (N, V) fp32, labels (N,), row_mask (N,) bool or None."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, v, generator=g) * 3
    t = torch.randn(n, v, generator=g) * 3
    labels = torch.randint(0, v, (n,), generator=g)
    labels[torch.rand(n, generator=g) < ignore_frac] = IGNORE_INDEX
    row_mask = None if mask_frac is None else torch.rand(n, generator=g) >= mask_frac
    if teacher_inf_frac:
        t[torch.rand(n, v, generator=g) < teacher_inf_frac] = -float("inf")
        t[:, 0] = 0.0  # every teacher row keeps a finite entry (an all −inf row has no distribution)
    return s, t, labels, row_mask


def compare(s, t, labels, row_mask, *, teacher_grad=True, **kw):
    """Reference (fp32) against the independent formula (float64 of the same inputs): loss, kd, ce,
    and the gradients of the loss w.r.t. the student and (``teacher_grad``) the teacher logits."""
    s32, t32 = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
    ref = kd_loss_reference(s32, t32, labels, row_mask=row_mask, **kw)
    ref.loss.backward()
    s64, t64 = s.double().requires_grad_(True), t.double().requires_grad_(True)
    loss, kd, ce = independent(s64, t64, labels, row_mask, **kw)
    loss.backward()
    for name, got, want in (("loss", ref.loss, loss), ("kd", ref.kd, kd), ("ce", ref.ce, ce)):
        assert got.dtype == torch.float32 and got.shape == ()
        torch.testing.assert_close(got.double(), want.detach(), atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    torch.testing.assert_close(s32.grad.double(), s64.grad, atol=1e-7, rtol=1e-4)
    if teacher_grad:
        torch.testing.assert_close(t32.grad.double(), t64.grad, atol=1e-7, rtol=1e-4)
    return ref, s32.grad


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("w_kd, w_ce", [(0.5, 0.5), (0.9, 0.1), (1.0, 0.0), (0.0, 1.0), (0.3, 0.9)])
def test_reference_matches_an_independent_formula(temperature, w_kd, w_ce):
    s, t, labels, row_mask = inputs(37, 53, seed=int(temperature * 100 + w_kd * 10 + w_ce), ignore_frac=0.3,
                                    mask_frac=0.25)
    assert (labels == IGNORE_INDEX).any() and not row_mask.all()  # both conventions are exercised
    compare(s, t, labels, row_mask, temperature=temperature, w_kd=w_kd, w_ce=w_ce)


@pytest.mark.parametrize("shape", [(1, 2), (5, 2), (64, 7), (3, 1000)])
def test_shapes_without_a_mask(shape):
    s, t, labels, _ = inputs(*shape, seed=sum(shape), ignore_frac=0.2, mask_frac=None)
    compare(s, t, labels, None, temperature=2.0, w_kd=0.5, w_ce=0.5)


def test_teacher_zero_probabilities():
    """Teacher entries of −inf (p_t = 0) add nothing to KL, in both formulas. (Both give the teacher
    a NaN gradient there; the teacher never trains, so only the student's is compared.)"""
    s, t, labels, row_mask = inputs(16, 40, seed=7, ignore_frac=0.3, mask_frac=0.2, teacher_inf_frac=0.4)
    compare(s, t, labels, row_mask, teacher_grad=False, temperature=2.0, w_kd=0.7, w_ce=0.3)


def test_ignored_rows_take_the_kd_term_only():
    """All labels ignore_index: CE is 0 (not NaN, which cross_entropy's own mean gives), KD unchanged."""
    s, t, labels, row_mask = inputs(12, 30, seed=11, ignore_frac=1.0, mask_frac=0.3)
    ref, _ = compare(s, t, labels, row_mask, temperature=2.0, w_kd=0.5, w_ce=0.5)
    assert ref.ce == 0 and ref.kd > 0
    assert torch.isnan(F.cross_entropy(s, labels, ignore_index=IGNORE_INDEX))  # why the empty term is written out


def test_masked_rows_take_no_part():
    """Every row masked: loss, kd and ce are 0 and the gradient is 0 everywhere; a masked row's
    values do not move the loss of the others."""
    s, t, labels, _ = inputs(10, 30, seed=13, ignore_frac=0.3, mask_frac=None)
    ref, grad = compare(s, t, labels, torch.zeros(10, dtype=torch.bool), temperature=2.0, w_kd=0.5, w_ce=0.5)
    assert ref.loss == 0 and ref.kd == 0 and ref.ce == 0 and (grad == 0).all()
    mask = torch.arange(10) % 3 != 0
    before = kd_loss_reference(s, t, labels, row_mask=mask).loss
    s2 = s.clone()
    s2[~mask] = s2[~mask] * 50 + 7  # only masked rows change
    torch.testing.assert_close(kd_loss_reference(s2, t, labels, row_mask=mask).loss, before, atol=0, rtol=0)


# ----------------------------------------------------------------------------- T > 0 on every path

T_MESSAGE = ("temperature={}: the distillation temperature T must be a finite number > 0 (both teacher and "
             "student logits are divided by T)")
BAD_T = [0.0, -1.0, float("nan"), float("inf")]


@pytest.mark.parametrize("temperature", BAD_T)
def test_temperature_checked_by_the_reference_and_the_cpu_path(temperature):
    s, t, labels, _ = inputs(4, 6, seed=1, ignore_frac=0.0, mask_frac=None)
    for call in (lambda: kd_loss_reference(s, t, labels, temperature=temperature),
                 lambda: kd_loss(s, t, labels, temperature=temperature),  # the CPU path of the trainer's loss
                 lambda: KDLoss(KDLossConfig(temperature=temperature))(s, t, labels)):
        with pytest.raises(LossSettingError) as err:
            call()
        assert str(err.value) == T_MESSAGE.format(temperature)


def test_temperature_on_the_command_line_is_one_line(tmp_path):
    """``distill --temperature=0`` stops before reading anything: one line, exit status 2."""
    done = subprocess.run([sys.executable, "-m", "distill", "distill", "--run-dir", str(tmp_path / "run"),
                           "--temperature=0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr == "error: " + T_MESSAGE.format(0.0) + "\n"
    assert not (tmp_path / "run").exists()

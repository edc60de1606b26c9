"""Errors of the fused KD kernel at logits offset by ±1e4, against float64 (docs/RESULTS.md).

    TRITON_INTERPRET=1 .venv/bin/python benchmarks/kd_offset_precision.py [REPO]   # CPU, the interpreter
    .venv/bin/python benchmarks/kd_offset_precision.py [REPO]                      # on CUDA

16 rows x 1271 logits (randn * 3); student and teacher rows get independent offsets of +1e4 or
-1e4 (so about half the rows have opposite offsets), or none. Per row (one row per call): max
|KL - KL_f64| and |CE - CE_f64|; over the batch: max |d loss / d student - float64's|, for
T = 1, 2, 4, with one block and with 256-wide blocks (the online rescaling). REPO (default: this
checkout) is whose ``distill`` is imported, e.g. an older commit's ``git archive`` to compare.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1]))
import distill.kd_loss_triton as kdt  # noqa: E402

N, V = 16, 1271
DEVICE = "cpu" if kdt.INTERPRETED else "cuda"


def case(seed, offset):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(N, V, generator=g) * 3
    t = torch.randn(N, V, generator=g) * 3
    sign_s = torch.where(torch.rand(N, 1, generator=g) < 0.5, -1.0, 1.0)
    sign_t = torch.where(torch.rand(N, 1, generator=g) < 0.5, -1.0, 1.0)
    labels = torch.randint(0, V, (N,), generator=g)
    return s + offset * sign_s, t + offset * sign_t, labels


def f64(s, t, labels, temperature):
    """(KL per row, CE per row, grad of 0.5 T² mean KL + 0.5 mean CE) in float64."""
    s = s.double().requires_grad_(True)
    lt = torch.log_softmax(t.double() / temperature, -1)
    ls = torch.log_softmax(s / temperature, -1)
    kl = (lt.exp() * (lt - ls)).sum(-1)  # (N,)
    ce = -torch.log_softmax(s, -1).gather(1, labels[:, None]).squeeze(1)  # (N,)
    (0.5 * temperature**2 * kl.mean() + 0.5 * ce.mean()).backward()
    return kl.detach(), ce.detach(), s.grad


for max_block in (None, 256):
    if max_block:
        kdt.MAX_BLOCK_V = max_block
    for temperature in (1.0, 2.0, 4.0):
        for offset in (0.0, 1e4):
            s, t, labels = case(0, offset)
            kl, ce, grad = f64(s, t, labels, temperature)
            kl_err = ce_err = 0.0
            for i in range(N):
                row = slice(i, i + 1)
                out = kdt.kd_loss_fused(s[row].to(DEVICE), t[row].to(DEVICE), labels[row].to(DEVICE),
                                        temperature=temperature)
                kl_err = max(kl_err, abs(out.kd.double().item() - kl[i].item()))
                ce_err = max(ce_err, abs(out.ce.double().item() - ce[i].item()))
            s_leaf = s.to(DEVICE).requires_grad_(True)
            kdt.kd_loss_fused(s_leaf, t.to(DEVICE), labels.to(DEVICE), temperature=temperature, w_kd=0.5,
                              w_ce=0.5).loss.backward()
            g_err = (s_leaf.grad.cpu().double() - grad).abs().max().item()
            print(f"block {max_block or 'default'} T={temperature} offset ±{offset:g}: max|KL-f64| {kl_err:.2e}  "
                  f"max|CE-f64| {ce_err:.2e}  max|grad-f64| {g_err:.2e} (grad max {grad.abs().max().item():.2e})")

"""Intermediate-layer distillation: the student's hidden states and attention maps follow the
teacher's at mapped layers (TinyBERT, MiniLM; BERT-PKD for [CLS] states only).

Layer map (indices into HF ``hidden_states``: 0 is the embedding output, i the output of block i):
a layer-subset student maps its block j to the teacher block it was copied from; any other student
maps its L_s blocks evenly onto the teacher's L_t (block j -> round(j * L_t / L_s)). Embeddings map
to embeddings. Attention maps use the same pairs without the embeddings (block j's attention is
``attentions[j - 1]``).

    hidden = mean over pairs of  mean over real tokens of ‖P h_s − h_t‖² / H_t
             (P: a learned projection when the widths differ; identity otherwise)
    attn   = mean over pairs of  mean over heads and real query tokens of KL(a_t ‖ a_s)
             (heads averaged first when the head counts differ)

With ``tokens_aligned=False`` (the student has its own tokenizer) only position 0 ([CLS] / <s>)
is compared for hidden states, and attention maps cannot be compared at all.
"""

from __future__ import annotations

import torch
from torch import nn


def disable_attention_dropout(model: nn.Module) -> int:
    """Set the dropout on attention probabilities to 0 in every self-attention block; returns how
    many it changed. HF returns the attention maps *after* that dropout, so in training they are
    not distributions (a tenth of the entries zeroed, rows summing to 0.5..1.1) and the KL against
    the teacher's maps measures the dropout, not the student. Hidden and output dropout stay."""
    changed = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout) and name.rsplit(".", 2)[-2:-1] in (["self"], ["attn"]):
            module.p, changed = 0.0, changed + 1
    return changed


def layer_pairs(student_layers: int, teacher_layers: int, kept: list[int] | None) -> list[tuple[int, int]]:
    """(student hidden-state index, teacher hidden-state index) pairs, embeddings first."""
    if kept is not None:
        if len(kept) != student_layers:
            raise ValueError(f"{len(kept)} kept layers for a {student_layers}-layer student")
        return [(0, 0)] + [(j + 1, t + 1) for j, t in enumerate(kept)]
    return [(0, 0)] + [(j, max(1, round(j * teacher_layers / student_layers))) for j in range(1, student_layers + 1)]


class Projections(nn.Module):
    """One linear map student width -> teacher width per layer pair (trained with the student, not
    saved with it); empty when the widths match."""

    def __init__(self, pairs: int, student_hidden: int, teacher_hidden: int):
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(student_hidden, teacher_hidden) for _ in range(pairs)) \
            if student_hidden != teacher_hidden else nn.ModuleList()

    def forward(self, k: int, h: torch.Tensor) -> torch.Tensor:
        return self.maps[k](h) if len(self.maps) else h


def hidden_loss(student_hidden: tuple[torch.Tensor, ...], teacher_hidden: tuple[torch.Tensor, ...],
                pairs: list[tuple[int, int]], mask: torch.Tensor, projections: Projections, *,
                tokens_aligned: bool) -> torch.Tensor:
    """student_hidden[i]: (B, L_s, H_s); teacher_hidden[i]: (B, L_t, H_t); mask: (B, L) 1 on real
    tokens (used only when tokens_aligned, then L_s == L_t == L). Returns a scalar."""
    terms = []
    for k, (s, t) in enumerate(pairs):
        hs, ht = student_hidden[s].float(), teacher_hidden[t].float()
        if not tokens_aligned:
            hs, ht = hs[:, :1], ht[:, :1]  # (B, 1, H): position 0 only
        diff = (projections(k, hs) - ht).pow(2).mean(dim=-1)  # (B, L)
        weights = mask.float() if tokens_aligned else torch.ones_like(diff)
        terms.append((diff * weights).sum() / weights.sum().clamp(min=1))
    return torch.stack(terms).mean()


def attention_loss(student_attn: tuple[torch.Tensor, ...], teacher_attn: tuple[torch.Tensor, ...],
                   pairs: list[tuple[int, int]], mask: torch.Tensor) -> torch.Tensor:
    """student_attn[i]: (B, A_s, L, L); teacher_attn[i]: (B, A_t, L, L) (softmax over the last
    axis; masked keys hold 0); mask: (B, L). Mean KL(teacher ‖ student) over heads and real query
    rows of the mapped blocks. Returns a scalar."""
    terms = []
    eps = 1e-12
    for s, t in pairs:
        if s == 0:
            continue  # embeddings have no attention
        a_s, a_t = student_attn[s - 1].float(), teacher_attn[t - 1].float()
        if a_s.shape[1] != a_t.shape[1]:
            a_s, a_t = a_s.mean(dim=1, keepdim=True), a_t.mean(dim=1, keepdim=True)
        kl = (a_t * ((a_t + eps).log() - (a_s + eps).log())).sum(dim=-1)  # (B, A, L): per query row
        rows = mask.float()[:, None, :].expand_as(kl)
        terms.append((kl * rows).sum() / rows.sum().clamp(min=1))
    return torch.stack(terms).mean()

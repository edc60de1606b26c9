"""Causal LMs for the lm task: where a teacher comes from, held-out perplexity, and the student
wrapper that returns last hidden states instead of logits.

The student's loss (distill/lm_loss.py) reads its last hidden states (B, L, D) and output matrix
(V, D) and never asks for the (B, L, V) logits, so the training loop runs ``HiddenStates``: the
causal LM's decoder without its output layer; its output matrix rides along as ``outputs.weight``
(a parameter of the wrapped model, so DDP and the optimizer see it). Evaluation forms logits a
slice of positions at a time as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


def causal_lm_source(name: str) -> str:
    """``smollm2`` -> the assembled SmolLM2 folder (distill/lm_assets.py; an AssetError naming
    ``make smollm2`` when it is not there); a folder -> itself (it must hold config.json); anything
    else is a hub name (needs network)."""
    from distill import lm_assets

    if name == lm_assets.SMOLLM2:
        return str(lm_assets.smollm2_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a model folder (no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{path}: no such model folder")
    return name


@torch.no_grad()
def heldout_perplexity(model, blocks: np.ndarray, *, batch_size: int, device) -> tuple[float, int, int]:
    """(summed next-token NLL, correct argmax predictions, predicted tokens) of a causal LM with
    logits over ``blocks`` (n, L): positions 0 .. L-2 predict tokens 1 .. L-1."""
    model.eval()
    nll, correct, tokens = 0.0, 0, 0
    for start in range(0, len(blocks), batch_size):
        ids = torch.from_numpy(np.asarray(blocks[start:start + batch_size], dtype=np.int64)).to(device)
        logits = model(input_ids=ids).logits[:, :-1].float()  # (b, L - 1, V)
        target = ids[:, 1:]  # (b, L - 1)
        nll += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.reshape(-1), reduction="sum"))
        correct += int((logits.argmax(-1) == target).sum())
        tokens += target.numel()
    return nll, correct, tokens


@dataclass
class HiddenOutput:
    hidden: torch.Tensor  # (B, L, D) last hidden states (after the final norm)
    weight: torch.Tensor  # (V, D) the output matrix (tied: the input embeddings)


class HiddenStates(nn.Module):
    """A causal LM that returns its last hidden states and output matrix, not its logits."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> HiddenOutput:
        hidden = self.lm.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, D)
        return HiddenOutput(hidden=hidden, weight=self.lm.get_output_embeddings().weight)


@torch.no_grad()
def student_heldout(model: nn.Module, blocks: np.ndarray, teacher_top1: np.ndarray | None, *, batch_size: int,
                    device, position_chunk: int = 1024) -> dict:
    """Held-out perplexity, next-token accuracy and top-1 agreement with the teacher of a
    ``HiddenStates`` model; logits are formed ``position_chunk`` positions at a time.
    blocks (n, L) int32; teacher_top1 (n, L - 1) int64 or None."""
    was_training = model.training
    model.eval()
    nll, correct, agree, tokens = 0.0, 0, 0, 0
    for start in range(0, len(blocks), batch_size):
        ids = torch.from_numpy(np.asarray(blocks[start:start + batch_size], dtype=np.int64)).to(device)
        out = model(input_ids=ids)
        hidden = out.hidden[:, :-1].reshape(-1, out.hidden.shape[-1]).float()  # (P, D)
        target = ids[:, 1:].reshape(-1)  # (P,)
        top = None if teacher_top1 is None else torch.from_numpy(
            np.array(teacher_top1[start:start + batch_size], dtype=np.int64).reshape(-1)).to(device)
        for p0 in range(0, len(hidden), position_chunk):
            logits = hidden[p0:p0 + position_chunk] @ out.weight.float().T  # (c, V)
            t = target[p0:p0 + position_chunk]
            nll += float(torch.nn.functional.cross_entropy(logits, t, reduction="sum"))
            pred = logits.argmax(-1)
            correct += int((pred == t).sum())
            if top is not None:
                agree += int((pred == top[p0:p0 + position_chunk]).sum())
        tokens += len(target)
    model.train(was_training)
    result = {"perplexity": float(np.exp(nll / tokens)), "nll": nll / tokens, "next_token_accuracy": correct / tokens,
              "tokens": tokens}
    if teacher_top1 is not None:
        result["teacher_top1_agreement"] = agree / tokens
    return result

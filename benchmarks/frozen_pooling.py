"""Is the frozen teacher held back by its [CLS]/pooler head? Linear probes on three poolings.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/frozen_pooling.py [--rows 8000] [--threads 2]

The packaged all-MiniLM-L6-v2 was trained for mean pooling (sentence-transformers), while
``AutoModelForSequenceClassification`` classifies from the BERT pooler, ``tanh(W h_[CLS])``.
This encodes the quick preset's SST-2 training rows (``DataSpec(max_train_rows=8000, seed=0)``)
and the dev rows once with the frozen encoder (inference only, max length 64), takes three
features per row:

    cls      the last hidden state of [CLS]                      (R, 384)
    pooler   the BERT pooler output tanh(W h_cls + b), packaged W (R, 384)
    mean     the mean of the last hidden states over real tokens (R, 384)

and fits a logistic-regression probe on each (full batch, LBFGS, features standardised with the
training rows' mean and std). The L2 strength is chosen on ``--holdout`` training rows held back
(seeded), never on dev; the probe is then refitted on all training rows and dev accuracy reported.
Prints one table (and ``--json`` writes it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.data import DEFAULT_DATA, DataSpec, load_dataset  # noqa: E402
from distill.modeling import PACKAGED, resolve_model_name  # noqa: E402

POOLINGS = ("cls", "pooler", "mean")
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # λ of the mean loss + λ/2 ‖W‖²; chosen on the held-back rows


@torch.inference_mode()
def encode_features(model, tokenizer, texts: list[str], *, max_length: int, batch_size: int) -> dict[str, np.ndarray]:
    """{pooling: (R, H) float32}, rows in the order of ``texts``; batches run sorted by length."""
    lengths = [len(t) for t in texts]
    order = np.argsort(lengths, kind="stable")
    feats = {name: np.empty((len(texts), model.config.hidden_size), dtype=np.float32) for name in POOLINGS}
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        out = model(**batch)
        hidden = out.last_hidden_state  # (B, T, H)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        feats["cls"][rows] = hidden[:, 0].numpy()
        feats["pooler"][rows] = out.pooler_output.numpy()
        feats["mean"][rows] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy()
    return feats


def fit_probe(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression: x (N, H) standardised, y (N,) -> W (H, C), b (C,).
    Minimises mean cross-entropy + l2/2 ‖W‖² with full-batch LBFGS (strong Wolfe line search)."""
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, history_size=20, tolerance_grad=1e-6,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def accuracy(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> float:
    return float(((x @ w + b).argmax(1) == y).float().mean())


def probe(train_x: np.ndarray, train_y: np.ndarray, dev_x: np.ndarray, dev_y: np.ndarray, *, holdout: int,
          seed: int, classes: int) -> dict:
    """Choose λ on ``holdout`` training rows, refit on all training rows, score dev."""
    held = np.random.default_rng([seed, 7]).choice(len(train_x), size=holdout, replace=False)
    fit_mask = np.ones(len(train_x), dtype=bool)
    fit_mask[held] = False

    def standardise(reference: np.ndarray, *arrays: np.ndarray) -> list[torch.Tensor]:
        mean, std = reference.mean(0), reference.std(0) + 1e-6  # (H,)
        return [torch.from_numpy((a - mean) / std) for a in arrays]

    xf, xh = standardise(train_x[fit_mask], train_x[fit_mask], train_x[held])
    yf, yh = torch.from_numpy(train_y[fit_mask]), torch.from_numpy(train_y[held])
    by_l2 = {l2: accuracy(xh, yh, *fit_probe(xf, yf, classes, l2)) for l2 in L2_GRID}
    best = max(L2_GRID, key=lambda l2: (by_l2[l2], l2))  # ties: the stronger regulariser
    xa, xd = standardise(train_x, train_x, dev_x)
    ya, yd = torch.from_numpy(train_y), torch.from_numpy(dev_y)
    w, b = fit_probe(xa, ya, classes, best)
    return {"l2": best, "holdout_accuracy_by_l2": by_l2, "train_accuracy": accuracy(xa, ya, w, b),
            "dev_accuracy": accuracy(xd, yd, w, b)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="dataset directory (train + dev)")
    parser.add_argument("--rows", type=int, default=8000, help="training rows (the quick preset's 8,000)")
    parser.add_argument("--seed", type=int, default=0, help="the data seed (the quick preset's 0)")
    parser.add_argument("--holdout", type=int, default=1000, help="training rows held back to choose λ")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per row (the quick preset's 64)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--model", default=PACKAGED, help="the frozen encoder (default: the packaged MiniLM)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import AutoModel, AutoTokenizer

    start = time.perf_counter()
    data = load_dataset(DataSpec(path=args.data, max_train_rows=args.rows, seed=args.seed))
    source = resolve_model_name(args.model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model, loading = AutoModel.from_pretrained(source, output_loading_info=True)  # BertModel with its pooler
    model.eval()
    if loading["missing_keys"]:  # a pooler initialised at random would make its row meaningless
        raise RuntimeError(f"{source}: weights missing from the checkpoint: {loading['missing_keys']}")
    t0 = time.perf_counter()
    train_f = encode_features(model, tokenizer, data.train.texts, max_length=args.max_length,
                              batch_size=args.batch_size)
    dev_f = encode_features(model, tokenizer, data.dev.texts, max_length=args.max_length, batch_size=args.batch_size)
    encode_s = time.perf_counter() - t0
    train_y, dev_y = data.label_map.encode(data.train), data.label_map.encode(data.dev)
    classes = len(data.label_map.names)
    t0 = time.perf_counter()
    results = {name: probe(train_f[name], train_y, dev_f[name], dev_y, holdout=args.holdout, seed=args.seed,
                           classes=classes) for name in POOLINGS}
    probe_s = time.perf_counter() - t0
    rows = len(data.train) + len(data.dev)
    print(f"frozen {args.model}: {len(data.train)} train + {len(data.dev)} dev rows encoded in {encode_s:.1f}s "
          f"({rows / encode_s:.0f} rows/s, {args.threads} threads, max length {args.max_length}); "
          f"probes {probe_s:.1f}s; λ chosen on {args.holdout} held-back training rows\n")
    print("| pooling | dev accuracy | train accuracy | λ | held-back accuracy by λ |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        by = ", ".join(f"{l2:g}: {acc:.4f}" for l2, acc in r["holdout_accuracy_by_l2"].items())
        print(f"| {name} | {r['dev_accuracy']:.4f} | {r['train_accuracy']:.4f} | {r['l2']:g} | {by} |")
    print(f"\ntotal {time.perf_counter() - start:.1f}s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "encode_s": encode_s, "probe_s": probe_s,
                                               "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Top-k against sampled sparse targets (distill/lm_cache.py), measured against the teacher's full
distribution on held-out text: what each rule keeps, and how far its KD gradient is from the
full-distribution one, for a real student.

    OMP_NUM_THREADS=1 python benchmarks/bench_lm_targets.py --teacher RUN/teacher --student RUN/student_ce \\
        [--blocks 4 --ks 8,16,32,64 --draws 4]

For every position of the first ``blocks`` held-out blocks: p = the teacher's softmax (T = 1),
q = the student's. The exact KD gradient w.r.t. the student's logits is q − p; a rule's is q − p̃
(distill/lm_loss.py: top-k's p̃ puts the cached a on the support and the tail r spread as q off it;
sample's p̃ is the weights count / k). Per rule and k: the mean over positions of the cosine
between the two gradients and of ‖p̃ − p‖₁ (the gradient's L1 error), the KL the rule's loss reports
against the exact KL(p ‖ q) (mean over positions; for sample, the weights' cross-entropy minus the
teacher's entropy, its unbiased estimate), and for top-k the mass the k ids hold. Sample is
averaged over ``draws`` independent draws. One JSON line per rule and k.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.artifacts import read_model_info
    from distill.lm_cache import TargetSpec, sparse_targets
    from distill.lm_data import load_lm_data

    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--ks", default="8,16,32,64")
    parser.add_argument("--draws", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    info = read_model_info(args.teacher)
    data = load_lm_data(info.data, AutoTokenizer.from_pretrained(args.teacher), args.teacher / "tokens")
    ids = torch.from_numpy(np.asarray(data.heldout.blocks[: args.blocks], dtype=np.int64))
    with torch.no_grad():
        t_logits = torch.cat([AutoModelForCausalLM.from_pretrained(args.teacher).eval()(input_ids=ids[i:i + 1]).logits[0, :-1]
                              for i in range(len(ids))])  # (P, V)
        s_logits = torch.cat([AutoModelForCausalLM.from_pretrained(args.student).eval()(input_ids=ids[i:i + 1]).logits[0, :-1]
                              for i in range(len(ids))])
    p, q = torch.softmax(t_logits.float(), -1), torch.softmax(s_logits.float(), -1)  # (P, V) fp32: 4 blocks are 0.8 GB a tensor
    log_p, log_q = torch.log_softmax(t_logits.float(), -1), torch.log_softmax(s_logits.float(), -1)
    exact_kl = (p * (log_p - log_q)).sum(-1)  # (P,)
    entropy = -(p * log_p).sum(-1)
    exact_grad = q - p
    base = {"positions": len(p), "exact_kl_mean": float(exact_kl.mean())}
    for k in (int(x) for x in args.ks.split(",")):
        for rule in ("topk", "sample"):
            draws = 1 if rule == "topk" else args.draws
            cos, l1, kl = [], [], []
            for draw in range(draws):
                rec = sparse_targets(t_logits, TargetSpec(rule=rule, k=k),
                                     generator=torch.Generator().manual_seed(draw))
                sid = torch.from_numpy(rec["ids"].astype(np.int64))
                present = sid >= 0
                a = torch.where(present, torch.from_numpy(rec["values"].astype(np.float32)).exp(), 0.0)
                r = torch.from_numpy(rec["tail"].astype(np.float32))
                total = a.sum(-1) + r
                a, r = a / total[:, None], r / total
                safe = sid.clamp(min=0)
                in_s = torch.zeros_like(p, dtype=torch.bool)
                rows = torch.arange(len(p))[:, None].expand_as(sid)
                in_s[rows[present], safe[present]] = True
                q_off = torch.where(in_s, 0.0, q)
                big_q = q_off.sum(-1)
                target = (q_off * (r / big_q.clamp(min=1e-30))[:, None]).scatter_add(1, safe, a)  # p̃ (P, V)
                grad = q - target
                cos.append(torch.nn.functional.cosine_similarity(grad, exact_grad, dim=-1).mean().item())
                l1.append((target - p).abs().sum(-1).mean().item())
                log_qs = log_q.gather(1, safe)
                if rule == "topk":  # the loss's KL over the k + 1 buckets
                    head = torch.where(a > 0, a * (a.clamp(min=1e-30).log() - log_qs), 0.0).sum(-1)
                    kl.append((head + torch.where(r > 0, r * (r.clamp(min=1e-30).log() - big_q.log()), 0.0)).mean().item())
                else:  # unbiased: the weights' cross-entropy less the teacher's entropy
                    kl.append(((-(a * log_qs).sum(-1)) - entropy).mean().item())
            row = {"rule": rule, "k": k, "bytes_per_token": 6 * k + 4, "grad_cosine": float(np.mean(cos)),
                   "target_l1_error": float(np.mean(l1)), "kl_estimate_mean": float(np.mean(kl)), **base}
            if rule == "topk":
                row["topk_mass_mean"] = float(1 - r.mean())
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

"""Teacher scoring: PyTorch eager against the teacher's ONNX Runtime graphs, rows/s and logits.

    python benchmarks/bench_scoring.py --teacher runs/mpnet/teacher --rows 2048 [--threads 2] [--rounds 3]

The rows are the teacher's first ``--rows`` training rows (real text, tokenised once at the
teacher's max length, as the cache scores them). Each scorer of distill/scoring.py (pytorch,
onnx = fp32 O2, onnx-int8 = the portable int8 graph) scores all of them ``--rounds`` times, the
scorers taking turns so that load drifts hit each alike; rows/s is the median round. Prints and
writes (``--out``) rows/s, the ratio to PyTorch, and each ONNX scorer's max |Δlogit|, agreement
and decided agreement against PyTorch's logits on the same rows. Graph building (once per teacher,
cached in teacher/scorer/) is not timed. Check ``uptime`` first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from distill.artifacts import read_model_info
    from distill.data import load_dataset
    from distill.int8 import GATE, machine_facts
    from distill.modeling import load_classifier
    from distill.onnx_graph import int8_value_figures, ort_document_logits, ort_session
    from distill.scoring import build_scorer_graph
    from distill.tokens import encode
    from distill.trainer import predict_logits

    torch.set_num_threads(args.threads)
    info = read_model_info(args.teacher)
    data = load_dataset(info.data)
    rows = data.train.subset(np.arange(min(args.rows, len(data.train))))
    encoded = encode(AutoTokenizer.from_pretrained(args.teacher), rows, data.label_map.encode(rows), info.max_length)
    model = load_classifier(str(args.teacher), id2label=info.id2label).eval()
    device = torch.device("cpu")
    scorers = {"pytorch": lambda: predict_logits(model, encoded, batch_size=args.batch_size, device=device)}
    for name, variant in (("onnx", "o2"), ("onnx-int8", "int8")):
        session = ort_session(build_scorer_graph(args.teacher, variant) / "model.onnx", args.threads)
        scorers[name] = lambda s=session: ort_document_logits(s, encoded, batch_size=args.batch_size)
    load = os.getloadavg()[0]
    seconds: dict[str, list[float]] = {n: [] for n in scorers}
    logits = {}
    for _ in range(args.rounds):
        for name, run in scorers.items():
            t0 = time.perf_counter()
            logits[name] = run()
            seconds[name].append(time.perf_counter() - t0)
    result = {"teacher": str(args.teacher), "rows": len(encoded), "threads": args.threads, "rounds": args.rounds,
              "batch_size": args.batch_size, "load_1m_before": load, "load_1m_after": os.getloadavg()[0],
              "machine": machine_facts(), "scorers": {}}
    base = len(encoded) / statistics.median(seconds["pytorch"])
    for name in scorers:
        rate = len(encoded) / statistics.median(seconds[name])
        entry = {"rows_per_s": round(rate, 1), "x_pytorch": round(rate / base, 3),
                 "round_seconds": [round(s, 2) for s in seconds[name]]}
        if name != "pytorch":
            f = int8_value_figures(logits[name], logits["pytorch"], encoded.document_labels,
                                   decided_margin=GATE.decided_margin)
            entry.update({k: f[k] for k in ("max_abs_diff", "agreement", "decided_agreement", "logit_error")})
        result["scorers"][name] = entry
        print(f"{name:10s} {rate:8.1f} rows/s  {rate / base:5.2f}x pytorch  " + "  ".join(
            f"{k} {v:.3g}" for k, v in entry.items() if k not in ("rows_per_s", "x_pytorch", "round_seconds")))
    print(f"load {load:.2f} -> {result['load_1m_after']:.2f}; {result['machine']['cpu_model']} "
          f"({result['machine']['kernel_path']})")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main(sys.argv[1:]))

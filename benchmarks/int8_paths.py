"""int8 configurations x CPU kernel paths: accuracy, agreement and latency of real exported models.

    # 1. on any machine: export fp32 + O2 and every int8 configuration of each model, once
    python benchmarks/int8_paths.py build --run-dir runs/demo --models=teacher,student --out /tmp/int8
    # 2. evaluate (and on a real CPU time) every variant; --label names the kernel path
    python benchmarks/int8_paths.py eval --out /tmp/int8 --label vnni --time
    qemu-x86_64 -cpu Haswell .venv/bin/python benchmarks/int8_paths.py eval --out /tmp/int8 --label avx2
    # 3. one table of every eval-*.json in --out; the same rows under two labels, logit by logit
    python benchmarks/int8_paths.py table --out /tmp/int8
    python benchmarks/int8_paths.py paths --out /tmp/int8 --label vnni --against avx2

qemu-user's ``-cpu Haswell`` runs x86-64 code with AVX2 and without AVX-512 or VNNI, so ONNX
Runtime takes its AVX2 kernels there: the numbers (accuracy, agreement, logit error) are that
path's, bit for bit; its timings are an emulator's and are not taken (``--time`` is refused under
a label other than the host's own path unless forced).

A variant's figures against the PyTorch fp32 logits of the same dev rows (export/onnx_export.py's
reference): accuracy and its change, agreement on all rows and on decided rows (fp32 top-1 minus
top-2 logit >= the export's int8_decided_margin), the centred-logit relative error, and with
--time batch-1 p50 latency over dev rows and batch-32 throughput (median of repeats).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = {  # variant name -> ExportConfig overrides for the int8 build
    "int8_vnni_pc": {"int8_target": "vnni", "int8_per_channel": True},
    "int8_vnni_pt": {"int8_target": "vnni", "int8_per_channel": False},
    "int8_portable_pc": {"int8_target": "portable", "int8_per_channel": True},
    "int8_portable_pt": {"int8_target": "portable", "int8_per_channel": False},
    "int8_u8u8_pc": {"int8_target": "u8u8", "int8_per_channel": True},
}


def build(run_dir: Path, models: list[str], out: Path) -> None:
    import numpy as np

    from distill.artifacts import read_model_info
    from distill.data import load_dataset
    from export import onnx_export as ox

    for model in models:
        model_dir, dest = run_dir / model, out / model
        dest.mkdir(parents=True, exist_ok=True)
        info = read_model_info(model_dir)
        from transformers import AutoConfig, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        data = load_dataset(info.data)
        labels = ox.label_ids_for_model(AutoConfig.from_pretrained(model_dir), data, model_dir)
        order, batches, groups = ox.dev_batches(tok, data.dev.texts, data.dev.text_pairs, info.max_length, 32,
                                                info.long_text)
        reference = ox.torch_logits(model_dir, batches, order, groups)
        np.savez(dest / "reference.npz", logits=reference, labels=labels)
        ox.export_fp32(model_dir, dest / "fp32", 18)
        ox.optimise_o2(dest / "fp32", dest / "o2")
        for name, overrides in CONFIGS.items():
            ox.quantise_int8(dest / "fp32", dest / name, dataclasses.replace(ox.ExportConfig(), **overrides))
        (dest / "source.json").write_text(json.dumps({"model_dir": str(model_dir), "max_length": info.max_length}))
        print(f"{model}: built fp32, o2 and {len(CONFIGS)} int8 variants in {dest}", flush=True)


def figures(logits, reference, labels, decided_margin: float) -> dict:
    from export.onnx_export import int8_value_figures

    return int8_value_figures(logits, reference, labels, decided_margin=decided_margin)


def time_variant(session, feeds_b1, batches_b32, reps_b1: int, reps_b32: int) -> dict:
    names = [i.name for i in session.get_inputs()]
    run = lambda feed: session.run(["logits"], {n: feed[n] for n in names})  # noqa: E731
    for feed in feeds_b1[:20]:
        run(feed)
    b1 = []
    for i in range(reps_b1):
        feed = feeds_b1[i % len(feeds_b1)]
        t0 = time.perf_counter()
        run(feed)
        b1.append((time.perf_counter() - t0) * 1e3)
    b32 = []
    for i in range(reps_b32):
        batch = batches_b32[i % len(batches_b32)]
        t0 = time.perf_counter()
        run(batch)
        b32.append(len(batch["input_ids"]) / (time.perf_counter() - t0))
    return {"b1_p50_ms": statistics.median(b1), "b32_rows_per_s": statistics.median(b32)}


def evaluate(out: Path, label: str, timed: bool, threads: int, decided_margin: float, variants: list[str],
             rows: int | None = None) -> Path:
    import numpy as np
    from transformers import AutoTokenizer

    from distill.artifacts import read_model_info
    from distill.data import load_dataset
    from distill.int8 import machine_facts
    from export import onnx_export as ox

    result = {"label": label, "facts": machine_facts(), "threads": threads, "load_1m": os.getloadavg()[0],
              "timed": timed, "decided_margin": decided_margin, "models": {}}
    for model_dir in sorted(p for p in out.iterdir() if (p / "reference.npz").is_file()):
        source = json.loads((model_dir / "source.json").read_text())
        info = read_model_info(Path(source["model_dir"]))
        tok = AutoTokenizer.from_pretrained(model_dir / "fp32")
        data = load_dataset(info.data)
        n = len(data.dev) if rows is None else min(rows, len(data.dev))  # the first n dev rows (emulation is slow)
        pairs = None if data.dev.text_pairs is None else data.dev.text_pairs[:n]
        order, batches, groups = ox.dev_batches(tok, data.dev.texts[:n], pairs, source["max_length"], 32,
                                                info.long_text)
        full = np.load(model_dir / "reference.npz")
        ref = {"logits": full["logits"][:n], "labels": full["labels"][:n]}
        kept = {}
        result_rows = {}
        for variant in variants:
            session = ox.ort_session(model_dir / variant / ox.ONNX_FILE, threads)
            logits = ox.ort_logits(session, batches, order, groups)
            kept[variant] = logits
            result_rows[variant] = figures(logits, ref["logits"], ref["labels"], decided_margin)
            if timed:
                _, b1, _ = ox.dev_batches(tok, data.dev.texts, data.dev.text_pairs, source["max_length"], 1,
                                          info.long_text)
                result_rows[variant].update(time_variant(session, b1, batches, reps_b1=600, reps_b32=40))
            result_rows[variant]["size_mb"] = (model_dir / variant / ox.ONNX_FILE).stat().st_size / 1e6
            print(f"{label} {model_dir.name}/{variant}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in result_rows[variant].items() if isinstance(v, float)), flush=True)
        np.savez(model_dir / f"logits-{label}.npz", **kept)  # the same rows under another label: compare bit for bit
        result["models"][model_dir.name] = {"pytorch_accuracy": float((ref["logits"].argmax(1) == ref["labels"]).mean()),
                                            "dev_rows": n, "variants": result_rows}
    path = out / f"eval-{label}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def table(out: Path) -> str:
    evals = [json.loads(p.read_text()) for p in sorted(out.glob("eval-*.json"))]
    lines = ["| model | variant | path | accuracy | Δ acc (points) | agreement | decided agreement (rows) | "
             "logit error | b1 p50 ms | b32 rows/s | MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    models = sorted({m for e in evals for m in e["models"]})
    for model in models:
        for variant in ["fp32", "o2", *CONFIGS]:
            for e in evals:
                m = e["models"].get(model)
                if m is None or variant not in m["variants"]:
                    continue
                r = m["variants"][variant]
                timing = (f"{r['b1_p50_ms']:.2f} | {r['b32_rows_per_s']:.0f}" if "b1_p50_ms" in r else "– | –")
                lines.append(
                    f"| {model} | {variant} | {e['label']} | {r['accuracy']:.4f} | {100 * r['accuracy_delta']:+.2f} | "
                    f"{r['agreement']:.4f} | {r['decided_agreement']:.4f} ({r['decided_rows']}) | "
                    f"{r['logit_error']:.4f} | {timing} | {r['size_mb']:.1f} |")
    return "\n".join(lines)


def compare_paths(out: Path, a: str, b: str) -> str:
    """The same variants on the same rows under two labels (kernel paths): max |Δlogit| and label flips."""
    import numpy as np

    lines = [f"| model | variant | rows | max abs(logit {a} - logit {b}) | labels that differ |", "|---|---|---|---|---|"]
    for model_dir in sorted(p for p in out.iterdir() if (p / f"logits-{a}.npz").is_file()):
        if not (model_dir / f"logits-{b}.npz").is_file():
            continue
        x, y = np.load(model_dir / f"logits-{a}.npz"), np.load(model_dir / f"logits-{b}.npz")
        for variant in sorted(set(x.files) & set(y.files)):
            if x[variant].shape != y[variant].shape:
                continue
            diff = float(np.abs(x[variant] - y[variant]).max())
            flips = int((x[variant].argmax(1) != y[variant].argmax(1)).sum())
            lines.append(f"| {model_dir.name} | {variant} | {len(x[variant])} | {diff:.3g} | {flips} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build", "eval", "table", "paths"])
    parser.add_argument("--against", default=None, help="paths: the second label (--label is the first)")
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--models", default="teacher,student")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--label", default="host")
    parser.add_argument("--time", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--decided-margin", type=float, default=None)
    parser.add_argument("--rows", type=int, default=None, help="eval: only the first N dev rows")
    parser.add_argument("--variants", default=",".join(["fp32", "o2", *CONFIGS]),
                        help="eval: which variants (under qemu: only the int8 ones differ by kernel path)")
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.run_dir, args.models.split(","), args.out)
    elif args.command == "eval":
        from export.onnx_export import ExportConfig

        margin = ExportConfig().int8_decided_margin if args.decided_margin is None else args.decided_margin
        print(evaluate(args.out, args.label, args.time, args.threads, margin, args.variants.split(","), args.rows))
    elif args.command == "paths":
        print(compare_paths(args.out, args.label, args.against))
    else:
        print(table(args.out))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main(sys.argv[1:]))

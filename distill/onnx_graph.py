"""ONNX graphs of a trained model: build them (optimum's exporter, ORT's O2 fusions, dynamic int8),
run them on tokenised rows, and compare their logits with PyTorch's.

The library half of the export stage (export/onnx_export.py builds, validates and installs the
variants a user ships) and of the teacher's ONNX Runtime scorer (distill/scoring.py scores
transfer sets through the same graphs). Nothing here decides pass or fail: the callers hold the
bounds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distill.int8 import Int8Target, machine_facts, target, write_quantization
from distill.tokens import Encoded

ONNX_FILE = "model.onnx"  # the name ORTModel.from_pretrained(dir) looks for without file_name


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ORT picks (all physical cores)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_fp32(model_dir: Path, out_dir: Path, opset: int, task: str = "text-classification") -> None:
    """optimum's exporter: TorchScript torch.onnx export with dynamic batch_size / sequence_length
    axes, config.json and tokenizer copied beside model.onnx. Our own validation follows, so
    optimum's (2-row dummy-input) validation is skipped. ``task``: optimum's (token-classification
    for NER)."""
    from optimum.exporters.onnx import main_export

    main_export(
        str(model_dir), output=out_dir, task=task, opset=opset, device="cpu",
        library_name="transformers", local_files_only=True, do_validation=False,
    )


def optimise_o2(fp32_dir: Path, out_dir: Path) -> None:
    """optimum ORTOptimizer with OptimizationConfig(optimization_level=2) for CPU: it calls
    onnxruntime.transformers.optimizer.optimize_model(model_type="bert", opt_level=2), i.e. ORT's
    basic+extended graph rewrites plus the transformer fusions (Attention, SkipLayerNormalization,
    BiasGelu, ...)."""
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    config = OptimizationConfig(optimization_level=2, optimize_for_gpu=False)
    ORTOptimizer.from_pretrained(fp32_dir).optimize(optimization_config=config, save_dir=out_dir, file_suffix=None)


def quantization_config(target: Int8Target, *, per_channel: bool, operators: list[str], exclude: list[str]):
    """optimum's dynamic QuantizationConfig for ``target`` (distill/int8.py): uint8 activations
    quantised per batch, symmetric weights of the target's type and range. optimum's named
    configurations differ only in these two fields (avx512_vnni: s8 full range; avx512 with
    reduce_range: s8 in 7 bits; avx2: u8)."""
    from onnxruntime.quantization import QuantType
    from optimum.onnxruntime.configuration import QuantizationConfig, default_quantization_parameters

    fmt, mode, ops = default_quantization_parameters(is_static=False, operators_to_quantize=operators)
    return QuantizationConfig(
        is_static=False, format=fmt, mode=mode, activations_dtype=QuantType.QUInt8, activations_symmetric=False,
        weights_dtype=QuantType.QInt8 if target.weights == "int8" else QuantType.QUInt8, weights_symmetric=True,
        per_channel=per_channel, reduce_range=target.reduce_range, nodes_to_quantize=[], nodes_to_exclude=exclude,
        operators_to_quantize=ops,
    )


def int8_value_figures(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray, *, decided_margin: float
                       ) -> dict:
    """A quantised (or exported) model's logits (R, C) against PyTorch fp32's (R, C) on the same
    rows, with gold labels (R,): accuracy and its change, agreement on all rows and on the decided
    ones (fp32 top-1 minus top-2 logit >= ``decided_margin``: flips of near-ties are no fault of the
    export), and the centred-logit relative error (softmax ignores a per-row shift)."""
    top2 = np.sort(reference, axis=1)[:, -2:]  # (R, 2)
    decided = (top2[:, 1] - top2[:, 0]) >= decided_margin  # (R,)
    same = logits.argmax(1) == reference.argmax(1)  # (R,)
    centre = lambda x: x - x.mean(axis=1, keepdims=True)  # noqa: E731  (R, C)
    spread = float(np.sqrt(np.mean(centre(reference) ** 2)))
    error = float(np.sqrt(np.mean((centre(logits) - centre(reference)) ** 2)))
    accuracy, ref_accuracy = float((logits.argmax(1) == labels).mean()), float((reference.argmax(1) == labels).mean())
    return {"accuracy": accuracy, "accuracy_delta": accuracy - ref_accuracy, "agreement": float(same.mean()),
            "decided_rows": int(decided.sum()), "decided_agreement": float(same[decided].mean()) if decided.any() else 1.0,
            "decided_differ": int((~same & decided).sum()), "logit_error": error / max(spread, 1e-12),
            "max_abs_diff": float(np.abs(logits - reference).max())}


def quantise_weights(fp32_dir: Path, out_dir: Path, *, target_name: str, per_channel: bool, operators: list[str],
                     exclude: list[str]) -> None:
    """optimum ORTQuantizer, dynamic (weights int8 ahead of time, activations uint8 per batch) on
    the plain fp32 export, for the target ``target_name`` (distill/int8.py), with
    ``quantization.json`` beside it. Quantising the O2-fused graph through ORTQuantizer fails with
    the pinned versions (no type for the fused ops' outputs; ORTQuantizer has no way to pass
    onnxruntime's DefaultTensorType option). ONNX Runtime applies its own fusions when the session
    loads the quantised graph."""
    from optimum.onnxruntime import ORTQuantizer

    qconfig = quantization_config(target(target_name), per_channel=per_channel, operators=operators, exclude=exclude)
    ORTQuantizer.from_pretrained(fp32_dir).quantize(quantization_config=qconfig, save_dir=out_dir, file_suffix=None)
    write_quantization(out_dir, target_name=target_name, per_channel=per_channel, operators=operators,
                       exclude=exclude, facts=machine_facts())


def ort_document_logits(session, encoded: Encoded, *, batch_size: int) -> np.ndarray:
    """(D, C) float32 logits of an ONNX Runtime session, one per document of ``encoded`` (chunks
    averaged), as ``distill.trainer.predict_logits`` gives PyTorch's. Rows run sorted by length."""
    names = [i.name for i in session.get_inputs()]
    order = np.argsort(encoded.lengths, kind="stable")
    out = None
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        feed = encoded.arrays(rows, type_ids="token_type_ids" in names)
        logits = session.run(["logits"], {n: feed[n] for n in names})[0]  # (B, C)
        if out is None:
            out = np.empty((len(encoded), logits.shape[1]), dtype=np.float32)
        out[rows] = logits
    return encoded.document_logits(out)

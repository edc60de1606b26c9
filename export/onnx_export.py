"""ONNX export of trained classifiers in three variants, each validated before it is installed.

For every model directory ``runs/<RUN>/<model>/`` (an HF ``save_pretrained`` sequence classifier
with its tokenizer and ``distill.json``) this writes

    runs/<RUN>/onnx/<model>/fp32/model.onnx   optimum's exporter (torch.onnx, TorchScript path), as exported
    runs/<RUN>/onnx/<model>/o2/model.onnx     fp32 + ONNX Runtime graph optimisation O2 (fused kernels)
    runs/<RUN>/onnx/<model>/int8/model.onnx   dynamic int8 quantisation of the plain fp32 export
    runs/<RUN>/onnx/<model>/validation.json   this model's checks and figures

with ``config.json`` and the tokenizer beside each ``model.onnx``, so that
``ORTModelForSequenceClassification.from_pretrained(dir)`` and a transformers ``pipeline`` load a
variant as-is, ``distill.json`` (the model's, its ``max_length`` the one this export validated at:
bench and predict read it, so validation, timing and prediction cut rows alike) and ``README.md``, the
variant's model card with its validation figures (distill/model_card.py; the PyTorch model's card is
rewritten too, to name its variants). The run's report of all models goes to
``runs/<RUN>/onnx/validation.json``.

The int8 variant is quantised for ``--int8_target`` (distill/int8.py: portable by default, which
no x86 kernel path can saturate) and carries ``quantization.json``: its target and the CPU facts
(model, int8 flags, kernel path) of the machine that validated it; bench and predict compare
those with the machine they run on.

Atomicity: a model's variants are built in ``onnx/.<model>.staging-*`` beside the target,
validated there, and only a model whose every check passes is renamed to ``onnx/<model>`` (the
previous good export is swapped out and removed only after the rename). A model that fails is
renamed to ``onnx/<model>.failed`` for inspection; a previous good ``onnx/<model>`` is left as it
was. After all models are done, any failure raises ``ExportValidationError`` listing every one.

Dev rows are tokenised as the model was trained (``distill.tokens.encode`` with distill.json's
max length and long_text settings; under long_text=chunks a dev row's logits are the mean of its
chunks'), so every dev figure is per dev row.

Validation, in order, per variant (optimum's exporter style: structure first, then values); each a
named ``VariantCheck`` of ``variant_checks``' list, which ``run_checks`` runs to the end whatever fails
(a check that raises fails with its traceback), every failure then listed in one ExportValidationError:
  onnx_checker       onnx.checker on the file
  ort_session        ONNX Runtime (CPU) loads it
  input_names        ONNX inputs == the tokenizer's model_input_names
  output_names       ONNX outputs == ["logits"]
  dynamic_axes       batch and sequence axes symbolic on every input, batch symbolic on logits
  new_shape          logits shape (check_batch, num_labels) and finite on inputs of a batch and
                     length the exporter never traced (check_batch x check_seq_len)
  dev_max_abs_diff   fp32, o2: max |logit_onnx - logit_torch| over the WHOLE dev split
  dev_agreement      fp32, o2: every dev row whose PyTorch top-1 logit beats its top-2 by more than
                     twice that bound keeps its label (a closer tie may flip at 1e-5; nothing else can)
  dev_decided_agreement  int8: share of the decided dev rows (PyTorch top-1 minus top-2 logit >=
                     int8_decided_margin) whose label matches PyTorch's; flips of near-ties are
                     reported (all-row agreement in the detail), not failed
  dev_logit_error    int8: RMS(centred int8 logits - centred fp32 logits) / RMS(centred fp32
                     logits) <= int8_max_logit_error: a saturating or broken quantisation moves
                     every row, decided or not
  dev_accuracy       int8: |acc_int8 - acc_fp32| <= int8_max_accuracy_delta (fp32: PyTorch's)
  loads_with_optimum ORTModelForSequenceClassification.from_pretrained(dir) + transformers
                     pipeline("text-classification") give the labels ONNX Runtime's argmax gives

Token classifiers (distill.json task ``ner``) are exported with optimum's token-classification task
(logits (batch, sequence, tags)) and validated on the dev sentences, words aligned as the model
was trained (distill/ner.py): dynamic_axes and new_shape expect logits [sym, sym, tags];
dev_max_abs_diff is per token, over the first sub-token of every dev word; the agreements count
dev words whose tag matches PyTorch's; int8's third value check is dev_entity_f1, |entity F1 int8 -
entity F1 PyTorch fp32| <= int8_max_f1_delta (seqeval, micro); loads_with_optimum loads the folder
with ORTModelForTokenClassification and compares its tags with ONNX Runtime's on 2 dev sentences.

CLI:  python -m export.onnx_export --run-dir runs/demo [--models=teacher,student] [--key=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.artifacts import read_model_info, write_model_info
from distill.config import apply_overrides, atomic_write_text
from distill.data import Split, load_dataset
from distill.errors import PipelineError
from distill.int8 import DEFAULT_TARGET, GATE, machine_facts, read_quantization
from distill.int8 import target as int8_target
from distill.layout import FP32, INT8, O2, REFERENCE, ROLES, VALIDATION_FILE, VARIANTS, stage_dir
from distill.layout import onnx_root as run_onnx_root
from distill.lock import stage_lock
from distill.model_card import refresh_cards, write_card
from distill.ner import WordAligned, align_words, ner_scores, predicted_tags, word_logits_from_batches
from distill.ner_data import TokenSplit, load_ner_dataset
from distill.onnx_graph import (  # noqa: F401  (ONNX_FILE, ort_session: the names other stages' tests use here)
    ONNX_FILE,
    export_fp32,
    int8_value_figures,
    optimise_o2,
    ort_session,
    quantise_weights,
)
from distill.tokens import LongText, encode, mean_per_document

DEFAULT_MODELS = ROLES  # exported when present and --models is empty


@dataclass
class ExportConfig:
    """Flat export settings; every field can be overridden as --key=value."""

    # model directories under the run dir to export; empty: each of teacher, student, student_ce that exists
    models: list[str] = field(default_factory=list)
    # ONNX opset; >= 17 is needed for LayerNormalization, optimum recommends 18 for BERT
    opset: int = 18
    # rows per batch when running the dev split through PyTorch and ONNX Runtime (padded per batch)
    batch_size: int = 32
    # truncation length for dev inputs; None: the model's own (distill.json). Recorded in each variant's
    # distill.json and in validation.json: bench and predict read it, so all three run at one length
    max_length: int | None = None
    # threads for ONNX Runtime sessions during validation; 0: ORT's default (all cores)
    threads: int = 0
    # new_shape check: a batch size and sequence length the exporter's dummy inputs (2 x 16) never used
    check_batch: int = 3
    check_seq_len: int = 23
    # fp32 as exported: same kernels up to reassociation, so logits should match PyTorch to ~1e-5
    fp32_max_abs_diff: float = 1e-4
    # fp32: every dev row must get PyTorch's label
    fp32_min_agreement: float = 1.0
    # o2 (fused Attention/SkipLayerNorm/BiasGelu): measured 7.5e-6 on MiniLM-L6, so fp32's 1e-4 holds
    o2_max_abs_diff: float = 1e-4
    # o2: every dev row must get PyTorch's label
    o2_min_agreement: float = 1.0
    # int8: a dev row is "decided" when PyTorch fp32's top-1 logit beats its top-2 by at least this much;
    # int8 may flip near-tied rows (a logit error of ~0.1 is normal), a sound quantisation keeps decided ones
    int8_decided_margin: float = GATE.decided_margin
    # int8: share of decided dev rows whose label matches PyTorch's (all-row agreement is reported, not held)
    int8_min_decided_agreement: float = GATE.min_decided_agreement
    # int8: RMS of (int8 - fp32) centred logits over RMS of fp32's centred logits (softmax ignores a shift);
    # a saturating or broken quantisation moves every row, a sound one a few percent
    int8_max_logit_error: float = GATE.max_logit_error
    # int8: |dev accuracy(int8) - dev accuracy(PyTorch fp32)| allowed, as a fraction (0.01 = 1 point)
    int8_max_accuracy_delta: float = GATE.max_accuracy_delta
    # int8, token classifiers: |dev entity F1(int8) - dev entity F1(PyTorch fp32)| allowed (0.01 = 1 point)
    int8_max_f1_delta: float = 0.01
    # int8: one weight scale per output channel; per-tensor scales flipped ~4% of labels on MiniLM-L6
    int8_per_channel: bool = True
    # int8: how weights are quantised for the CPUs that will serve the model (distill/int8.py):
    # portable (7-bit s8 weights, no saturation on any x86 path) | vnni (8-bit s8, VNNI CPUs only) | u8u8
    int8_target: str = DEFAULT_TARGET
    # int8: ONNX op types to quantise (Gather: the embedding tables; MiniLM-L6 58.9 -> 23.1 MB, same agreement)
    int8_operators: list[str] = field(default_factory=lambda: ["MatMul", "Attention", "Gather"])
    # int8: regex over the fp32 graph's node names to keep in fp32, e.g. "layer\.\d+/output/dense" (the
    # FFN output projections); empty: quantise every node of int8_operators
    int8_exclude: str = ""


class ExportError(RuntimeError, PipelineError):
    """A model directory or input that cannot be exported (missing files, mismatched labels)."""


class ExportValidationError(RuntimeError, PipelineError):
    """Some exported variants failed validation; the message lists every failed check."""

    def __init__(self, failures: list[str], report_path: Path):
        lines = "\n".join(f"  - {f}" for f in failures)
        super().__init__(f"{len(failures)} validation check(s) failed (report: {report_path}):\n{lines}")
        self.failures, self.report_path = failures, report_path


@dataclass
class Check:
    """What one validation check found: the figure it measured, the bound it was held to, whether it
    held. validation.json's "checks" entries are these (export/lm_export.py writes them too)."""

    name: str
    passed: bool
    figure: object  # the measured value (float, list of names, shape ...)
    threshold: object  # the bound, or None when the check is structural
    detail: str = ""  # what was compared, or the error and traceback when the check raised


# ---------------------------------------------------------------------------------------------
# inputs


def label_ids_for_model(model_config, dataset, model_dir: Path) -> np.ndarray:
    """(R,) int64 dev label ids in the model's id space. The model's id2label must name the
    dataset's labels in the same order, or be transformers' defaults LABEL_0.. (then ids are the
    dataset's label order, which is how training encodes them)."""
    names = dataset.label_map.names
    id2label = [model_config.id2label[i] for i in range(model_config.num_labels)]
    if len(id2label) != len(names):
        raise ExportError(
            f"{model_dir}/config.json: {len(id2label)} labels, but the dataset has {len(names)} ({names})"
        )
    if id2label != names and id2label != [f"LABEL_{i}" for i in range(len(names))]:
        raise ExportError(
            f"{model_dir}/config.json: id2label {id2label} does not match the dataset's labels {names}"
        )
    return dataset.label_map.encode(dataset.dev)


def dev_batches(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int, batch_size: int,
                long_text: LongText | None = None):
    """Dev rows tokenised as the model was trained (``distill.tokens.encode`` with its long_text
    settings), grouped into padded batches, shortest first (less padding, same per-row logits).

    Returns (order, batches, groups): order (R,) the row index of each position in the concatenated
    batch outputs; batches: list of dicts name -> (B, L_b) int64 numpy arrays (token_type_ids when
    the tokenizer's model takes them); groups (R,) the dev row of each model row under
    long_text=chunks, else None (``_unsort`` averages a dev row's chunks)."""
    encoded = encode(tokenizer, Split(texts=texts, labels=None, source="dev", text_pairs=pairs), None, max_length,
                     long_text=long_text)
    order = np.argsort(encoded.lengths, kind="stable")
    type_ids = "token_type_ids" in tokenizer.model_input_names
    batches = [encoded.arrays(order[start : start + batch_size], type_ids=type_ids)
               for start in range(0, len(order), batch_size)]
    return order, batches, encoded.groups


@dataclass
class NerDev:
    """The dev sentences of a token classifier, as validation reads them."""

    aligned: WordAligned  # the sentences with the model's tokenizer: first sub-token of each kept word
    split: TokenSplit  # their words and gold IOB2 tags
    tag_names: list[str]  # tag id -> name

    def scores(self, word_logits: np.ndarray) -> dict:
        """Entity F1 (seqeval micro) and token accuracy of word logits (N, C)."""
        m = ner_scores(self.split.tags, predicted_tags(word_logits, self.aligned, self.tag_names))
        return {"entity_f1": m["f1"], "token_accuracy": m["token_accuracy"]}


def ner_dev_batches(tokenizer, split: TokenSplit, tag_names: list[str], max_length: int, batch_size: int):
    """(order, batches, NerDev): the dev sentences aligned as the model was trained, batched
    shortest first (as ``dev_batches``)."""
    aligned = align_words(tokenizer, split, {n: i for i, n in enumerate(tag_names)}, max_length)
    order = np.argsort(aligned.tokens.lengths, kind="stable")
    type_ids = "token_type_ids" in tokenizer.model_input_names
    batches = [aligned.tokens.arrays(order[start : start + batch_size], type_ids=type_ids)
               for start in range(0, len(order), batch_size)]
    return order, batches, NerDev(aligned=aligned, split=split, tag_names=tag_names)


def _collect(outputs: list[np.ndarray], order: np.ndarray, groups: np.ndarray | None, ner: NerDev | None
             ) -> np.ndarray:
    """Per-batch logits -> (D, C) per dev row in file order, or (N, C) per dev word (``ner``)."""
    if ner is not None:
        return word_logits_from_batches(outputs, order, ner.aligned)
    return _unsort(np.concatenate(outputs), order, groups)


def torch_logits(model_dir: Path, batches, order: np.ndarray, groups: np.ndarray | None = None,
                 ner: NerDev | None = None) -> np.ndarray:
    """(D, C) float32 PyTorch eager logits of the fp32 model, one per dev row in file order (ner:
    (N, C), one per dev word)."""
    import torch

    from distill.modeling import auto_model_class

    model = auto_model_class("ner" if ner is not None else "classification").from_pretrained(model_dir).eval()
    with torch.inference_mode():
        out = [model(**{k: torch.from_numpy(v) for k, v in b.items()}).logits.float().numpy() for b in batches]
    return _collect(out, order, groups, ner)


def _unsort(sorted_rows: np.ndarray, order: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """(R, C) logits in batch order -> (D, C) in file order, chunks averaged per dev row."""
    rows = np.empty_like(sorted_rows)
    rows[order] = sorted_rows
    return mean_per_document(rows, groups)


def ort_logits(session, batches, order: np.ndarray, groups: np.ndarray | None = None,
               ner: NerDev | None = None) -> np.ndarray:
    """(D, C) float32 ONNX Runtime logits, one per dev row in file order (ner: (N, C) per dev word)."""
    names = [i.name for i in session.get_inputs()]
    out = [session.run(["logits"], {n: b[n] for n in names})[0] for b in batches]
    return _collect(out, order, groups, ner)


# ---------------------------------------------------------------------------------------------
# building the variants


def quantise_int8(fp32_dir: Path, out_dir: Path, cfg: ExportConfig) -> None:
    """The int8 variant of ``fp32_dir`` for ``cfg.int8_target`` (distill/onnx_graph.quantise_weights),
    optionally keeping the nodes ``cfg.int8_exclude`` matches in fp32."""
    exclude: list[str] = []
    if cfg.int8_exclude:
        import onnx

        graph = onnx.load(str(fp32_dir / ONNX_FILE), load_external_data=False).graph
        exclude = [n.name for n in graph.node if re.search(cfg.int8_exclude, n.name)]
        if not exclude:
            raise ExportError(f"--int8_exclude={cfg.int8_exclude!r} matches no node of {fp32_dir / ONNX_FILE}")
    quantise_weights(fp32_dir, out_dir, target_name=cfg.int8_target, per_channel=cfg.int8_per_channel,
                     operators=list(cfg.int8_operators), exclude=exclude)


# ---------------------------------------------------------------------------------------------
# validation: an ordered list of named checks per variant, run by one loop


@dataclass(frozen=True)
class DevRows:
    """One model's dev split as validation feeds it to every variant, tokenised as the model was trained."""

    source: str  # the dev split's source (a file, or the dataset's dev split)
    size: int  # dev rows (token classifiers: dev sentences)
    texts: list[str]  # the dev texts (ner: each sentence's words joined by spaces); new_shape and
    # loads_with_optimum run the first few
    pairs: list[str] | None  # their second texts for a pair task, else None
    labels: np.ndarray  # (R,) int64 dev label ids in the model's id space (ner: (N,) tag ids, one per dev word)
    batches: list[dict]  # name -> (B, L_b) int64 model inputs, shortest rows first
    order: np.ndarray  # (R_model,) the model row at each position of the concatenated batch outputs
    groups: np.ndarray | None  # (R_model,) the dev row of each model row under long_text=chunks, else None
    ner: NerDev | None  # token classifiers: the dev sentences, words aligned; None for sequence classifiers

    @property
    def unit(self) -> str:
        """What one dev figure counts, as the check details say it."""
        return "words" if self.ner is not None else "rows"


@dataclass(frozen=True)
class ValidationContext:
    """What every variant of one model is checked against: the same for fp32, o2 and int8."""

    cfg: ExportConfig  # the bounds (fp32_max_abs_diff, int8_* ...), check_batch x check_seq_len, threads
    dev: DevRows  # the dev split, batched
    reference: np.ndarray  # (R, C) float32 PyTorch fp32 logits per dev row (ner: (N, C) per dev word)
    input_names: list[str]  # the tokenizer's model_input_names: the inputs every graph must take
    id2label: dict[int, str]  # the model config's label (tag) names
    num_labels: int  # C


@dataclass(frozen=True)
class Measured:
    """What one check found: the figure it measured against its bound, and whether it held."""

    passed: bool
    figure: object  # the measured value (float, list of names, shape ...)
    bound: object  # the bound, the wanted value, or None when the check is structural
    detail: str  # what was compared


@dataclass(frozen=True)
class VariantCheck:
    """One named check of a variant's ordered list; ``measure`` raises when it cannot measure."""

    name: str  # as validation.json and the printed report name it
    measure: Callable[[VariantProbe], Measured]


@dataclass
class VariantProbe:
    """One variant under validation: what its checks read, and what earlier checks found (the ONNX
    Runtime session, the dev logits and figures), which later checks reuse."""

    variant: str  # fp32, o2 or int8
    variant_dir: Path  # the variant's folder: model.onnx, config.json, the tokenizer
    ctx: ValidationContext
    tokenizer: object  # the variant folder's tokenizer
    figures: dict  # this variant's "figures" in validation.json: size_mb, then the dev figures
    loaded: object | None = None  # the onnxruntime.InferenceSession, once ort_session passed
    logits: np.ndarray | None = None  # (R, C) ONNX Runtime dev logits (ner: (N, C)), once a value check ran
    decided_differ: int = 0  # decided dev rows (words) whose label differs from PyTorch's

    @property
    def path(self) -> Path:
        return self.variant_dir / ONNX_FILE

    @property
    def session(self):
        """The ONNX Runtime session; the checks after a failed ort_session fail with this error."""
        if self.loaded is None:
            raise RuntimeError("not run: ONNX Runtime could not load the model (see ort_session)")
        return self.loaded

    @property
    def margin(self) -> float:
        """The PyTorch top-1 minus top-2 logit from which a dev row counts as decided: fp32 and o2 must
        keep every row past twice their |Δlogit| bound (implied by that bound; a closer tie may flip),
        int8 every row past int8_decided_margin."""
        cfg = self.ctx.cfg
        return cfg.int8_decided_margin if self.variant == INT8 else 2 * max_abs_diff_bound(cfg, self.variant)

    def dev_figures(self) -> dict:
        """The dev figures (computed by the first value check that asks): ONNX Runtime over the whole
        dev split against the PyTorch reference."""
        if self.logits is None:
            ctx, dev = self.ctx, self.ctx.dev
            logits = ort_logits(self.session, dev.batches, dev.order, dev.groups, dev.ner)
            values = int8_value_figures(logits, ctx.reference, dev.labels, decided_margin=self.margin)
            self.figures.update({k: values[k] for k in ("max_abs_diff", "agreement", "decided_rows",
                                                        "decided_agreement", "logit_error")})
            if dev.ner is not None:
                self.figures.update(dev.ner.scores(logits))
            else:
                self.figures["accuracy"] = values["accuracy"]
            self.decided_differ = values["decided_differ"]
            self.logits = logits
        return self.figures


def max_abs_diff_bound(cfg: ExportConfig, variant: str) -> float:
    """fp32's or o2's bound on max |logit_onnx - logit_torch| (int8 has none: its values are gated otherwise)."""
    return {FP32: cfg.fp32_max_abs_diff, O2: cfg.o2_max_abs_diff}[variant]


def min_agreement_bound(cfg: ExportConfig, variant: str) -> float:
    """The share of decided dev rows that must keep PyTorch's label."""
    return {FP32: cfg.fp32_min_agreement, O2: cfg.o2_min_agreement, INT8: cfg.int8_min_decided_agreement}[variant]


# the checks, in the module docstring's words; each reads the probe and returns what it measured


def check_onnx_file(probe: VariantProbe) -> Measured:
    import onnx

    onnx.checker.check_model(str(probe.path))
    return Measured(True, "ok", None, str(probe.path))


def load_session(probe: VariantProbe) -> Measured:
    probe.loaded = ort_session(probe.path, probe.ctx.cfg.threads)
    return Measured(True, "loaded", None, f"onnxruntime.InferenceSession({probe.path.name}), CPU")


def check_input_names(probe: VariantProbe) -> Measured:
    found = [i.name for i in probe.session.get_inputs()]
    want = sorted(probe.ctx.input_names)
    return Measured(sorted(found) == want, found, want, "ONNX inputs vs tokenizer")


def check_output_names(probe: VariantProbe) -> Measured:
    found = [o.name for o in probe.session.get_outputs()]
    return Measured(found == ["logits"], found, ["logits"], "ONNX outputs")


def check_dynamic_axes(probe: VariantProbe) -> Measured:
    session, ctx = probe.session, probe.ctx
    shapes = {i.name: list(i.shape) for i in session.get_inputs()}
    shapes.update({o.name: list(o.shape) for o in session.get_outputs()})
    ok = all(len(shapes[n]) == 2 and all(isinstance(d, str) for d in shapes[n]) for n in ctx.input_names)
    logits = shapes.get("logits", [])
    ner = ctx.dev.ner is not None
    rank = 3 if ner else 2  # ner: a tag per token
    ok = ok and len(logits) == rank and all(isinstance(d, str) for d in logits[:-1]) and logits[-1] == ctx.num_labels
    want = "logits [sym, sym, num_labels]" if ner else "logits [sym, num_labels]"
    return Measured(ok, shapes, f"inputs [sym, sym], {want}", "symbolic dims are names")


def check_new_shape(probe: VariantProbe) -> Measured:
    """Real dev text padded/truncated to exactly check_seq_len tokens, check_batch rows."""
    session, ctx, cfg = probe.session, probe.ctx, probe.ctx.cfg
    enc = probe.tokenizer(
        ctx.dev.texts[: cfg.check_batch], None if ctx.dev.pairs is None else ctx.dev.pairs[: cfg.check_batch],
        padding="max_length", truncation=True, max_length=cfg.check_seq_len, return_tensors="np",
    )
    feed = {n: enc[n].astype(np.int64) for n in ctx.input_names}
    logits = session.run(["logits"], feed)[0]
    want = [cfg.check_batch, *([cfg.check_seq_len] if ctx.dev.ner is not None else []), ctx.num_labels]
    ok = list(logits.shape) == want and bool(np.isfinite(logits).all())
    return Measured(ok, list(logits.shape), want, f"inputs {cfg.check_batch}x{cfg.check_seq_len}; finite values")


def check_max_abs_diff(probe: VariantProbe) -> Measured:
    figures, dev = probe.dev_figures(), probe.ctx.dev
    bound = max_abs_diff_bound(probe.ctx.cfg, probe.variant)
    return Measured(figures["max_abs_diff"] <= bound, figures["max_abs_diff"], bound, f"{len(dev.labels)} dev {dev.unit}")


def check_agreement(probe: VariantProbe) -> Measured:
    figures, dev = probe.dev_figures(), probe.ctx.dev
    bound = min_agreement_bound(probe.ctx.cfg, probe.variant)
    n, unit = len(dev.labels), dev.unit
    n_diff = int(round((1 - figures["agreement"]) * n))
    return Measured(figures["decided_agreement"] >= bound, figures["decided_agreement"], bound,
                    f"{probe.decided_differ} of {figures['decided_rows']} decided {unit} differ (fp32 margin >= "
                    f"{probe.margin:g}); all {unit}: {n_diff} of {n} differ, agreement {figures['agreement']:.4f}")


def check_logit_error(probe: VariantProbe) -> Measured:
    figures, dev, bound = probe.dev_figures(), probe.ctx.dev, probe.ctx.cfg.int8_max_logit_error
    return Measured(figures["logit_error"] <= bound, figures["logit_error"], bound,
                    f"RMS of int8 - fp32 centred logits over fp32's, {len(dev.labels)} dev {dev.unit}")


def check_entity_f1(probe: VariantProbe) -> Measured:
    figures, ctx = probe.dev_figures(), probe.ctx
    ref = ctx.dev.ner.scores(ctx.reference)["entity_f1"]
    delta = figures["entity_f1"] - ref
    return Measured(abs(delta) <= ctx.cfg.int8_max_f1_delta + 1e-12, round(delta, 6), ctx.cfg.int8_max_f1_delta,
                    f"int8 entity F1 {figures['entity_f1']:.4f} - fp32 (PyTorch) {ref:.4f}")


def check_accuracy(probe: VariantProbe) -> Measured:
    figures, ctx = probe.dev_figures(), probe.ctx
    ref_acc = float((ctx.reference.argmax(1) == ctx.dev.labels).mean())
    delta = figures["accuracy"] - ref_acc
    return Measured(abs(delta) <= ctx.cfg.int8_max_accuracy_delta + 1e-12, round(delta, 6),
                    ctx.cfg.int8_max_accuracy_delta, f"int8 accuracy {figures['accuracy']:.4f} - fp32 (PyTorch) {ref_acc:.4f}")


def check_loads_token_classifier(probe: VariantProbe) -> Measured:
    from optimum.onnxruntime import ORTModelForTokenClassification

    ctx = probe.ctx
    model = ORTModelForTokenClassification.from_pretrained(probe.variant_dir)
    session = probe.session
    feed = ctx.dev.ner.aligned.tokens.arrays(np.arange(min(2, len(ctx.dev.ner.aligned))), type_ids=True)
    got = model(**{n: feed[n] for n in ctx.input_names}).logits  # (2, L, C)
    direct = session.run(["logits"], {n: feed[n] for n in ctx.input_names})[0]
    mask = feed["attention_mask"].astype(bool)
    got_tags = [ctx.id2label[int(i)] for i in np.asarray(got).argmax(-1)[mask]]
    want = [ctx.id2label[int(i)] for i in direct.argmax(-1)[mask]]
    return Measured(got_tags == want, got_tags[:8], want[:8],
                    "ORTModelForTokenClassification tags vs ONNX Runtime on 2 dev sentences (first 8 tokens shown)")


def check_loads_sequence_classifier(probe: VariantProbe) -> Measured:
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline

    ctx = probe.ctx
    model = ORTModelForSequenceClassification.from_pretrained(probe.variant_dir)
    tok = AutoTokenizer.from_pretrained(probe.variant_dir)
    texts, pairs = ctx.dev.texts[:2], None if ctx.dev.pairs is None else ctx.dev.pairs[:2]
    clf = pipeline("text-classification", model=model, tokenizer=tok)
    if pairs is None:
        got = [r["label"] for r in clf(texts)]
    else:
        got = [clf({"text": t, "text_pair": p})["label"] for t, p in zip(texts, pairs, strict=True)]
    session = probe.session
    enc = tok(texts, pairs if pairs else None, padding=True, return_tensors="np")
    direct = session.run(["logits"], {n: enc[n].astype(np.int64) for n in ctx.input_names})[0]
    want = [ctx.id2label[int(i)] for i in direct.argmax(1)]
    return Measured(got == want, got, want, "pipeline labels vs ONNX Runtime argmax on 2 dev rows")


STRUCTURE_CHECKS = (  # every variant, first: is it a loadable graph with the right inputs and outputs
    VariantCheck("onnx_checker", check_onnx_file),
    VariantCheck("ort_session", load_session),
    VariantCheck("input_names", check_input_names),
    VariantCheck("output_names", check_output_names),
    VariantCheck("dynamic_axes", check_dynamic_axes),
    VariantCheck("new_shape", check_new_shape),
)


def variant_checks(variant: str, *, ner: bool) -> list[VariantCheck]:
    """The ordered checks of one variant (the module docstring's list): structure first, then the
    dev values (fp32 and o2 against tight bounds, int8 through its gate), then optimum's loaders."""
    if variant == INT8:
        values = [VariantCheck("dev_decided_agreement", check_agreement),
                  VariantCheck("dev_logit_error", check_logit_error),
                  VariantCheck("dev_entity_f1", check_entity_f1) if ner else VariantCheck("dev_accuracy", check_accuracy)]
    else:
        values = [VariantCheck("dev_max_abs_diff", check_max_abs_diff), VariantCheck("dev_agreement", check_agreement)]
    loads = VariantCheck("loads_with_optimum", check_loads_token_classifier if ner else check_loads_sequence_classifier)
    return [*STRUCTURE_CHECKS, *values, loads]


def run_checks(checks: Sequence[VariantCheck], probe) -> list[Check]:
    """Every check of ``checks`` in order, each recorded with its figure and bound. One that fails
    does not stop the rest; one that raises is a failed check carrying the traceback (reported and
    failing the export, never dropped)."""
    results: list[Check] = []
    for check in checks:
        try:
            m = check.measure(probe)
        except Exception as err:  # recorded as a failure with its traceback, and raised at the end
            results.append(Check(check.name, False, None, None, f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))
            continue
        results.append(Check(check.name, bool(m.passed), m.figure, m.bound, m.detail))
    return results


def failure_line(model: str, variant: str, check: Check) -> str:
    """A failed check as ExportValidationError lists it: "model/variant check: figure (bound b); detail"."""
    bound = "" if check.threshold is None else f" (bound {_fmt(check.threshold)})"
    first_line = f"; {check.detail.splitlines()[0]}" if check.detail else ""
    return f"{model}/{variant} {check.name}: {_fmt(check.figure)}{bound}{first_line}"


def validate_variant(variant: str, variant_dir: Path, ctx: ValidationContext) -> tuple[list[Check], dict]:
    """The ordered checks of one variant against the PyTorch reference logits and the dev labels
    of ``ctx``. Returns the checks and the figures (size_mb, max_abs_diff, agreement, decided_rows,
    decided_agreement, logit_error, then accuracy; token classifiers: entity_f1, token_accuracy)."""
    from transformers import AutoTokenizer

    path = variant_dir / ONNX_FILE
    probe = VariantProbe(variant=variant, variant_dir=variant_dir, ctx=ctx,
                         tokenizer=AutoTokenizer.from_pretrained(variant_dir),
                         figures={"size_mb": path.stat().st_size / 1e6 if path.exists() else None})
    return run_checks(variant_checks(variant, ner=ctx.dev.ner is not None), probe), probe.figures


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


def print_report(model: str, variant: str, checks: list[Check], out=sys.stdout) -> None:
    for c in checks:
        status = "ok  " if c.passed else "FAIL"
        bound = "" if c.threshold is None else f" (bound {_fmt(c.threshold)})"
        note = f"; {c.detail}" if c.passed and c.name.startswith("dev_") else ""
        print(f"  [{status}] {model}/{variant} {c.name}: {_fmt(c.figure)}{bound}{note}", file=out)
        if not c.passed and c.detail:
            print("         " + c.detail.rstrip().replace("\n", "\n         "), file=out)


# ---------------------------------------------------------------------------------------------
# one model: read its dev rows, build the variants, validate them, install or keep aside


def export_model(model: str, model_dir: Path, onnx_root: Path, cfg: ExportConfig) -> tuple[dict, list[str]]:
    """Build, validate and install one model's three variants. Returns this model's report and
    its failures ("model/variant check: figure vs bound"); installs only when there are none."""
    from transformers import AutoConfig, AutoTokenizer

    info = read_model_info(model_dir)
    max_length = cfg.max_length or info.max_length
    if max_length != info.max_length:
        print(f"{model}: --max_length={max_length}, trained at {info.max_length}: validated at {max_length}, the length "
              "each variant's distill.json records for bench and predict")
    model_config = AutoConfig.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dev = read_dev_rows(model_dir, info, model_config, tokenizer, max_length=max_length, batch_size=cfg.batch_size)
    t0 = time.perf_counter()
    reference = torch_logits(model_dir, dev.batches, dev.order, dev.groups, dev.ner)
    ctx = ValidationContext(cfg=cfg, dev=dev, reference=reference, input_names=list(tokenizer.model_input_names),
                            id2label=model_config.id2label, num_labels=model_config.num_labels)
    report = model_report(model, model_dir, info, ctx, max_length=max_length,
                          pytorch_s=round(time.perf_counter() - t0, 2))

    staging = make_staging(onnx_root, model)
    try:
        build_variants(staging, model_dir, cfg, dataclasses.replace(info, max_length=max_length),
                       timings=report["timings_s"])
        failures = validate_variants(model, staging, ctx, report)
        report["passed"] = not failures
        report["failures"] = failures
    except BaseException:
        # an exception while building: nothing half-built may look like an export; keep it as .failed
        _move_aside(staging, onnx_root / f"{model}.failed")
        raise
    install_or_keep_aside(model, model_dir, onnx_root, staging, report)
    return report, failures


def read_dev_rows(model_dir: Path, info, model_config, tokenizer, *, max_length: int, batch_size: int) -> DevRows:
    """The model's dev split tokenised as it was trained, its labels in the model's id space: dev
    rows (sequence classifiers) or dev sentences with one tag per word (``info.task`` ner)."""
    if info.task == "ner":  # a tag per word: the dev sentences, words aligned to the model's sub-tokens
        dataset = load_ner_dataset(info.data)
        names = [model_config.id2label[i] for i in range(model_config.num_labels)]
        if names != dataset.tag_map.names:
            raise ExportError(f"{model_dir}/config.json: id2label {names} does not match the dataset's tags "
                              f"{dataset.tag_map.names}")
        order, batches, ner = ner_dev_batches(tokenizer, dataset.dev, names, max_length, batch_size)
        return DevRows(source=dataset.dev.source, size=len(dataset.dev),
                       texts=[" ".join(words) for words in dataset.dev.sentences], pairs=None,
                       labels=ner.aligned.word_labels, batches=batches, order=order, groups=None, ner=ner)
    dataset = load_dataset(info.data)
    labels = label_ids_for_model(model_config, dataset, model_dir)
    texts, pairs = dataset.dev.texts, dataset.dev.text_pairs
    order, batches, groups = dev_batches(tokenizer, texts, pairs, max_length, batch_size, info.long_text)
    return DevRows(source=dataset.dev.source, size=len(dataset.dev), texts=texts, pairs=pairs, labels=labels,
                   batches=batches, order=order, groups=groups, ner=None)


def model_report(model: str, model_dir: Path, info, ctx: ValidationContext, *, max_length: int,
                 pytorch_s: float) -> dict:
    """The head of the model's validation.json (what was validated, on what, and PyTorch's dev figures),
    printed as one line; the variants' entries, passed and failures and the location follow."""
    dev, reference = ctx.dev, ctx.reference
    report: dict = {
        "model_dir": str(model_dir), "dev_source": dev.source, "dev_rows": dev.size,
        "max_length": max_length, "trained_max_length": info.max_length,
        "long_text": info.long_text.to_dict(), "dev_model_rows": len(dev.order),
        "num_labels": ctx.num_labels, "task": info.task,
        REFERENCE: dev.ner.scores(reference) if dev.ner is not None else
        {"accuracy": float((reference.argmax(1) == dev.labels).mean())},
        "variants": {}, "timings_s": {"pytorch_dev": pytorch_s},
    }
    if dev.ner is not None:
        report.update(dev_words=len(dev.labels), alignment=dev.ner.aligned.summary())
        print(f"{model}: {model_dir} -> dev {dev.source} ({dev.size} sentences, {len(dev.labels)} "
              f"words), PyTorch fp32 entity F1 {report[REFERENCE]['entity_f1']:.4f}")
    else:
        print(f"{model}: {model_dir} -> dev {dev.source} ({len(dev.labels)} rows), "
              f"PyTorch fp32 accuracy {report[REFERENCE]['accuracy']:.4f}")
    return report


def make_staging(onnx_root: Path, model: str) -> Path:
    """A fresh ``onnx/.<model>.staging-*`` folder beside the target, with the ordinary permissions."""
    onnx_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model}.staging-", dir=onnx_root))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it 0700; the installed export is an ordinary folder
    return staging


def build_variants(staging: Path, model_dir: Path, cfg: ExportConfig, variant_info, *, timings: dict) -> None:
    """fp32 (optimum's exporter), o2 and int8 (both from the fp32 graph) in ``staging/<variant>``, each
    with ``variant_info`` as its distill.json; the seconds each took go to ``timings``."""
    task = "token-classification" if variant_info.task == "ner" else "text-classification"
    for variant in VARIANTS:
        t0 = time.perf_counter()
        if variant == FP32:
            export_fp32(model_dir, staging / FP32, cfg.opset, task)
        elif variant == O2:
            optimise_o2(staging / FP32, staging / O2)
        else:
            quantise_int8(staging / FP32, staging / INT8, cfg)
        # labels, the max length validated at (this export's), long_text: what bench and predict read
        write_model_info(staging / variant, variant_info)
        timings[f"build_{variant}"] = round(time.perf_counter() - t0, 2)


def validate_variants(model: str, staging: Path, ctx: ValidationContext, report: dict) -> list[str]:
    """Every variant's checks, printed and entered in ``report["variants"]`` (with int8's
    quantization.json); returns the failures of all of them, one line each."""
    failures: list[str] = []
    for variant in VARIANTS:
        t0 = time.perf_counter()
        checks, figures = validate_variant(variant, staging / variant, ctx)
        report["timings_s"][f"validate_{variant}"] = round(time.perf_counter() - t0, 2)
        print_report(model, variant, checks)
        report["variants"][variant] = {
            "figures": figures, "checks": [dataclasses.asdict(c) for c in checks],
            **({"quantization": read_quantization(staging / variant)} if variant == INT8 else {}),
        }
        failures += [failure_line(model, variant, c) for c in checks if not c.passed]
    return failures


def install_or_keep_aside(model: str, model_dir: Path, onnx_root: Path, staging: Path, report: dict) -> None:
    """Write validation.json and the variants' cards into ``staging``, then install it as ``onnx/<model>``
    when ``report`` passed (and refresh the PyTorch model's card), else keep it as ``onnx/<model>.failed``."""
    target = onnx_root / model
    failed = onnx_root / f"{model}.failed"
    report["location"] = str(target if report["passed"] else failed)
    report["installed"] = report["passed"]
    atomic_write_text(staging / VALIDATION_FILE, json.dumps(report, indent=2, default=str) + "\n")
    _write_variant_cards(staging)
    if not report["passed"]:
        _move_aside(staging, failed)
        kept = f"; the previous good export at {target} is untouched" if target.exists() else ""
        print(f"{model}: FAILED validation, kept at {failed}{kept}")
        return
    _install(staging, target)
    if failed.exists():
        shutil.rmtree(failed)  # superseded by this good export
    print(f"{model}: all checks passed, installed at {target}")
    for note in refresh_cards(model_dir, variants=False):  # the PyTorch model's card now names its variants
        print(note)


def _write_variant_cards(staging: Path) -> None:
    """README.md in each variant folder of ``staging`` (distill/model_card.py: from its distill.json and
    the validation.json just written), so each card is installed, or kept aside, with its model."""
    for variant in VARIANTS:
        if (staging / variant / ONNX_FILE).is_file():
            write_card(staging / variant)


def _move_aside(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(src, dst)


def _install(staging: Path, target: Path) -> None:
    """Rename staging into target; a previous target is swapped out first and removed after."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / "export")
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old)


# ---------------------------------------------------------------------------------------------
# entry point


MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a folder name: no separator, not . or .., no leading dot


def check_model_names(names: list[str]) -> None:
    """Each of ``--models`` must be a name, not a path: export builds ``onnx/<name>`` and
    ``onnx/<name>.failed`` from it and replaces or removes them, so ``../x`` or ``/abs`` would reach
    folders outside the run. Raises ``ExportError`` before anything is built or removed."""
    for name in names:
        if not MODEL_NAME.fullmatch(name):
            raise ExportError(f"--models={','.join(names)}: {name!r} is not a model name: give the name of a folder "
                              "directly under the run directory (e.g. teacher, student), not a path")


def resolve_models(run_dir: Path, names: list[str]) -> list[str]:
    """Model directory names to export: those asked for (each a name, not a path, and each must
    exist), or every default one present."""
    if names:
        check_model_names(names)
        missing = [n for n in names if not (stage_dir(run_dir, n) / "config.json").is_file()]
        if missing:
            raise ExportError(
                "no model directory (with config.json) for " + ", ".join(f"{m!r} at {run_dir / m}" for m in missing)
            )
        return list(names)
    found = [n for n in DEFAULT_MODELS if (stage_dir(run_dir, n) / "config.json").is_file()]
    if not found:
        raise ExportError(f"{run_dir}: none of {', '.join(DEFAULT_MODELS)} holds a model (config.json)")
    return found


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import optimum.version
    import torch
    import transformers

    return {
        "torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__, "optimum": optimum.version.__version__,
    }


def run_export(run_dir: Path, cfg: ExportConfig) -> dict:
    """Export, validate and install every model; write ``onnx/validation.json``; raise
    ``ExportValidationError`` listing all failures if any check failed."""
    onnx_root = run_onnx_root(run_dir)
    int8_target(cfg.int8_target)  # an unknown target is refused before anything is built
    models = resolve_models(run_dir, cfg.models)
    report: dict = {
        "run_dir": str(run_dir), "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "versions": versions(), "machine": machine_facts(), "config": dataclasses.asdict(cfg), "models": {},
    }
    failures: list[str] = []
    with stage_lock(onnx_root):  # one export per run: two would swap the same folders in and out
        for model in models:
            model_report, model_failures = export_model(model, stage_dir(run_dir, model), onnx_root, cfg)
            report["models"][model] = model_report
            failures += model_failures
        report["passed"] = not failures
        report["failures"] = failures
        report_path = onnx_root / VALIDATION_FILE
        atomic_write_text(report_path, json.dumps(report, indent=2, default=str) + "\n")
    print(f"report: {report_path}")
    if failures:
        raise ExportValidationError(failures, report_path)
    return report


def main(argv: list[str]) -> int:
    """CLI: --run-dir DIR plus --key=value overrides of ExportConfig. Returns 0; a failed
    validation raises ExportValidationError (non-zero exit from the command line)."""
    parser = argparse.ArgumentParser(prog="python -m export.onnx_export", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--run-dir", required=True, type=Path, help="runs/<RUN> holding teacher/, student/ ...")
    args, overrides = parser.parse_known_args(argv)
    cfg = apply_overrides(ExportConfig(), overrides)
    run_export(args.run_dir, cfg)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main(sys.argv[1:]))

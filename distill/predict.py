"""Label text with a trained model: an ONNX variant folder or a PyTorch model directory.

    python -m distill predict --model runs/demo/onnx/student/int8 --input reviews.txt
    python -m distill predict --model runs/demo/student --input reviews.tsv --text_column=sentence --output labels.jsonl
    echo "a gripping , beautifully acted film ." | python -m distill predict --model runs/demo/onnx/student/int8
    make predict RUN=runs/demo INPUT=reviews.txt [MODEL=student] [VARIANT=int8|o2|fp32]

``--model`` is either what ``make export`` writes, ``<run>/onnx/<model>/<fp32|o2|int8>/`` (model.onnx,
config.json, tokenizer, distill.json; run with ONNX Runtime on CPU), or what ``make teacher`` /
``make distill`` write, ``<run>/teacher`` or ``<run>/student`` (HF save_pretrained + distill.json;
run with PyTorch eager; safetensors weights only: a folder whose weights are only a pickled
``pytorch_model.bin`` is refused, since unpickling can run code). The labels, the max length and how longer texts are cut (``long_text``:
truncate, head_tail, or chunks whose logits are averaged) come from the folder's ``distill.json``: a
variant's records the length export validated it at (its ``--max_length``), a PyTorch folder's the one it
was trained at. ``--max_length`` overrides it, and says so in one line on stderr when it differs.

Input (``--input``, default ``-``: stdin): a ``.txt`` file (one example per line, empty lines
skipped), a TSV / CSV / JSONL table (the column ``--text_column``, else the model's training text
column, else ``text``, else ``sentence``), a folder of ``.txt`` files (one example per file), each
file possibly gzipped. Stdin is read as plain lines unless ``--format`` says tsv, csv or jsonl.

Output (``--output``, default ``-``: stdout; a file is written atomically): JSONL, one object per
input row, in input order::

    {"line": 3, "text": "...", "label": "1", "probability": 0.93, "probabilities": {"0": 0.07, "1": 0.93}}

(``line``: the row's line in the input, absent for a folder of files). Rows are run in batches of
similar length (less padding); the order of the output is the order of the input.

A token classifier (distill.json task ``ner``) reads each row as a whitespace-tokenised sentence and
writes its words, their tags, and the entities (IOB2 spans, read as seqeval reads them) with their
word span (``start``, ``end`` exclusive), character span in the row's text, and ``score``: the mean,
over the entity's words, of the probability of the word's tag::

    {"line": 1, "text": "Alice flew to New York", "tokens": [...], "tags": ["B-per", "O", "O", "B-loc", "I-loc"],
     "entities": [{"text": "New York", "type": "loc", "start": 3, "end": 5, "char_start": 14, "char_end": 22,
                   "score": 0.91}, ...]}

Words past the model's max length get ``O`` (``words_cut`` says how many, when any were).

Options other than --model / --input / --output are fields of ``PredictConfig``, given as
``--key=value`` or ``--key value``. Bad input prints ``error: <file>, line <n>: <problem>`` and
exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.artifacts import MAKES, ModelInfo, read_model_info
from distill.config import apply_overrides, atomic_write_text
from distill.data import TEXT_SUFFIXES, BadRow, DataError, Split, base_suffix, read_texts
from distill.errors import PipelineError
from distill.int8 import machine_facts, mismatch_warning, read_quantization
from distill.layout import (  # an export variant folder holds ONNX_FILE (export/onnx_export.py)
    ONNX_FILE,
    VARIANTS,
)
from distill.tokens import encode

STDIO = "-"  # --input / --output: stdin / stdout
STDIN_NAME = "<stdin>"  # how errors name stdin
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")  # the only weights predict loads
# pickled weights: unpickling runs whatever code the file holds, so predict refuses a folder that has only these
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
DEFAULT_TEXT_COLUMNS = ("text", "sentence")  # tried after the model's own training text column
FORMATS = ("auto", "txt", "tsv", "csv", "jsonl")


@dataclass
class PredictConfig:
    """Flat predict settings; every field can be overridden as --key=value."""

    # column of a TSV / CSV / JSONL input; None: the model's training text column, else text, else sentence
    text_column: str | None = None
    # rows per forward pass (rows of similar length are batched together, padded to the batch's longest)
    batch_size: int = 32
    # intra-op threads for ONNX Runtime, or torch.set_num_threads for PyTorch; 0: the runtime's default
    threads: int = 0
    # input format: auto (a file: its suffix; stdin: txt) | txt (one example per line) | tsv | csv | jsonl
    format: str = "auto"
    # encoding of the input: utf-8, any Python codec, or auto (UTF-8, else cp1252, else latin-1)
    encoding: str = "utf-8"
    # tokens per row; None: the folder's distill.json (an export variant: the length export validated it at;
    # a PyTorch folder: the length it was trained at); a different one is named on stderr
    max_length: int | None = None


class PredictError(ValueError, PipelineError):
    """A --model that is neither layout, an option that does not fit the input, or a model that
    does not match its distill.json. The message names the file and the problem."""


@dataclass
class Model:
    """A loaded classifier: ``run`` maps a feed (name -> (B, L) int64) to logits (B, C) float32
    (a token classifier's: (B, L, C))."""

    directory: Path
    runtime: str  # onnxruntime | pytorch
    info: ModelInfo
    tokenizer: object  # the folder's transformers tokenizer
    input_names: list[str]  # what ``run`` takes from the tokenizer's output
    run: object  # callable: dict[str, (B, L) int64 ndarray] -> (B, C) float32 ndarray ((B, L, C): task ner)


# ---------------------------------------------------------------------------------------------
# the model


def model_runtime(directory: Path) -> str:
    """``onnxruntime`` for an export variant folder (model.onnx), ``pytorch`` for a teacher/student
    directory (config.json and weights); anything else is a PredictError saying what was expected."""
    directory = Path(directory)
    if (directory / ONNX_FILE).is_file():
        return "onnxruntime"
    if (directory / "config.json").is_file() and any((directory / w).is_file() for w in WEIGHT_FILES):
        return "pytorch"
    pickled = [w for w in PICKLE_FILES if (directory / w).is_file()]
    if (directory / "config.json").is_file() and pickled:
        raise PredictError(f"{directory / pickled[0]}: predict loads safetensors weights only (model.safetensors; "
                           "a .bin file is a pickle, which can run code when loaded); re-save the model with "
                           "save_pretrained(safe_serialization=True)")
    if directory.is_file():
        raise PredictError(f"{directory}: a file; --model takes the model's folder ({directory.parent})")
    if not directory.is_dir():
        raise PredictError(f"{directory}: no such model directory")
    variants = [v for v in VARIANTS if (directory / v / ONNX_FILE).is_file()]
    if variants:
        raise PredictError(f"{directory}: holds export variants, not a model; pick one: "
                           + ", ".join(str(directory / v) for v in variants))
    raise PredictError(
        f"{directory}: not a model folder: expected an ONNX variant folder with {ONNX_FILE} "
        f"(<run>/onnx/<model>/<{'|'.join(VARIANTS)}>, from `make export`) or a PyTorch model directory "
        f"with config.json and model.safetensors (<run>/teacher or <run>/student, from `make teacher` / `make distill`)"
    )


def model_info(directory: Path) -> tuple[str, ModelInfo]:
    """(runtime, distill.json) of a model folder, without loading the model."""
    directory = Path(directory)
    runtime = model_runtime(directory)
    info = read_model_info(directory, hint="make export" if runtime == "onnxruntime" else MAKES.get(directory.name))
    if getattr(info.data, "text_pair_column", None):  # a NerSpec has none
        raise PredictError(f"{directory / 'distill.json'}: this model classifies sentence pairs "
                           f"({info.data.text_column}, {info.data.text_pair_column}); predict takes single texts")
    if not (directory / "tokenizer_config.json").is_file():
        raise PredictError(f"{directory / 'tokenizer_config.json'}: missing: the model folder has no tokenizer")
    return runtime, info


def load_model(directory: Path, threads: int = 0) -> Model:
    """The folder's classifier on CPU: ONNX Runtime (CPUExecutionProvider, ``threads`` intra-op
    threads, 0: its default) for a variant folder, PyTorch eager for a model directory."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    runtime, info = model_info(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(directory / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        mismatch = mismatch_warning(read_quantization(directory), machine_facts())
        if mismatch:  # an int8 model validated on another kernel path (distill/int8.py): say so, on stderr
            print(f"predict: warning: {mismatch}", file=sys.stderr)
        names = [i.name for i in session.get_inputs()]
        missing = [n for n in names if n not in tokenizer.model_input_names]
        if missing:
            raise PredictError(f"{directory / ONNX_FILE}: inputs {missing} are not produced by the folder's "
                               f"tokenizer ({', '.join(tokenizer.model_input_names)})")

        def run_ort(feed: dict[str, np.ndarray]) -> np.ndarray:
            return session.run(["logits"], {n: feed[n] for n in names})[0]  # (B, C)

        return Model(directory, runtime, info, tokenizer, names, run_ort)

    import torch

    from distill.modeling import auto_model_class

    if threads > 0:
        torch.set_num_threads(threads)
    model = auto_model_class(info.task).from_pretrained(directory, use_safetensors=True).eval()  # never a pickle
    names = list(tokenizer.model_input_names)

    def run_torch(feed: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return model(**{n: torch.from_numpy(feed[n]) for n in names}).logits.float().numpy()  # (B, C)

    return Model(directory, runtime, info, tokenizer, names, run_torch)


def predict_logits(model: Model, texts: list[str], batch_size: int) -> np.ndarray:
    """(R, C) float32 logits of ``texts`` (R,), in input order. Each text is tokenised as the model
    was trained (``distill.tokens.encode`` at its max_length, with its long_text settings; under
    chunks a text's logits are the mean of its chunks'). Model rows are sorted by token length and
    batched (each batch padded to its longest row)."""
    if batch_size < 1:
        raise PredictError(f"--batch_size={batch_size}: expected at least 1")
    encoded = encode(model.tokenizer, Split(texts=texts, labels=None, source="input"), None, model.info.max_length,
                     long_text=model.info.long_text)
    order = np.argsort(encoded.lengths, kind="stable")  # (R_rows,) model row at each sorted position
    type_ids = "token_type_ids" in model.input_names
    out = []
    for start in range(0, len(order), batch_size):
        feed = encoded.arrays(order[start : start + batch_size], type_ids=type_ids)
        out.append(model.run({n: feed[n] for n in model.input_names}))  # (B, C)
    logits = np.concatenate(out).astype(np.float32)  # (R_rows, C), sorted order
    if logits.shape[1] != len(model.info.labels):
        raise PredictError(f"{model.directory / 'distill.json'}: {len(model.info.labels)} labels "
                           f"({', '.join(model.info.labels)}), but the model outputs {logits.shape[1]} logits")
    unsorted = np.empty_like(logits)
    unsorted[order] = logits
    return encoded.document_logits(unsorted)


def predict_entities(model: Model, split: Split, batch_size: int) -> str:
    """JSONL text for a token classifier: each row of ``split`` split on whitespace into words, the
    words aligned to the model's sub-tokens as in training (distill/ner.py), one object per row
    (see the module docstring)."""
    import re

    from seqeval.metrics.sequence_labeling import get_entities

    from distill.ner import align_words, predicted_tags, word_logits_from_batches
    from distill.ner_data import TokenSplit

    if batch_size < 1:
        raise PredictError(f"--batch_size={batch_size}: expected at least 1")
    spans = [[(m.start(), m.end()) for m in re.finditer(r"\S+", text)] for text in split.texts]  # (S, T_s)
    sentences = [[text[a:b] for a, b in words] for text, words in zip(split.texts, spans, strict=True)]
    aligned = align_words(model.tokenizer, TokenSplit(sentences=sentences, tags=None, source=split.source), None,
                          model.info.max_length)
    order = np.argsort(aligned.tokens.lengths, kind="stable")
    type_ids = "token_type_ids" in model.input_names
    outputs = []
    for start in range(0, len(order), batch_size):
        feed = aligned.tokens.arrays(order[start : start + batch_size], type_ids=type_ids)
        outputs.append(model.run({n: feed[n] for n in model.input_names}))  # (B, L, C)
    if outputs and outputs[0].shape[-1] != len(model.info.labels):
        raise PredictError(f"{model.directory / 'distill.json'}: {len(model.info.labels)} tags, but the model "
                           f"outputs {outputs[0].shape[-1]} logits per token")
    logits = word_logits_from_batches(outputs, order, aligned)  # (N, C) per kept word
    chosen = softmax(logits).max(axis=1) if len(logits) else np.zeros(0)  # (N,) probability of each word's tag
    tags = predicted_tags(logits, aligned, model.info.labels)  # (S, T_s), cut words O
    lines = []
    for s, text in enumerate(split.texts):
        first = int(aligned.word_offsets[s])
        entities = []
        for kind, a, b in get_entities(tags[s]):  # b inclusive
            probs = [float(chosen[first + j]) for j in range(a, b + 1) if j < aligned.kept[s]]
            c0, c1 = spans[s][a][0], spans[s][b][1]
            entities.append({"text": text[c0:c1], "type": kind, "start": a, "end": b + 1, "char_start": c0,
                             "char_end": c1, "score": float(np.mean(probs)) if probs else 0.0})
        row: dict = {"line": split.line_numbers[s]} if split.line_numbers else {}
        row.update({"text": text, "tokens": sentences[s], "tags": tags[s], "entities": entities})
        if aligned.words[s] > aligned.kept[s]:
            row["words_cut"] = int(aligned.words[s] - aligned.kept[s])
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    return "".join(lines)


def softmax(logits: np.ndarray) -> np.ndarray:
    """(R, C) float64 probabilities of (R, C) logits (computed in float64)."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# input and output


def input_format(source: str, fmt: str) -> str:
    """The suffix (``.txt``, ``.tsv`` ...) the input is read as; a file's own suffix decides, and a
    --format that contradicts it is an error."""
    if fmt not in FORMATS:
        raise PredictError(f"--format={fmt}: expected one of {', '.join(FORMATS)}")
    if source == STDIO:
        return ".txt" if fmt == "auto" else f".{fmt}"
    path = Path(source)
    if fmt != "auto" and not path.is_dir() and base_suffix(path) != f".{fmt}":
        raise PredictError(f"{path}: --format={fmt}, but the file name says {base_suffix(path) or 'no format'} "
                           f"(a file is read by its suffix: {', '.join(TEXT_SUFFIXES)}, optionally .gz)")
    return base_suffix(path)


def read_input(source: str, *, text_column: str | None, default_columns: tuple[str, ...], fmt: str = "auto",
               encoding: str = "utf-8") -> tuple[Split, dict[str, int]]:
    """The rows to label, (R,) texts with their line numbers, from a file, a folder or stdin
    (``-``), read by ``distill.data.read_texts``; also the counts of what was skipped ({"empty": n}).
    Errors in stdin name ``<stdin>`` and the line."""
    suffix = input_format(source, fmt)
    if source != STDIO:
        return read_texts(source, text_column=text_column, default_columns=default_columns, encoding=encoding)
    if sys.stdin.isatty():
        print("predict: reading text from stdin (end with Ctrl-D)", file=sys.stderr)
    raw = sys.stdin.buffer.read()
    with tempfile.TemporaryDirectory(prefix="distill-predict-") as tmp:
        path = Path(tmp) / f"stdin{suffix}"
        path.write_bytes(raw)
        try:
            split, counts = read_texts(path, text_column=text_column, default_columns=default_columns,
                                       encoding=encoding)
        except DataError as err:  # the same error, naming stdin instead of the temporary file
            rows = [BadRow(STDIN_NAME if r.path == str(path) else r.path, r.line, r.reason) for r in err.rows]
            raise DataError(STDIN_NAME, err.problem, err.line, rows=rows) from err
    split.source = STDIN_NAME
    return split, counts


def output_lines(split: Split, probabilities: np.ndarray, labels: list[str]) -> str:
    """JSONL text: one object per row of ``split`` (R,), from ``probabilities`` (R, C), in row order."""
    chosen = probabilities.argmax(axis=1)  # (R,)
    lines = []
    for i, text in enumerate(split.texts):
        row: dict = {"line": split.line_numbers[i]} if split.line_numbers else {}
        row.update({
            "text": text,
            "label": labels[int(chosen[i])],
            "probability": float(probabilities[i, chosen[i]]),
            "probabilities": {label: float(p) for label, p in zip(labels, probabilities[i], strict=True)},
        })
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    return "".join(lines)


def write_output(target: str, text: str) -> None:
    """``text`` to stdout (``-``, as UTF-8) or to a file, atomically."""
    if target == STDIO:
        sys.stdout.flush()
        sys.stdout.buffer.write(text.encode("utf-8"))
        sys.stdout.buffer.flush()
        return
    if Path(target).is_dir():
        raise PredictError(f"{target}: --output is a directory; give a file name (or - for stdout)")
    atomic_write_text(target, text)


# ---------------------------------------------------------------------------------------------
# entry point


def predict(model_dir: Path, source: str, target: str, cfg: PredictConfig) -> int:
    """Label every row of ``source`` with the model in ``model_dir`` and write the JSONL to
    ``target``. Returns the number of rows. The input is read before the model is loaded, so a
    bad file fails fast."""
    if cfg.batch_size < 1 or cfg.threads < 0:
        raise PredictError(f"--batch_size={cfg.batch_size}, --threads={cfg.threads}: expected batch_size >= 1 "
                           "and threads >= 0 (0: the runtime's default)")
    _, info = model_info(model_dir)
    default_columns = tuple(dict.fromkeys((getattr(info.data, "text_column", "text"), *DEFAULT_TEXT_COLUMNS)))
    split, counts = read_input(source, text_column=cfg.text_column, default_columns=default_columns,
                               fmt=cfg.format, encoding=cfg.encoding)
    model = load_model(model_dir, cfg.threads)
    model.info = dataclasses.replace(model.info, max_length=resolve_max_length(model_dir, model.info, cfg.max_length))
    if info.task == "ner":  # a tag per word: entities
        write_output(target, predict_entities(model, split, cfg.batch_size))
    else:
        probabilities = softmax(predict_logits(model, split.texts, cfg.batch_size))  # (R, C)
        write_output(target, output_lines(split, probabilities, info.labels))
    skipped = f", {counts['empty']} empty skipped" if counts.get("empty") else ""
    print(f"predict: {len(split)} rows from {split.source}{skipped}, {model.runtime} {model_dir} -> "
          f"{'stdout' if target == STDIO else target}", file=sys.stderr)
    return len(split)


def resolve_max_length(model_dir: Path, info: ModelInfo, given: int | None) -> int:
    """The tokens per row: ``given`` (--max_length) when set, else the length ``info`` (the folder's
    distill.json) records; a given length that differs from it is named in one line on stderr."""
    if given is not None and given < 1:
        raise PredictError(f"--max_length={given}: expected at least 1 token")
    if given is None or given == info.max_length:
        return info.max_length
    print(f"predict: --max_length={given} differs from the {info.max_length} tokens {Path(model_dir) / 'distill.json'} "
          "records (the length its figures were measured at); reading rows at "
          f"{given}", file=sys.stderr)
    return given


def _joined(args: list[str]) -> list[str]:
    """``--key value`` pairs as ``--key=value`` (the form apply_overrides takes)."""
    out, i = [], 0
    while i < len(args):
        item = args[i]
        if item.startswith("--") and "=" not in item and i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append(f"{item}={args[i + 1]}")
            i += 2
        else:
            out.append(item)
            i += 1
    return out


def main(argv: list[str]) -> int:
    """CLI: --model DIR [--input FILE|-] [--output FILE|-] plus PredictConfig fields as --key=value."""
    parser = argparse.ArgumentParser(prog="python -m distill predict", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--model", required=True, type=Path,
                        help="<run>/onnx/<model>/<fp32|o2|int8> (ONNX) or <run>/teacher, <run>/student (PyTorch)")
    parser.add_argument("--input", default=STDIO, help=".txt/.tsv/.csv/.jsonl[.gz] file, folder of .txt, or - (stdin)")
    parser.add_argument("--output", default=STDIO, help="JSONL file (written atomically) or - (stdout)")
    args, overrides = parser.parse_known_args(argv)
    cfg = apply_overrides(PredictConfig(), _joined(overrides))
    predict(args.model, args.input, args.output, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


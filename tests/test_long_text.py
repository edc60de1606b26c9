"""Long texts (distill/tokens.py LongText): head_tail keeps head + tail with the special tokens in
place, chunks cover every token and map rows to documents, predict_logits averages a document's
chunks, the token store keeps the groups; the stages' data lines (truncation share, dev leakage,
dedupe) are printed and recorded in metrics.json; predict and export read the model's settings."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from distill.artifacts import ModelInfo, read_model_info, write_model_info
from distill.config import ConfigError
from distill.data import DataSpec, Split, load_dataset
from distill.tokens import LongText, concat, encode, mean_per_document
from distill.trainer import predict_logits

LONG = " ".join(f"word{i} and more text number {i}" for i in range(30))  # ~ 250 tokens
TEXTS = ["a short one", LONG, "x", LONG.upper()[:200], ""]


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


def split_of(texts, pairs=None) -> Split:
    return Split(texts=list(texts), labels=None, source="mem", text_pairs=pairs)


def content(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


@pytest.mark.parametrize("mode", ["head_tail", "chunks"])
def test_short_texts_equal_the_tokenizers_own_output(tokenizer, mode):
    short = ["a short one", "the fourth row here", "x", ""]
    enc = encode(tokenizer, split_of(short), np.arange(4), 32, long_text=LongText(mode))
    assert [enc.row(i).tolist() for i in range(len(enc))] == tokenizer(short)["input_ids"]
    assert (enc.groups is None) == (mode == "head_tail")


@pytest.mark.parametrize("head_tokens", [None, 0, 5, 14])
def test_head_tail_keeps_exactly_head_and_tail(tokenizer, head_tokens):
    max_length, budget = 16, 14  # [CLS] + 14 text tokens + [SEP]
    enc = encode(tokenizer, split_of([LONG]), np.zeros(1), max_length, long_text=LongText("head_tail", head_tokens))
    tokens = content(tokenizer, LONG)
    head = budget // 4 if head_tokens is None else head_tokens
    want = tokenizer.build_inputs_with_special_tokens(tokens[:head] + tokens[len(tokens) - (budget - head):])
    assert enc.row(0).tolist() == want and len(want) == max_length
    assert want[0] == tokenizer.cls_token_id and want[-1] == tokenizer.sep_token_id
    assert enc.source_lengths.tolist() == [len(tokens) + 2]


@pytest.mark.parametrize("overlap", [0, 3])
def test_chunks_cover_every_token_and_map_rows_to_documents(tokenizer, overlap):
    max_length, budget = 16, 14
    enc = encode(tokenizer, split_of(TEXTS), np.array([0, 1, 0, 1, 0]), max_length,
                 long_text=LongText("chunks", chunk_overlap=overlap))
    assert enc.documents == len(TEXTS) and len(enc.groups) == len(enc)
    assert (np.diff(enc.groups) >= 0).all() and enc.groups.dtype == np.int64
    for doc, text in enumerate(TEXTS):
        rows = np.flatnonzero(enc.groups == doc)
        pieces = [enc.row(r).tolist() for r in rows]
        assert all(p[0] == tokenizer.cls_token_id and p[-1] == tokenizer.sep_token_id for p in pieces)
        assert all(len(p) <= max_length for p in pieces)
        inner = [p[1:-1] for p in pieces]
        rebuilt = inner[0] + [t for piece in inner[1:] for t in piece[overlap:]]
        assert rebuilt == content(tokenizer, text)  # every token once, after the stated overlap
        for a, b in zip(inner, inner[1:], strict=False):
            assert len(a) == budget and b[:overlap] == a[len(a) - overlap:]
        assert (enc.labels[rows] == [0, 1, 0, 1, 0][doc]).all()  # a chunk carries its document's label
    assert enc.document_labels.tolist() == [0, 1, 0, 1, 0]
    assert np.count_nonzero(enc.groups == 1) > 1  # the long text is several rows


def test_bad_settings_and_pairs_are_refused(tokenizer):
    pairs = split_of(["first part"], ["second part"])
    for mode in ("head_tail", "chunks"):
        with pytest.raises(ConfigError, match="single texts"):
            encode(tokenizer, pairs, np.zeros(1), 16, long_text=LongText(mode))
    with pytest.raises(ConfigError, match="--head_tokens=15"):
        encode(tokenizer, split_of(["a"]), np.zeros(1), 16, long_text=LongText("head_tail", head_tokens=15))
    with pytest.raises(ConfigError, match="--chunk_overlap=14"):
        encode(tokenizer, split_of(["a"]), np.zeros(1), 16, long_text=LongText("chunks", chunk_overlap=14))
    with pytest.raises(ConfigError, match="--long_text=middle"):
        encode(tokenizer, split_of(["a"]), np.zeros(1), 16, long_text=LongText("middle"))
    truncated = encode(tokenizer, pairs, np.zeros(1), 16)  # truncate takes pairs as before
    assert truncated.type_ids is not None


def test_truncate_records_untruncated_lengths(tokenizer):
    enc = encode(tokenizer, split_of(TEXTS), np.zeros(len(TEXTS)), 16)
    assert enc.source_lengths.tolist() == [len(x) for x in tokenizer(TEXTS, verbose=False)["input_ids"]]
    assert [enc.row(i).tolist() for i in range(len(TEXTS))] == tokenizer(TEXTS, truncation=True, max_length=16)["input_ids"]


def test_mean_per_document():
    logits = np.arange(12, dtype=np.float32).reshape(6, 2)
    means = mean_per_document(logits, np.array([0, 1, 1, 1, 2, 2]))
    np.testing.assert_allclose(means, [[0, 1], [4, 5], [9, 10]])
    assert mean_per_document(logits, None) is logits


class SumModel(nn.Module):
    """A fake classifier: logits (B, 2) = (sum of the row's token ids, its token count)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, **_):
        return SimpleNamespace(logits=torch.stack([(input_ids * attention_mask).sum(1).float(),
                                                   attention_mask.sum(1).float()], dim=1))


def test_predict_logits_averages_chunks_per_document(tokenizer):
    enc = encode(tokenizer, split_of(TEXTS), np.zeros(len(TEXTS)), 16, long_text=LongText("chunks"))
    got = predict_logits(SumModel(), enc, batch_size=3, device=torch.device("cpu"))
    assert got.shape == (len(TEXTS), 2)
    for doc in range(len(TEXTS)):
        rows = np.flatnonzero(enc.groups == doc)
        want = np.mean([[enc.row(r).sum(), len(enc.row(r))] for r in rows], axis=0)
        np.testing.assert_allclose(got[doc], want, rtol=1e-6)


def test_slice_and_concat_keep_documents(tokenizer):
    enc = encode(tokenizer, split_of(TEXTS), np.arange(len(TEXTS)), 16, long_text=LongText("chunks"))
    cut = int(np.flatnonzero(enc.groups == 2)[0])  # the first row of document 2
    a, b = enc.slice(0, cut), enc.slice(cut, len(enc))
    assert a.documents == 2 and b.documents == 3 and b.groups[0] == 0
    assert b.source_lengths.tolist() == enc.source_lengths[2:].tolist()
    joined = concat([a, b])
    np.testing.assert_array_equal(joined.groups, enc.groups)
    np.testing.assert_array_equal(joined.ids, enc.ids)
    np.testing.assert_array_equal(joined.document_labels, enc.document_labels)
    mixed = concat([encode(tokenizer, split_of(TEXTS[:2]), np.zeros(2), 16), b])  # truncate rows + chunk rows
    assert mixed.documents == 5 and mixed.groups[:2].tolist() == [0, 1] and mixed.groups[2] == 2


def test_token_store_round_trips_groups(tokenizer, tmp_path):
    split = split_of(TEXTS * 7)
    chunks = LongText("chunks", chunk_overlap=2)
    memory = encode(tokenizer, split, np.arange(len(split)) % 2, 16, long_text=chunks, chunk_rows=4)
    stored = encode(tokenizer, split, np.arange(len(split)) % 2, 16, long_text=chunks, chunk_rows=4,
                    store=tmp_path / "s")
    for field in ("ids", "offsets", "groups", "labels", "source_lengths"):
        np.testing.assert_array_equal(getattr(stored, field), getattr(memory, field), err_msg=field)
    assert json.loads((tmp_path / "s" / "store.json").read_text())["documents"] == len(split)
    before = (tmp_path / "s" / "ids.bin").stat().st_mtime_ns
    encode(tokenizer, split, np.zeros(len(split)), 16, long_text=chunks, store=tmp_path / "s")
    assert (tmp_path / "s" / "ids.bin").stat().st_mtime_ns == before  # same key: reused
    other = encode(tokenizer, split, np.zeros(len(split)), 16, long_text=LongText("head_tail"), store=tmp_path / "s")
    assert other.groups is None and len(other) == len(split)  # other long_text settings: rebuilt


def test_model_info_without_long_text_reads_as_truncate(tmp_path):
    info = ModelInfo(role="teacher", task="classification", labels=["0", "1"], max_length=8,
                     data=DataSpec(path="x"))
    path = write_model_info(tmp_path, info)
    raw = json.loads(path.read_text())
    raw.pop("long_text")
    raw["data"].pop("dedupe")  # a distill.json written before either existed
    path.write_text(json.dumps(raw))
    read = read_model_info(tmp_path)
    assert read.long_text == LongText() and read.data.dedupe is False


# ----------------------------------------------------------------------------- dedupe and the stages


def write_tsv(path: Path, rows: list[tuple[str, int]]) -> None:
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")


def test_dedupe_drops_dev_duplicates_and_train_repeats(tmp_path):
    train = [("A good film", 1), ("a  GOOD film ", 1), ("a bad film", 0), ("seen in dev", 0), ("other", 1),
             ("Other", 0)]
    write_tsv(tmp_path / "train.tsv", train)
    write_tsv(tmp_path / "dev.tsv", [("Seen   in DEV", 0), ("new", 1)])
    kept = load_dataset(DataSpec(path=str(tmp_path)))
    assert len(kept.train) == 6 and kept.deduped == {}
    deduped = load_dataset(DataSpec(path=str(tmp_path), dedupe=True))
    assert deduped.train.texts == ["A good film", "a bad film", "other"]  # the first of each text stays
    assert deduped.deduped == {"dev_duplicates": 1, "train_repeats": 2}
    assert deduped.label_map.names == ["0", "1"]


WORDS = "the a film movie plot actor scene story music long slow quiet bright dark old new".split()


@pytest.fixture(scope="module")
def long_docs(tmp_path_factory) -> Path:
    """64 train and 24 dev documents of 20-60 words (far over 16 tokens); the label is whether
    "great" appears near the end. 3 dev documents are also in train (case and spacing changed),
    and 2 train documents repeat earlier ones."""
    rng = random.Random(0)
    out = tmp_path_factory.mktemp("long_docs")

    def doc(label: int) -> tuple[str, int]:
        words = [rng.choice(WORDS) for _ in range(rng.randint(20, 60))]
        words.insert(len(words) - 2, "great" if label else "awful")
        return " ".join(words), label

    train = [doc(i % 2) for i in range(62)]
    train += [train[0], train[1]]
    dev = [doc(i % 2) for i in range(21)] + [(t.upper().replace(" ", "  "), y) for t, y in train[2:5]]
    write_tsv(out / "train.tsv", train)
    write_tsv(out / "dev.tsv", dev)
    return out


def teacher_cfg(data: Path, tiny_bert_dir: Path, **changes):
    from teachers.finetune import TeacherConfig

    return TeacherConfig(data=str(data), base_model=str(tiny_bert_dir), max_length=16, epochs=1, batch_size=16,
                         lr=1e-3, evals_per_epoch=1, patience=0, eval_batch_size=32, transfer=[], progress=False,
                         **changes)


@pytest.fixture(scope="module")
def chunk_run(tmp_path_factory, long_docs, tiny_bert_dir) -> tuple[Path, str]:
    from teachers.finetune import run

    run_dir = tmp_path_factory.mktemp("chunk_run")
    import contextlib
    import io

    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        run(teacher_cfg(long_docs, tiny_bert_dir, long_text="chunks", chunk_overlap=2), run_dir)
    return run_dir, log.getvalue()


def test_teacher_warns_records_and_caches_one_row_per_document(chunk_run):
    run_dir, log = chunk_run
    lines = [line for line in log.splitlines() if line.startswith("data: ")]
    assert len(lines) == 2, log
    assert "100% of dev rows and 100% of train rows are longer than max_length 16 tokens" in lines[0]
    assert "long_text=chunks splits them" in lines[0]
    assert lines[1].startswith("data: 3 dev rows (12.5%) also appear in train (normalised text)")
    metrics = json.loads((run_dir / "teacher" / "metrics.json").read_text())
    checks = metrics["data_checks"]
    assert checks["dev"]["over_max_length_share"] == 1.0 and checks["train"]["rows"] == 64
    assert checks["dev_in_train"]["rows"] == 3 and checks["train_repeats"] == 2 and checks["dedupe"] is None
    assert metrics["train_model_rows"] > 64 and sum(map(sum, metrics["confusion_matrix"])) == 24
    assert np.load(run_dir / "teacher" / "logits" / "train.npy").shape == (64, 2)  # one row per document
    info = read_model_info(run_dir / "teacher")
    assert info.long_text == LongText("chunks", chunk_overlap=2)


def test_student_on_chunks_reads_document_logits_and_records_checks(chunk_run, tmp_path, capsys):
    import shutil

    from students import distill as student_stage

    run_dir = tmp_path / "run"
    shutil.copytree(chunk_run[0] / "teacher", run_dir / "teacher")
    args = ["--run-dir", str(run_dir), "--max_length=16", "--epochs=1", "--batch_size=16", "--lr=1e-3",
            "--eval_batch_size=32", "--evals_per_epoch=1", "--patience=0", "--holdout_rows=0", "--progress=false",
            "--student_ce=false", "--keep_layers=2"]
    assert student_stage.main(args + ["--long_text=head_tail"]) == 0
    out = capsys.readouterr().out
    assert "long_text=head_tail keeps their first 3 and last 11 text tokens" in out
    metrics = json.loads((run_dir / "student" / "metrics.json").read_text())
    assert metrics["data_checks"]["dev_in_train"]["rows"] == 3 and metrics["train_model_rows"] == 64
    shutil.rmtree(run_dir / "student")
    assert student_stage.main(args + ["--long_text=chunks"]) == 0
    metrics = json.loads((run_dir / "student" / "metrics.json").read_text())
    assert metrics["train_model_rows"] > 64 and sum(map(sum, metrics["confusion_matrix"])) == 24
    with pytest.raises(ConfigError, match="online teacher must read the student's rows"):
        student_stage.main(args + ["--long_text=truncate", "--online=true"])


def test_predict_and_export_tokenise_as_the_model_was_trained(chunk_run, long_docs):
    from distill import predict as predict_stage
    from export import onnx_export

    teacher_dir = chunk_run[0] / "teacher"
    data = load_dataset(DataSpec(path=str(long_docs)))
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    chunks = read_model_info(teacher_dir).long_text
    want = predict_logits(model, encode(tokenizer, data.dev, None, 16, long_text=chunks), batch_size=8,
                          device=torch.device("cpu"))  # (24, 2) per document
    loaded = predict_stage.load_model(teacher_dir)
    np.testing.assert_allclose(predict_stage.predict_logits(loaded, data.dev.texts, 5), want, atol=1e-5)
    order, batches, groups = onnx_export.dev_batches(tokenizer, data.dev.texts, None, 16, 7, chunks)
    assert len(order) > len(data.dev) and groups is not None
    np.testing.assert_allclose(onnx_export.torch_logits(teacher_dir, batches, order, groups), want, atol=1e-5)


def test_bench_inputs_are_chunk_rows(chunk_run, long_docs):
    from export.bench import BenchConfig, prepare_inputs

    data = load_dataset(DataSpec(path=str(long_docs)))
    tokenizer_dir = chunk_run[0] / "teacher"
    from transformers import AutoTokenizer

    cfg = BenchConfig(reps_b1=5, reps_fixed=2, batches=2, batch_size=4, warmup=1)
    b1, fixed, batches, warm, lengths, per_text = prepare_inputs(
        AutoTokenizer.from_pretrained(tokenizer_dir), data.dev.texts, None, 16, cfg, LongText("chunks"))
    assert per_text > 1 and len(lengths) > len(data.dev) and lengths.max() <= 16
    assert fixed[0]["input_ids"].shape == (1, cfg.fixed_len) and batches[0]["input_ids"].shape[0] == 4
    assert set(b1[0]) == {"input_ids", "attention_mask", "token_type_ids"}


def test_dedupe_in_the_teacher_stage(long_docs, tiny_bert_dir, tmp_path, capsys):
    from teachers.finetune import run

    metrics = run(teacher_cfg(long_docs, tiny_bert_dir, dedupe=True), tmp_path)
    out = capsys.readouterr().out
    assert "data: dedupe dropped 3 train rows that are also dev rows and 2 that repeat an earlier train row" in out
    assert "also appear in train" not in out
    assert metrics["data_checks"]["dedupe"] == {"dev_duplicates": 3, "train_repeats": 2}
    assert metrics["data_checks"]["dev_in_train"]["rows"] == 0 and metrics["train_rows"] == 59
    assert json.loads((tmp_path / "teacher" / "distill.json").read_text())["data"]["dedupe"] is True

"""Token classification (NER) on top of distill.tokens: words aligned to sub-tokens, per-word
logits, entity metrics (seqeval), and the per-word teacher cache.

Alignment (``align_words``). A sentence is a list of words (``distill.ner_data.TokenSplit``); the
tokenizer splits it with its own word splitting (``is_split_into_words``; a fast tokenizer, which
says which word each token came from). The first sub-token of each word carries the word's tag;
later sub-tokens and special tokens carry none. A sentence longer than ``max_length`` tokens is cut
at the end by the tokenizer's own truncation: a word whose first sub-token is kept keeps its tag,
the words after the cut are cut (``WordAligned.words_cut`` counts them; evaluation predicts ``O``
for them, so they count against every model). A word the tokenizer makes no token of (a lone
zero-width or control character) is read as the unknown token, so every word that is not cut has a
first sub-token (``WordAligned.empty_words`` counts them).

Everything is flat, as in ``distill.tokens``: the token rows are an ``Encoded`` (one row per
sentence), and the kept words are one array of first-sub-token positions plus sentence offsets.
A model's token logits (B, L, C) become word logits (N_words, C) by indexing those positions
(``gather_words``, ``word_logits_numpy``).

Metrics (``ner_scores``): seqeval's default (conlleval-compatible, lenient) entity-level precision,
recall and F1 per entity type, their micro average (the headline figure) and macro average, and
token accuracy over every word; tags are IOB2 (what ``distill.ner_data`` loads).

The teacher's cache (``score_sentences``) holds one row of logits per kept word, the rows of a
sentence together: a ragged ``distill.cache`` (one flat (N_words, C) array plus sentence offsets,
fingerprinted, chunked by sentences, atomic and resumable). A student with another tokenizer reads
it by word: word j of sentence s is row offsets[s] + j when j < offsets[s + 1] - offsets[s].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from distill import layout
from distill.data import Split
from distill.errors import PipelineError
from distill.ner_data import TokenSplit
from distill.tokens import NO_LABEL, Encoded, pad_id

if TYPE_CHECKING:  # torch is imported where a batch becomes tensors (predict and bench run without it)
    import torch

    from distill.cache import CacheSettings
    from distill.scoring import SavedTeacher

WORD_JOIN = "\x1f"  # joins a sentence's words into one text for hashes and fingerprints (never inside a word)


class AlignmentError(ValueError, PipelineError):
    """A tokenizer that cannot say which word each token came from."""


@dataclass
class WordAligned:
    """Sentences as model inputs, and where each kept word's first sub-token is."""

    tokens: Encoded  # one row per sentence (S rows); tokens.labels (S,) are NO_LABEL: the tags are per word
    first: np.ndarray  # (N,) int32 position, within its row, of each kept word's first sub-token
    word_offsets: np.ndarray  # (S + 1,) int64: sentence s's kept words are first[word_offsets[s]:word_offsets[s + 1]]
    word_labels: np.ndarray  # (N,) int64 tag id of each kept word (NO_LABEL: no tags)
    words: np.ndarray  # (S,) int64 words of each sentence before any cut
    empty_words: int = 0  # words the tokenizer made no token of, read as its unknown token

    def __len__(self) -> int:
        return len(self.words)

    @property
    def kept(self) -> np.ndarray:
        """(S,) int64 words of each sentence that the model sees."""
        return np.diff(self.word_offsets)

    @property
    def words_cut(self) -> int:
        """Words past max_length, over all sentences."""
        return int(self.words.sum() - len(self.first))

    @property
    def sentences_cut(self) -> int:
        return int((self.kept < self.words).sum())

    def grid(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """rows: (B,) sentences -> (positions, mask, index), each (B, W) with W the most kept words
        of a row (at least 1): positions int64 first sub-token of word j of row b (0 where there
        is none), mask bool word j exists, index int64 the word's row in ``first`` (-1: none)."""
        rows = np.asarray(rows)
        starts, counts = self.word_offsets[rows], self.word_offsets[rows + 1] - self.word_offsets[rows]
        width = max(int(counts.max()) if len(rows) else 0, 1)
        j = np.arange(width)[None, :]  # (1, W)
        mask = j < counts[:, None]  # (B, W)
        index = np.where(mask, starts[:, None] + j, -1)  # (B, W)
        positions = np.where(mask, self.first[np.maximum(index, 0)] if len(self.first) else 0, 0).astype(np.int64)
        return positions, mask, index

    def slice(self, start: int, stop: int) -> WordAligned:
        """Sentences start:stop as their own ``WordAligned`` (views where possible)."""
        a, b = int(self.word_offsets[start]), int(self.word_offsets[stop])
        return WordAligned(tokens=self.tokens.slice(start, stop), first=self.first[a:b],
                           word_offsets=self.word_offsets[start:stop + 1] - a, word_labels=self.word_labels[a:b],
                           words=self.words[start:stop], empty_words=0)

    def summary(self) -> dict:
        """What the alignment did, for metrics.json."""
        return {"sentences": len(self), "words": int(self.words.sum()), "words_cut": self.words_cut,
                "sentences_cut": self.sentences_cut, "empty_words": self.empty_words}


def sentence_split(split: TokenSplit) -> Split:
    """The sentences as a label-free ``distill.data.Split`` of texts (words joined by ``WORD_JOIN``):
    what cache fingerprints and text hashes read."""
    return Split(texts=[WORD_JOIN.join(words) for words in split.sentences], labels=None, source=split.source,
                 line_numbers=list(split.line_numbers))


def _first_positions(word_ids: list[int | None]) -> list[int]:
    """Positions of each word's first token, words in order (word_ids: the tokenizer's, per token)."""
    out, previous = [], None
    for position, word in enumerate(word_ids):
        if word is not None and word != previous:
            out.append(position)
        previous = word if word is not None else previous
    return out


def align_words(tokenizer, split: TokenSplit, label2id: dict[str, int] | None, max_length: int, *,
                chunk_rows: int = 4096) -> WordAligned:
    """Tokenise ``split``'s sentences (chunk by chunk: memory stays flat in the rows) and find each
    kept word's first sub-token. ``label2id``: tag -> id (None, or a split without tags: NO_LABEL)."""
    if not getattr(tokenizer, "is_fast", False):
        raise AlignmentError(f"{type(tokenizer).__name__}: word alignment needs a fast tokenizer (one that "
                             "reports each token's word: tokenizer.json)")
    ids, lengths, first, kept, words, labels, source_lengths = [], [], [], [], [], [], []
    empty = 0
    unk = tokenizer.unk_token
    for start in range(0, len(split), chunk_rows):
        sentences = [list(s) for s in split.sentences[start:start + chunk_rows]]
        full = tokenizer(sentences, is_split_into_words=True, truncation=False, return_attention_mask=False,
                         return_token_type_ids=False, verbose=False)
        rows = list(full["input_ids"])
        word_ids = [full.word_ids(i) for i in range(len(sentences))]
        for i, sentence in enumerate(sentences):
            present = {w for w in word_ids[i] if w is not None}
            if len(present) < len(sentence):  # words with no token: read as the unknown token
                if unk is None:
                    raise AlignmentError(f"{split.source}: sentence {start + i + 1} has words "
                                         f"{[sentence[w] for w in range(len(sentence)) if w not in present][:3]} "
                                         "that make no token, and the tokenizer has no unknown token")
                empty += len(sentence) - len(present)
                sentence[:] = [w if k in present else unk for k, w in enumerate(sentence)]
                again = tokenizer(sentence, is_split_into_words=True, truncation=False, return_attention_mask=False,
                                  return_token_type_ids=False)
                rows[i], word_ids[i] = again["input_ids"], again.word_ids()
        source_lengths += [len(r) for r in rows]
        long = [i for i, r in enumerate(rows) if len(r) > max_length]
        if long:  # the tokenizer's own truncation cuts the end, special tokens put back
            cut = tokenizer([sentences[i] for i in long], is_split_into_words=True, truncation=True,
                            max_length=max_length, return_attention_mask=False, return_token_type_ids=False)
            for j, i in enumerate(long):
                rows[i], word_ids[i] = cut["input_ids"][j], cut.word_ids(j)
        chunk_first, chunk_labels = [], []  # this chunk's, flattened below: a few arrays per chunk, not per sentence
        for i, sentence in enumerate(sentences):
            positions = _first_positions(word_ids[i])
            lengths.append(len(rows[i]))
            chunk_first += positions
            kept.append(len(positions))
            words.append(len(sentence))
            tags = split.tags[start + i] if split.tags is not None and label2id is not None else None
            chunk_labels += [NO_LABEL] * len(positions) if tags is None else [label2id[t] for t in tags[:len(positions)]]
        ids.append(np.fromiter((t for row in rows for t in row), dtype=np.int32))
        first.append(np.asarray(chunk_first, dtype=np.int32))
        labels.append(np.asarray(chunk_labels, dtype=np.int64))
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    tokens = Encoded(ids=np.concatenate(ids) if ids else np.zeros(0, np.int32), offsets=offsets, type_ids=None,
                     labels=np.full(len(lengths), NO_LABEL, dtype=np.int64), pad_token_id=pad_id(tokenizer),
                     source_lengths=np.asarray(source_lengths, dtype=np.int64))
    return WordAligned(tokens=tokens, first=np.concatenate(first) if first else np.zeros(0, np.int32),
                       word_offsets=np.concatenate([[0], np.cumsum(kept, dtype=np.int64)]).astype(np.int64),
                       word_labels=np.concatenate(labels) if labels else np.zeros(0, np.int64),
                       words=np.asarray(words, dtype=np.int64), empty_words=empty)


# ------------------------------------------------------------------------------- word logits


def gather_words(token_logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """token_logits (B, L, C), positions (B, W) int64 -> (B, W, C): each word's first sub-token."""
    import torch

    return torch.gather(token_logits, 1, positions[:, :, None].expand(-1, -1, token_logits.shape[-1]))


def word_batch(token_logits: torch.Tensor, aligned: WordAligned, rows: np.ndarray
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The training rows of a batch, one per word (the token-level KD convention of
    distill/losses.py): token_logits (B, L, C) of sentences ``rows`` (B,) -> (word logits
    (B * W, C), tags (B * W,) int64 with NO_LABEL on padding words, mask (B * W,) bool: a real
    word, W). Non-first sub-tokens and special tokens are never gathered; padding words are
    masked."""
    import torch

    positions, mask, index = aligned.grid(rows)  # (B, W) each
    device = token_logits.device
    words = gather_words(token_logits, torch.from_numpy(positions).to(device))  # (B, W, C)
    labels = np.full(mask.shape, NO_LABEL, dtype=np.int64)
    labels[mask] = aligned.word_labels[index[mask]]
    return (words.flatten(0, 1), torch.from_numpy(labels.reshape(-1)).to(device),
            torch.from_numpy(mask.reshape(-1)).to(device), positions.shape[1])


def word_logits_numpy(token_logits: np.ndarray, aligned: WordAligned, rows: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """token_logits (B, L, C) of sentences ``rows`` (B,) -> (the rows' kept words' logits (n, C),
    their indices in ``aligned.first`` (n,))."""
    positions, mask, index = aligned.grid(rows)  # (B, W) each
    picked = np.take_along_axis(token_logits, positions[:, :, None], axis=1)  # (B, W, C)
    return picked[mask], index[mask]


def word_logits_from_batches(outputs: list[np.ndarray], order: np.ndarray, aligned: WordAligned) -> np.ndarray:
    """(N, C) float32 logits of every kept word, in word order, from the token logits of batches
    that ran the sentences ``order`` (S,) in consecutive slices: outputs[k] (B_k, L_k, C) holds the
    B_k sentences after those of outputs[:k]."""
    width = outputs[0].shape[-1] if outputs else 0
    out = np.zeros((len(aligned.first), width), dtype=np.float32)
    start = 0
    for logits in outputs:
        rows = order[start:start + len(logits)]
        picked, index = word_logits_numpy(logits, aligned, rows)
        out[index] = picked
        start += len(logits)
    if start != len(order):
        raise ValueError(f"the batches hold {start} sentences, the order {len(order)}")
    return out


def predict_word_logits(model, aligned: WordAligned, *, batch_size: int, device: torch.device,
                        amp: bool = False) -> np.ndarray:
    """(N, C) float32 logits of every kept word, in word order (PyTorch; rows run sorted by length)."""
    import torch

    was_training = model.training
    model.eval()
    order = np.argsort(aligned.tokens.lengths, kind="stable")
    out = np.zeros((len(aligned.first), model.config.num_labels), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                logits = model(**aligned.tokens.batch(rows, device)).logits.float()  # (B, L, C)
            positions, mask, index = aligned.grid(rows)
            words = gather_words(logits, torch.from_numpy(positions).to(device))  # (B, W, C)
            out[index[mask]] = words[torch.from_numpy(mask).to(device)].cpu().numpy()
    model.train(was_training)
    return out


# ------------------------------------------------------------------------------- tags and metrics


def predicted_tags(word_logits: np.ndarray, aligned: WordAligned, tag_names: list[str]) -> list[list[str]]:
    """(S, T_s) the argmax tag of each word; words cut by max_length get ``O``."""
    best = word_logits.argmax(axis=1) if len(word_logits) else np.zeros(0, np.int64)  # (N,)
    out = []
    for s in range(len(aligned)):
        a, b = aligned.word_offsets[s], aligned.word_offsets[s + 1]
        out.append([tag_names[int(i)] for i in best[a:b]] + ["O"] * int(aligned.words[s] - (b - a)))
    return out


def ner_scores(true: list[list[str]], pred: list[list[str]]) -> dict:
    """seqeval's default entity-level scores (IOB2, conlleval's lenient reading: an I-X after O or
    another type starts an entity) plus token accuracy. Returns precision, recall, f1 (micro over
    entities: the headline), macro_f1, token_accuracy, entities (gold count) and per_type
    {type: {precision, recall, f1, support}}."""
    from seqeval.metrics import accuracy_score, classification_report

    if len(true) != len(pred) or any(len(t) != len(p) for t, p in zip(true, pred, strict=True)):
        raise ValueError("true and predicted tags must have the same sentences and lengths")
    report = classification_report(true, pred, output_dict=True, zero_division=0)
    per_type = {name: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]),
                       "support": int(v["support"])}
                for name, v in sorted(report.items()) if not name.endswith(" avg")}
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0})
    macro = report.get("macro avg", {"f1-score": 0.0})
    return {"f1": float(micro["f1-score"]), "precision": float(micro["precision"]), "recall": float(micro["recall"]),
            "macro_f1": float(macro["f1-score"]), "token_accuracy": float(accuracy_score(true, pred)) if true else 0.0,
            "entities": int(micro["support"]), "per_type": per_type}


def ner_metrics(word_logits: np.ndarray, aligned: WordAligned, split: TokenSplit, tag_names: list[str]) -> dict:
    """``ner_scores`` of the model's word logits (N, C) against ``split``'s tags, plus what the
    alignment cut (``WordAligned.summary``)."""
    return {**ner_scores(split.tags, predicted_tags(word_logits, aligned, tag_names)), "alignment": aligned.summary()}


def ner_evaluate(eval_set: WordAligned, split: TokenSplit, tag_names: list[str], *, batch_size: int,
                 device: torch.device, amp: bool = False):
    """The token-classification ``evaluate`` for ``distill.trainer.train``: entity micro-F1 (the
    score), precision, recall and token accuracy over ``split`` (aligned as ``eval_set``)."""

    def evaluate(model) -> dict[str, float]:
        logits = predict_word_logits(model, eval_set, batch_size=batch_size, device=device, amp=amp)  # (N, C)
        m = ner_scores(split.tags, predicted_tags(logits, eval_set, tag_names))
        return {"score": m["f1"], "entity_f1": m["f1"], "precision": m["precision"], "recall": m["recall"],
                "token_accuracy": m["token_accuracy"]}

    return evaluate


# ------------------------------------------------------------------------------- the teacher's cache


def score_sentences(teacher: SavedTeacher, *, name: str, split: TokenSplit, data_files: list[str],
                    settings: CacheSettings) -> dict:
    """Score ``split`` into ``teacher.directory/logits/<name>.npy``: one row of logits per kept
    word, (N_words, C), with ``<name>.offsets.npy`` (S + 1,) per sentence (a ragged
    ``distill.cache``: resumable, fingerprinted by ``distill.cache.cache_parts``). Returns
    ``distill.scoring.fill_cache``'s report and the alignment's summary."""

    from distill.cache import CacheSpec, cache_parts
    from distill.scoring import fill_cache

    info = teacher.info
    aligned = align_words(teacher.tokenizer, split, None, info.max_length)  # the offsets are known before any chunk
    sentences = sentence_split(split)
    parts = cache_parts(teacher.directory, info, name=name, split=sentences, data_files=data_files)

    def score(start: int, stop: int) -> np.ndarray:
        return predict_word_logits(teacher.model, aligned.slice(start, stop), batch_size=settings.batch_size,
                                   device=teacher.device, amp=settings.amp)

    cache = CacheSpec(directory=layout.logits_dir(teacher.directory), name=name, split=sentences,
                      num_labels=len(info.labels), label_names=info.labels, parts=parts,
                      row_offsets=aligned.word_offsets)
    return {**fill_cache(score, cache=cache, settings=settings), "alignment": aligned.summary()}


def open_word_cache(teacher_dir, info, *, name: str, data_files: list[str], split: TokenSplit):
    """The per-word cache of ``split``, checked against its fingerprint (``distill.cache.cache_parts``
    of the teacher's ModelInfo ``info``, as the writer described it), text hashes and offsets
    (``distill.cache.CacheError`` otherwise): ``.logits`` (N_words, C) memory-mapped, ``.offsets``
    (S + 1,)."""
    from distill.cache import CacheError, cache_parts, open_logit_cache

    sentences = sentence_split(split)
    expected = cache_parts(teacher_dir, info, name=name, split=sentences, data_files=data_files)
    cache = open_logit_cache(layout.logits_dir(teacher_dir), name, expected_parts=expected)
    cache.check_rows(sentences)
    if cache.offsets is None:
        raise CacheError(f"{cache.directory / name}.npy: not a per-word cache (no offsets); rerun the teacher stage")
    return cache


def teacher_rows(cache_offsets: np.ndarray, sentences: np.ndarray, width: int) -> np.ndarray:
    """(B, W) int64 row of the per-word cache holding word j of each sentence (B,), -1 where the
    teacher has no row for it (its max length cut the word, or the sentence has fewer words)."""
    starts = cache_offsets[sentences]  # (B,)
    counts = cache_offsets[sentences + 1] - starts  # (B,)
    j = np.arange(width)[None, :]
    return np.where(j < counts[:, None], starts[:, None] + j, -1)

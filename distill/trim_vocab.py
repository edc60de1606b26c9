"""Trim a model's word-embedding table (and its tokenizer) to the tokens some text uses.

A 3-layer MiniLM student has 17.4M parameters, 11.7M of them in the 30,522 x 384 word-embedding
table, most of whose rows a task's training text never uses. ``used_token_ids`` finds the ids a
set of texts uses (special tokens always included); ``trim_vocabulary`` keeps only those rows and
writes a fast tokenizer whose vocabulary holds only those tokens, in their original order (so
[PAD] stays 0 and [UNK] [CLS] [SEP] [MASK] come right after it).

Why seen text tokenises exactly as before. A BERT tokenizer normalises the text, splits it into
words (whitespace and punctuation) and splits out the added special tokens: none of that depends
on the vocabulary. Each word is then cut by greedy longest match: from position i, take the
longest s[i:j] (prefixed "##" when i > 0) that is in the vocabulary, continue at j; when no
prefix matches, the whole word becomes [UNK]. Let V be the old vocabulary, V' ⊂ V the kept one,
and p1..pk the pieces a word got under V, all in V'. At each step every candidate longer than the
chosen piece was not in V, so is not in V' either, and the chosen piece is in V': the same piece
wins, and by induction the word gets p1..pk again. So every text whose pieces were all kept (in
particular every text ``used_token_ids`` was given) gets the same tokens; only the ids change,
old id ``keep_ids[n]`` -> new id ``n``. (A word that was [UNK] before normally stays [UNK]; in
principle greedy matching over V' can walk another path and succeed where it failed over V.)

What happens to an unseen word (one with a piece outside V'): WordPiece does NOT simply turn the
missing piece, or the word, into [UNK]. At the step where the missing piece was chosen, the
longest match over V' is a shorter kept piece, and matching goes on from there: the word is
re-segmented into smaller kept pieces. It becomes [UNK] only when at some step no kept piece
starts at that position, and then the whole word is one [UNK] (never "kept pieces + [UNK]").
Checked with the packaged MiniLM tokenizer trimmed to the first 2,000 SST-2 training rows (4,820
ids kept): "jeopardy" (one token before) -> je ##op ##ard ##y; "xylophone" (x ##yl ##ophone) ->
x ##yl ##op ##ho ##ne; "naïve" (naive) -> na ##ive; "qatar" -> [UNK] (no kept word-initial "q"
piece); "supercalifragilistic" -> [UNK]; "ǂ" was [UNK] and stays [UNK]. tests/test_trim_vocab.py
pins the rule on a five-piece vocabulary ("thex" -> [UNK], not the + [UNK]). A training text of
thousands of rows keeps most single characters and "##" characters, so re-segmentation is the
usual outcome and [UNK] the rarer one: the student meets an unseen word as an unfamiliar
sequence of familiar pieces, a distribution shift [UNK] counts miss. ``unk_effect`` measures both: the share
of tokens that become new [UNK]s and the share of rows whose pieces change at all.

Only BERT-style fast WordPiece tokenizers are supported (the packaged MiniLM's kind); others
(BPE, Unigram, slow tokenizers) are refused with ``VocabTrimError``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distill.errors import PipelineError

# the special tokens a BERT-style model needs; each the tokenizer defines must be kept
REQUIRED_SPECIALS = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
# config attributes holding token ids, remapped with the table
CONFIG_TOKEN_IDS = ("pad_token_id", "unk_token_id", "cls_token_id", "sep_token_id", "mask_token_id",
                    "bos_token_id", "eos_token_id")


class VocabTrimError(PipelineError, ValueError):
    """A tokenizer or a keep list that cannot be trimmed (unsupported kind, a special token dropped)."""


def used_token_ids(tokenizer, texts: Sequence[str], max_length: int | None = None, *,
                   text_pairs: Sequence[str] | None = None, chunk_rows: int = 8192) -> np.ndarray:
    """(K,) int64 sorted unique ids the texts tokenise to (special tokens always included), in
    batches of ``chunk_rows``. ``max_length``: ids of each text cut as the tokenizer truncates
    (None: whole texts, which covers every long-text mode)."""
    seen = np.zeros(len(tokenizer), dtype=bool)  # (V,) one flag per id: memory flat in the rows
    seen[tokenizer.all_special_ids] = True
    texts = list(texts)
    pairs = None if text_pairs is None else list(text_pairs)
    for start in range(0, len(texts), chunk_rows):
        stop = start + chunk_rows
        ids = tokenizer(texts[start:stop], None if pairs is None else pairs[start:stop],
                        truncation=max_length is not None, max_length=max_length, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)["input_ids"]
        seen[np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64)] = True
    return np.flatnonzero(seen).astype(np.int64)


def _wordpiece_json(tokenizer) -> dict:
    """The backend tokenizer's JSON, after checking it is a WordPiece model we can rewrite."""
    if not getattr(tokenizer, "is_fast", False):
        raise VocabTrimError(f"trim_vocab: {type(tokenizer).__name__} is not a fast tokenizer; only fast "
                             "WordPiece (BERT-style) tokenizers can be trimmed")
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    kind = state["model"]["type"]
    if kind != "WordPiece":
        raise VocabTrimError(f"trim_vocab: {type(tokenizer).__name__} is a {kind} tokenizer; only WordPiece "
                             "(BERT-style) tokenizers can be trimmed, since only greedy longest-match keeps seen "
                             "text's pieces under a smaller vocabulary")
    post = (state.get("post_processor") or {}).get("type")
    if post not in (None, "TemplateProcessing", "BertProcessing"):
        raise VocabTrimError(f"trim_vocab: post-processor {post!r} is not supported (TemplateProcessing or "
                             "BertProcessing)")
    return state


def _remap_json(state: dict, new_id: np.ndarray) -> dict:
    """The tokenizer JSON with every id mapped through ``new_id`` ((V,) new id, -1 when dropped)."""
    def kept(i: int) -> bool:
        return 0 <= i < len(new_id) and new_id[i] >= 0

    vocab = state["model"]["vocab"]  # token -> old id
    state["model"]["vocab"] = {tok: int(new_id[i]) for tok, i in sorted(vocab.items(), key=lambda kv: kv[1])
                               if kept(i)}
    state["added_tokens"] = [{**t, "id": int(new_id[t["id"]])} for t in state["added_tokens"] if kept(t["id"])]
    post = state.get("post_processor")
    if post and post["type"] == "TemplateProcessing":
        for special in post["special_tokens"].values():
            special["ids"] = [int(new_id[i]) for i in special["ids"]]
    elif post and post["type"] == "BertProcessing":
        for key in ("sep", "cls"):
            post[key] = [post[key][0], int(new_id[post[key][1]])]
    if state.get("padding"):
        state["padding"]["pad_id"] = int(new_id[state["padding"]["pad_id"]])
    return state


def _save_tokenizer(tokenizer, state: dict, new_id: np.ndarray, out_dir: Path):
    """Write the trimmed tokenizer into ``out_dir`` and load it back as the pipeline does."""
    from transformers import AutoTokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)  # tokenizer_config.json, special_tokens_map.json: settings kept
    (out_dir / "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    vocab = sorted(state["model"]["vocab"].items(), key=lambda kv: kv[1])
    (out_dir / "vocab.txt").write_text("".join(tok + "\n" for tok, _ in vocab), encoding="utf-8")
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if "added_tokens_decoder" in config:  # keyed by id: the old ids would re-add tokens at wrong ids
        decoder = config["added_tokens_decoder"]  # old id (a string) -> the token's settings
        config["added_tokens_decoder"] = {str(int(new_id[int(i)])): v for i, v in decoder.items() if new_id[int(i)] >= 0}
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return AutoTokenizer.from_pretrained(out_dir)


def _gather_embeddings(model: nn.Module, keep: np.ndarray, new_id: np.ndarray) -> None:
    """Replace the input (and any output) embeddings by their ``keep`` rows, in place."""
    emb = model.get_input_embeddings()  # (V, H)
    if not isinstance(emb, nn.Embedding):
        raise VocabTrimError(f"trim_vocab: the input embeddings are a {type(emb).__name__}, not an nn.Embedding")
    if keep[-1] >= emb.num_embeddings:
        raise VocabTrimError(f"trim_vocab: id {keep[-1]} is beyond the embedding table's {emb.num_embeddings} rows")
    if emb.padding_idx is not None and new_id[emb.padding_idx] < 0:
        raise VocabTrimError(f"trim_vocab: the embedding's padding row {emb.padding_idx} is not kept")
    rows = torch.as_tensor(keep, device=emb.weight.device)  # (K,)
    out = model.get_output_embeddings()  # a tied (V, H) decoder in masked-LM heads; None in classifiers
    tied = out is not None and out.weight is emb.weight
    new = nn.Embedding(len(keep), emb.embedding_dim, device=emb.weight.device, dtype=emb.weight.dtype,
                       padding_idx=None if emb.padding_idx is None else int(new_id[emb.padding_idx]))
    new.weight = nn.Parameter(emb.weight.detach()[rows].clone(), requires_grad=emb.weight.requires_grad)  # (K, H)
    model.set_input_embeddings(new)
    if out is not None:
        if not isinstance(out, nn.Linear):
            raise VocabTrimError(f"trim_vocab: the output embeddings are a {type(out).__name__}, not an nn.Linear")
        head = nn.Linear(out.in_features, len(keep), bias=out.bias is not None, device=out.weight.device,
                         dtype=out.weight.dtype)
        # tied: the same Parameter, as tie_weights leaves it; else the decoder's own rows
        head.weight = new.weight if tied else nn.Parameter(out.weight.detach()[rows].clone())
        if out.bias is not None:
            head.bias = nn.Parameter(out.bias.detach()[rows].clone())  # (K,)
        model.set_output_embeddings(head)


def trim_vocabulary(model: nn.Module, tokenizer, keep_ids, out_dir: Path) -> tuple[nn.Module, object]:
    """The model with only the ``keep_ids`` rows of its word-embedding table (and of a tied or
    untied output decoder), ``config.vocab_size`` set, and the matching fast tokenizer, saved in
    ``out_dir`` and loaded back from it. Old id ``keep_ids[n]`` becomes ``n`` (sorted order kept).
    The model is changed in place and returned."""
    state = _wordpiece_json(tokenizer)
    keep = np.unique(np.asarray(keep_ids, dtype=np.int64))  # (K,)
    if len(keep) == 0 or keep[0] < 0 or keep[-1] >= len(tokenizer):
        raise VocabTrimError(f"trim_vocab: keep_ids must be ids in [0, {len(tokenizer)})")
    missing = [getattr(tokenizer, name) for name in REQUIRED_SPECIALS if getattr(tokenizer, name, None) is not None
               and tokenizer.convert_tokens_to_ids(getattr(tokenizer, name)) not in set(keep.tolist())]
    if missing:
        raise VocabTrimError(f"trim_vocab: keep_ids drop the special token(s) {', '.join(missing)}; a BERT-style "
                             "model needs them")
    new_id = np.full(max(len(tokenizer), model.get_input_embeddings().num_embeddings), -1, dtype=np.int64)  # (V,)
    new_id[keep] = np.arange(len(keep))
    _gather_embeddings(model, keep, new_id)  # first: it refuses models it cannot trim before anything is written
    trimmed = _save_tokenizer(tokenizer, _remap_json(state, new_id), new_id, Path(out_dir))
    if len(trimmed) != len(keep) or trimmed.convert_ids_to_tokens(list(range(len(keep)))) != \
            tokenizer.convert_ids_to_tokens(keep.tolist()):
        raise RuntimeError(f"trim_vocab: the tokenizer saved in {out_dir} does not hold the kept tokens in order")
    model.config.vocab_size = len(keep)
    for attr in CONFIG_TOKEN_IDS:
        old = getattr(model.config, attr, None)
        if isinstance(old, int):
            setattr(model.config, attr, int(new_id[old]) if new_id[old] >= 0 else None)
    return model, trimmed


def unk_effect(before, after, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> dict:
    """How the trimmed tokenizer ``after`` reads texts compared with ``before`` (whole texts, no
    special tokens): the share of tokens that are new [UNK]s (per row, after's [UNK] count less
    before's, floored at 0, over before's tokens), the share of rows with a new [UNK], and the
    share of rows whose pieces changed at all (re-segmented unseen words included)."""
    kwargs = {"add_special_tokens": False, "return_attention_mask": False, "return_token_type_ids": False,
              "verbose": False}
    texts = list(texts)
    pairs = None if text_pairs is None else list(text_pairs)
    old = before(texts, pairs, **kwargs)["input_ids"]
    new = after(texts, pairs, **kwargs)["input_ids"]
    tokens = new_unk = unk_rows = changed = 0
    for a, b in zip(old, new, strict=True):
        extra = max(b.count(after.unk_token_id) - a.count(before.unk_token_id), 0)
        tokens += len(a)
        new_unk += extra
        unk_rows += extra > 0
        changed += before.convert_ids_to_tokens(a) != after.convert_ids_to_tokens(b)
    rows = max(len(texts), 1)
    return {"dev_tokens": tokens, "dev_new_unk_tokens": new_unk,
            "dev_unk_token_share": round(new_unk / max(tokens, 1), 6), "dev_unk_row_share": round(unk_rows / rows, 6),
            "dev_resegmented_row_share": round(changed / rows, 6)}


def trim_to_rows(model: nn.Module, tokenizer, train, dev, out_dir: Path) -> tuple[nn.Module, object, dict]:
    """Trim ``model`` and ``tokenizer`` to the tokens of the ``train`` rows (a distill.data.Split,
    whole texts); ``dev`` is only measured (``unk_effect``), never kept. Returns the model, the
    trimmed tokenizer and the facts for metrics.json."""
    emb_rows = model.get_input_embeddings().num_embeddings
    params_before = sum(p.numel() for p in model.parameters())
    keep = used_token_ids(tokenizer, train.texts, text_pairs=train.text_pairs)
    model, trimmed = trim_vocabulary(model, tokenizer, keep, out_dir)
    return model, trimmed, {
        "vocab_before": len(tokenizer), "vocab_after": len(trimmed), "embedding_rows_before": emb_rows,
        "parameters_before": int(params_before), "parameters_after": int(sum(p.numel() for p in model.parameters())),
        **unk_effect(tokenizer, trimmed, dev.texts, dev.text_pairs),
    }

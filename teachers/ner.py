"""The teacher stage for token classification: ``--task=ner``.

    python -m distill teacher --task=ner --data DIR --run-dir RUN [--preset quick] [--key=value ...]
    make teacher TASK=ner DATA=DIR RUN=RUN

``teachers/finetune.py``'s ``run`` hands a ``TeacherConfig`` with ``task="ner"`` here (its lr and
pooling already decided by ``resolve_defaults``): the same base models, strategies (full, top-n,
frozen, LoRA), learning-rate defaults and training loop (distill/trainer.py). The data is a CoNLL or
JSONL dataset (distill/ner_data.py: tag schemes, bad lines); the model an
``AutoModelForTokenClassification`` over the IOB2 tag map; each word's tag sits on its first
sub-token (distill/ner.py); checkpoints are chosen on entity micro-F1.

Writes ``<run-dir>/teacher/`` as the classification teacher does (HF model and tokenizer,
``distill.json`` with task ``ner``, ``train_config.json``, ``metrics.json`` with entity P/R/F1 per
type) and ``logits/train.npy``: one row of logits per kept word of every training sentence, with
``train.offsets.npy`` saying which rows are each sentence's (a ragged cache: fingerprinted,
chunked, atomic, resumable), and the same per-word cache of every transfer set: label-free
sentences (the unused training sentences, the dataset's unlabeled file, or any file of sentences:
distill/ner_transfer.py), each ``logits/<name>.npy`` with its offsets. ``python -m distill score``
adds more sets to a finished teacher. Sentence pairs, ``long_text`` other than truncate,
``dedupe``, ``cache_cls`` and augmented transfer sets are classification's; asking for them with
``task=ner`` is an error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from distill.artifacts import ModelInfo, claim_run_dir, read_model_info, write_model_info
from distill.config import ConfigError
from distill.data import DEFAULT_DATA, write_skipped_rows
from distill.kd_defaults import IGNORE_INDEX
from distill.modeling import (
    apply_strategy,
    count_parameters,
    load_classifier,
    merged_copy,
    resolve_model_name,
)
from distill.ner import (
    align_words,
    ner_evaluate,
    ner_metrics,
    predict_word_logits,
    score_sentences,
    word_batch,
)
from distill.ner_data import load_ner_dataset
from distill.ner_transfer import check_sources, file_keys, read_ner_transfer
from distill.scoring import split_files
from distill.stage import finish_stage
from distill.trainer import holdout_indices, loop_figures, save_model_dir, setup_distributed, train
from distill.transfer import resolve_sources


def check_ner_settings(cfg) -> None:
    """Raise ``ConfigError`` for TeacherConfig settings that only classification has."""
    if cfg.data == DEFAULT_DATA:
        raise ConfigError("--task=ner needs --data=<a NER dataset directory> (train and dev splits, CoNLL or JSONL; "
                          "distill/ner_data.py): the project carries no NER dataset")
    given = {"text_pair_column": cfg.text_pair_column, "dedupe": cfg.dedupe, "cache_cls": cfg.cache_cls,
             "long_text": cfg.long_text != "truncate", "pooling": cfg.pooling == "mean",
             "transfer_text_column": cfg.transfer_text_column}
    wrong = [name for name, value in given.items() if value]
    if wrong:
        raise ConfigError(f"--task=ner: {', '.join('--' + w for w in wrong)} apply to classification only "
                          "(ner: single sentences cut at max_length, no pooling, transfer files of sentences)")
    check_sources(cfg.transfer, cfg.augment_factor)


def transfer_sets(cfg, out: Path, data, spec, *, trained: bool) -> tuple[dict, dict, list[str]]:
    """(name -> source dict, name -> (sentences, counts), notes on optional sources skipped): the
    sets asked for, plus, for a finished teacher, the sets it scored before (they stay)."""
    sources, notes = resolve_sources(cfg.transfer, spec=spec, dataset=data, text_column=None,
                                     max_rows=cfg.transfer_rows, augment_factor=0, mask_token="", seed=cfg.seed,
                                     file_keys=file_keys(cfg.transfer_format, cfg.transfer_word_pattern))
    if trained and (out / "distill.json").exists():
        earlier = read_model_info(out).transfer
        sources = {**{n: {k: v for k, v in e.items() if k != "counts"} for n, e in earlier.items()}, **sources}
    return sources, {name: read_ner_transfer(source, dataset=data, spec=spec) for name, source in sources.items()}, notes


def run_ner(cfg, out: Path, *, trained: bool) -> dict:
    """Fine-tune the token classifier, save the best model, write the per-word cache; returns
    metrics.json's content. ``cfg``: a resolved TeacherConfig; ``trained``: ``out`` already holds a
    finished teacher with these settings (only the cache is then checked or completed)."""
    from transformers import AutoTokenizer

    check_ner_settings(cfg)
    device = setup_distributed(cfg.device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.manual_seed(cfg.seed)
    spec = cfg.ner_spec()
    source = resolve_model_name(cfg.base_model)  # a base model that is no folder: one line, before the data
    data = load_ner_dataset(spec)  # before anything is written: bad data leaves no half-made run behind
    claim_run_dir(out.parent, stage="teacher")
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        write_skipped_rows(out, data)
    if cfg.holdout_rows >= len(data.train) - 1:
        raise ConfigError(f"--holdout_rows={cfg.holdout_rows}: {data.train.source} has {len(data.train)} training "
                          "sentences; hold back fewer (the NER presets hold back 200 to choose checkpoints on)")
    sources, transfer, notes = transfer_sets(cfg, out, data, spec, trained=trained)
    for note in notes if rank == 0 else []:
        print(note)
    names, label2id = data.tag_map.names, data.tag_map.label2id
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = load_classifier(cfg.base_model, id2label=data.tag_map.id2label, dropout=cfg.dropout, task="ner")
    model = apply_strategy(model, strategy=cfg.strategy, top_n=cfg.top_n, lora_r=cfg.lora_r,
                           lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout).to(device)
    params = count_parameters(model)
    kept, held = holdout_indices(len(data.train), cfg.holdout_rows, seed=spec.seed)
    train_rows = data.train.subset(kept)
    eval_rows, eval_name = (data.train.subset(held), "holdout") if len(held) else (data.dev, "dev")
    train_set = align_words(tokenizer, train_rows, label2id, cfg.max_length)
    dev_set = align_words(tokenizer, data.dev, label2id, cfg.max_length)
    eval_set = dev_set if eval_name == "dev" else align_words(tokenizer, eval_rows, label2id, cfg.max_length)
    types = sorted({name[2:] for name in names if name != "O"})
    print(f"teacher (ner): {cfg.base_model} | strategy {cfg.strategy} | {params['parameters']:,} parameters, "
          f"{params['trainable_parameters']:,} trainable | {len(names)} tags ({len(types)} entity types, "
          f"{data.tag_scheme.upper()} in the files) | {len(train_rows)} train sentences, checkpoints chosen on "
          f"{len(eval_rows)} {eval_name} sentences | {len(data.dev)} dev | {device}")
    for name, aligned in (("train", train_set), ("dev", dev_set)):
        if rank == 0 and (aligned.words_cut or aligned.empty_words):
            print(f"data: max_length {cfg.max_length} cuts {aligned.words_cut} words at the end of "
                  f"{aligned.sentences_cut} {name} sentences; {aligned.empty_words} words make no token "
                  "(read as the unknown token)")
    info = ModelInfo(role="teacher", task="ner", labels=names, max_length=cfg.max_length, data=spec,
                     architecture={"base_model": cfg.base_model, "strategy": cfg.strategy,
                                   **({"top_n": cfg.top_n} if cfg.strategy == "top-n" else {}),
                                   **({"lora_r": cfg.lora_r} if cfg.strategy == "lora" else {})},
                     transfer={name: {**source, "counts": transfer[name][1]} for name, source in sources.items()})
    for name, (_, counts) in transfer.items() if rank == 0 else []:
        print(f"transfer {name}: {counts['rows']} sentences ({counts['read']} read, {counts['dropped_dev']} also dev "
              f"sentences dropped, {counts['skipped_empty']} empty skipped)")

    def loss_fn(outputs, rows, batch):
        words, labels, _, _ = word_batch(outputs.logits.float(), train_set, rows)  # (B * W, C), (B * W,)
        ce = F.cross_entropy(words, labels, ignore_index=IGNORE_INDEX)  # mean over the batch's words
        return ce, {"ce": ce.item()}

    def save_best(model, directory):
        save_model_dir(merged_copy(model), tokenizer, directory, config=cfg, info=info)

    start = time.perf_counter()
    if trained:
        print(f"teacher: {out} is already trained with these settings; scoring only what is missing")
        summary = json.loads((out / "metrics.json").read_text())["loop"]
        if rank == 0:
            write_model_info(out, info)  # transfer sets added since are what later stages read
    else:
        evaluate = ner_evaluate(eval_set, eval_rows, names, batch_size=cfg.eval_batch_size, device=device,
                                amp=cfg.amp and device.type == "cuda")
        summary = train(model, cfg=cfg, train_set=train_set.tokens, evaluate=evaluate, eval_name=eval_name,
                        loss_fn=loss_fn, out_dir=out, save_best=save_best)
        summary = {k: summary[k] for k in ("train_seconds", "samples_seen", "best_step", "total_steps",
                                           "stopped_early", "world_size", "history")}
    wall = time.perf_counter() - start

    # the cache: the best checkpoint as saved (the weights the fingerprint hashes) on every training sentence
    best = load_classifier(str(out), id2label=data.tag_map.id2label, task="ner").to(device)
    caches = score_caches(best, tokenizer, cfg, out=out, data=data, sets={"train": data.train, **{
        n: rows for n, (rows, _) in transfer.items()}}, sources=sources, device=device, rank=rank)
    if rank != 0:
        return {}
    metrics = ner_metrics(predict_word_logits(best, dev_set, batch_size=cfg.eval_batch_size, device=device,
                                              amp=cfg.amp), dev_set, data.dev, names)
    result = {
        "task": "ner", "entity_f1": metrics["f1"], **metrics, **count_parameters(best),
        "trainable_parameters": params["trainable_parameters"], "strategy": cfg.strategy, "base_model": cfg.base_model,
        "train_rows": len(train_rows), "train_words": int(train_set.words.sum()), "checkpoint_chosen_on": eval_name,
        "eval_rows": len(eval_rows), "tag_scheme": data.tag_scheme, "repaired_tags": data.repaired,
        "train_alignment": train_set.summary(), "device": str(device), "cache": caches,
        "transfer": {name: counts for name, (_, counts) in transfer.items()}, "transfer_notes": notes,
        "skipped_rows": len(data.skipped), "fallback_decoded": data.fallback_decoded,
        **loop_figures(summary, wall), "loop": summary,
    }
    finish_stage(out, result)  # metrics.json, the model card, the resume checkpoint dropped
    print(f"teacher done: dev entity F1 {metrics['f1']:.4f} (P {metrics['precision']:.4f}, R {metrics['recall']:.4f}, "
          f"{metrics['entities']} entities), token accuracy {metrics['token_accuracy']:.4f}, "
          f"train {result['train_time_s']:.0f}s -> {out}")
    return result


def score_caches(best, tokenizer, cfg, *, out: Path, data, sets: dict, sources: dict, device, rank: int) -> dict:
    """Score each named split of ``sets`` into its per-word cache (resumable; every rank of a group
    scores its share); returns name -> ``score_sentences``'s report."""
    caches = {}
    for name, split in sets.items():
        caches[name] = cache = score_sentences(
            best, tokenizer, teacher_dir=out, name=name, split=split,
            data_files=split_files(name, data, sources.get(name)), label_names=data.tag_map.names,
            max_length=cfg.max_length, device=device, batch_size=cfg.eval_batch_size, dtype=cfg.cache_dtype,
            chunk_rows=cfg.cache_chunk_rows, amp=cfg.amp, max_chunks=cfg.cache_max_chunks)
        if rank == 0 and not cache["complete"]:
            print(f"cache {name}: time box reached after {cache['rows_scored_this_call']} of {cache['rows']} "
                  "sentences; rerun to score the rest")
        elif rank == 0:
            print(f"cache {name}: {cache['rows']} sentences, {cache['logit_rows']} word rows, "
                  f"{cache['bytes'] / 1e6:.2f} MB {cache['dtype']} in {cache['seconds']:.1f}s "
                  f"({cache['rows_per_s']:.0f} sentences/s) -> {out / 'logits' / (name + '.npy')}")
    return caches

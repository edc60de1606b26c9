"""The teacher stage: fine-tune a classifier, keep the best checkpoint, cache its logits.

    python -m distill teacher --data data/sst2 --run-dir runs/demo --preset quick [--key=value ...]

Writes ``<run-dir>/teacher/``: the HF model and tokenizer, ``distill.json`` (what later stages
need: labels, max length, the data and the transfer sets), ``train_config.json``,
``metrics.json``, and ``logits/``: the logit cache of the training split and of every transfer set
(label-free text the teacher scores for the student; distill/transfer.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F

from distill import layout
from distill.artifacts import ModelInfo, claim_run_dir, read_model_info, write_model_info
from distill.config import ConfigError, apply_overrides, load_config
from distill.data import DEFAULT_DATA, DataSpec, load_dataset, write_skipped_rows
from distill.inspect import stage_data_checks
from distill.kd_defaults import IGNORE_INDEX
from distill.lock import stage_lock
from distill.metrics import classification_metrics
from distill.modeling import (
    PACKAGED,
    TASKS,
    append_mean_pooling_layer,
    apply_strategy,
    count_parameters,
    load_classifier,
    merge_for_saving,
    resolve_model_name,
)
from distill.ner_data import NerSpec
from distill.scoring import (
    Scorer,
    cls_cache_name,
    onnx_scorer,
    pytorch_scorer,
    resolve_scorer,
    score_split,
    split_files,
)
from distill.stage import finish_stage
from distill.tokens import encode
from distill.trainer import (
    TrainConfig,
    classification_evaluate,
    holdout_split,
    peak_rss_mb,
    predict_logits,
    save_model_dir,
    setup_distributed,
    train,
)
from distill.transfer import AUGMENTED, UNLABELED, UNUSED_TRAIN, read_transfer, resolve_sources

# Settings that change only what is scored after training: a finished teacher rerun with other
# values of these scores the new sets instead of training again.
SCORING_ONLY = ("transfer", "transfer_rows", "transfer_text_column", "augment_factor", "transfer_format",
                "transfer_word_pattern", "cache_dtype", "cache_chunk_rows", "cache_max_chunks", "cache_cls",
                "eval_batch_size", "progress", "device", "amp", "scorer")
# Where a setting came from, not a setting: a teacher trained at lr 1e-4 given by hand matches one
# whose default is 1e-4 (the lr itself is compared), and train_config.json files from before
# these fields existed still match.
PROVENANCE = ("lr_source", "preset")


@dataclass
class TeacherConfig(TrainConfig):
    task: str = "classification"  # classification: a label per text | ner: a tag per word (teachers/ner.py)
    #                               | lm: a causal LM (teachers/lm.py, its own LMTeacherConfig)
    # data
    data: str = DEFAULT_DATA  # dataset directory (train + dev splits) or hub name
    text_column: str = "text"  # column holding the text
    text_pair_column: str | None = None  # second text column for sentence-pair tasks
    label_column: str = "label"  # column holding the label
    max_train_rows: int | None = None  # random subset of the training split (None: all)
    encoding: str = "utf-8"  # utf-8, a Python codec, or auto (UTF-8, else cp1252, else latin-1, per file)
    on_bad_rows: str = "error"  # error: stop and list bad rows | skip: drop them into skipped_rows.jsonl
    dedupe: bool = False  # drop train rows whose normalised text is a dev row's or an earlier train row's
    tag_scheme: str = "auto"  # ner: the files' tag scheme, auto | iob1 | iob2 | iobes (distill/ner_data.py)
    repair_tags: bool = False  # ner: read an impossible I-X as B-X (counted) instead of reporting a bad row
    # model
    base_model: str = PACKAGED  # "packaged" (all-MiniLM-L6-v2 from PyPI), a model folder, or a hub name
    strategy: str = "full"  # full | top-n | frozen | lora
    pooling: str | None = None  # cls: the head reads [CLS] | mean: a fixed block puts the tokens' mean there
    #                             (frozen only) | None: the strategy's default (POOLING_DEFAULTS)
    top_n: int = 2  # encoder layers that train under strategy=top-n
    lora_r: int = 8  # LoRA rank
    lora_alpha: int = 16  # LoRA scaling numerator (scale = alpha / r)
    lora_dropout: float = 0.1  # dropout on the LoRA branch
    # the learning rate depends on the strategy (STRATEGY_DEFAULTS, filled in by resolve_defaults)
    lr: float | None = None  # peak learning rate (None: the strategy's default for this preset)
    lr_source: str | None = None  # set by resolve_defaults: "given" or which default (provenance, not a setting)
    preset: str = "quick"  # the preset this config starts from: quick | full (scales the default lr)
    # transfer sets: label-free text scored for the student (distill/transfer.py)
    transfer: list[str] = field(default_factory=list)  # unused_train, unlabeled, augmented, files or folders
    transfer_rows: int | None = None  # at most this many rows per transfer source (seeded sample; None: all)
    transfer_text_column: str | None = None  # text column of table transfer files (None: text_column, text, sentence)
    augment_factor: int = 0  # transfer "augmented": variants per labelled training row
    transfer_format: str = "auto"  # ner: how a transfer file is read: auto (by suffix) | lines | conll | jsonl
    transfer_word_pattern: str | None = None  # ner, lines: regex whose matches are the words (None: whitespace)
    cache_dtype: str = "float32"  # float32 | float16 storage of the cached logits
    cache_chunk_rows: int = 4096  # rows per resumable chunk of the cache
    cache_max_chunks: int | None = None  # score at most this many chunks per set and process this run (a time box)
    cache_cls: bool = False  # also cache per-layer [CLS] states (fp16) for the student's cached layer loss (BERT-PKD)
    # what runs the teacher to fill the logit caches (distill/scoring.py): pytorch | onnx (its ONNX Runtime
    # fp32 O2 graph, checked against PyTorch on dev: CPU only) | onnx-int8 (the portable int8 graph, held to
    # the export's int8 gate; its targets differ from fp32's by about 0.1 relative logit error)
    scorer: str = "pytorch"

    # a resumed teacher may also change what is scored after training, and where its lr came from
    resume_neutral: ClassVar[tuple[str, ...]] = TrainConfig.resume_neutral + SCORING_ONLY + PROVENANCE

    def data_spec(self) -> DataSpec:
        """Where the rows come from; the student reads the same DataSpec from distill.json."""
        return DataSpec(path=self.data, text_column=self.text_column, text_pair_column=self.text_pair_column,
                        label_column=self.label_column, max_train_rows=self.max_train_rows, seed=self.seed,
                        encoding=self.encoding, on_bad_rows=self.on_bad_rows, dedupe=self.dedupe)

    def ner_spec(self) -> NerSpec:
        """Where the sentences come from (task ner); the student reads the same NerSpec from distill.json."""
        return NerSpec(path=self.data, tag_scheme=self.tag_scheme, repair_tags=self.repair_tags,
                       max_train_rows=self.max_train_rows, seed=self.seed, encoding=self.encoding,
                       on_bad_rows=self.on_bad_rows)


# The presets. Each chooses its checkpoint on training rows held back (holdout_rows; the student
# presets hold back the same rows), so the teacher's dev figure is as honest as its students'.
# quick: sized for a 2-core CPU (measured in docs/RESULTS.md); full: the whole
# training split for several epochs, meant for a GPU; mpnet: the 110M all-mpnet-base-v2 teacher
# (`make mpnet` first) on the quick preset's rows, sized for a 2-core CPU: measured there (SST-2,
# docs/RESULTS.md) at 13.3 samples/s in training and 59 rows/s in scoring, it stopped early at 1.5
# of its 2 epochs and took 26.5 minutes with its 29,821 transfer rows scored: the hour a 2-core
# machine can give it also covers the students. Transfer sources a dataset lacks are skipped.
PRESETS = {
    "quick": TeacherConfig(max_train_rows=8000, max_length=64, epochs=2, batch_size=32, preset="quick",
                           evals_per_epoch=2, patience=2, transfer=[UNUSED_TRAIN, UNLABELED], transfer_rows=40000,
                           holdout_rows=1000),
    "full": TeacherConfig(max_train_rows=None, max_length=128, epochs=3, batch_size=32, preset="full",
                          evals_per_epoch=4, patience=4, save_every_steps=500, transfer=[UNLABELED, AUGMENTED],
                          augment_factor=4, holdout_rows=2000),
    "mpnet": TeacherConfig(base_model="mpnet", max_train_rows=8000, max_length=64, epochs=2, batch_size=32,
                           preset="mpnet", evals_per_epoch=2, patience=2, transfer=[UNUSED_TRAIN, UNLABELED],
                           transfer_rows=20000, holdout_rows=1000),
}

# --task=ner starts from these instead (parse_args): taggers learn from fewer, shorter examples,
# so more passes (6 epochs at batch 16: WNUT-16's teacher peaked at epoch 4.5 of 6, docs/RESULTS.md),
# the schedule run to its end (a tagger's entity F1 sits at 0 for its first epochs while it
# predicts only O: with patience 4, 120 WNUT sentences stopped at epoch 2.6 keeping a 0.004-F1
# checkpoint), and checkpoints chosen on 200 held-back training sentences (the same ones the
# students hold back), dev only reported. Transfer sets: the training sentences max_train_rows
# left out and the dataset's unlabeled file, when there are any (distill/ner_transfer.py).
NER_PRESETS = {
    name: dataclasses.replace(cfg, task="ner", batch_size=16, epochs=6, evals_per_epoch=2, patience=0,
                              holdout_rows=200, transfer=[UNUSED_TRAIN, UNLABELED], augment_factor=0)
    for name, cfg in PRESETS.items()
}

# The default peak learning rate of each strategy: the best dev accuracy of a sweep on the quick
# preset (SST-2, 8,000 rows, 2 epochs, batch 32, seed 0, one teacher per strategy and lr: dev
# accuracy below, runs/sweep/<strategy>_<lr>/teacher/metrics.json; docs/RESULTS.md, "Strategy
# defaults", keeps the table). The lr is the only default that
# differs by strategy: warm-up, weight decay (LoRA matrices included) and head initialisation are
# shared, none of them measured per strategy.
STRATEGY_DEFAULTS = {
    "full": 1e-4,  # 1e-4 0.8658 (runs/demo); sweep 5e-5 and 2e-4 unfinished (5e-5: 0.8544 at step 375/500)
    "top-n": 1e-3,  # sweep (top_n=2): 1e-4 0.8440, 3e-4 0.8486, 1e-3 0.8521, 3e-3 0.8142
    "frozen": 3e-3,  # pooling=mean: 1e-3 0.8085, 3e-3 0.8085, 1e-2 0.7982, 3e-2 0.7626; pooling=cls: 3e-3 0.7374,
    #                  1e-2 0.7385, 3e-2 0.7236 (flat: the [CLS] features are the limit, POOLING_DEFAULTS)
    "lora": 2e-3,  # sweep (r=8, alpha 16): 1e-4 0.7683, 5e-4 0.8257, 1e-3 0.8475, 2e-3 0.8509, 5e-3 0.8188;
    #                r=16 at 2e-3: 0.8486
}
# The full preset (whole split, max length 128, ~20x the quick preset's steps; meant for a GPU, so
# not swept) takes the quick default times this: half, the ratio the full strategy's lr had between
# the two presets before the sweep (5e-5 : 1e-4). A rule, not a measurement.
# The mpnet preset takes half as well (full: 5e-5, the usual fine-tuning rate of a 12-layer base
# model): one run at 5e-5, not a sweep.
PRESET_LR_SCALE = {"quick": 1.0, "full": 0.5, "mpnet": 0.5}
# all-MiniLM-L6-v2 was trained for mean pooling: frozen, its [CLS] state is a poor feature (linear
# probe 0.755 on SST-2 dev against 0.805 mean-pooled, benchmarks/frozen_pooling.py), so a frozen
# teacher reads the tokens' mean through a fixed block (append_mean_pooling_layer).
POOLING_DEFAULTS = {"frozen": "mean"}


def resolve_defaults(cfg: TeacherConfig) -> TeacherConfig:
    """``cfg`` with its lr decided, in the one place that decides it: a given lr is kept
    (lr_source "given"); None takes ``STRATEGY_DEFAULTS[strategy] * PRESET_LR_SCALE[preset]`` and
    lr_source says so; pooling None takes ``POOLING_DEFAULTS``. A resolved config (one read back
    from train_config.json) is returned as is."""
    if cfg.pooling is None:  # ner: no pooling (the head reads every token)
        pooling = POOLING_DEFAULTS.get(cfg.strategy, "cls") if cfg.task == "classification" else "cls"
        cfg = dataclasses.replace(cfg, pooling=pooling)
    if cfg.lr is not None:
        return cfg if cfg.lr_source else dataclasses.replace(cfg, lr_source="given")
    if cfg.strategy not in STRATEGY_DEFAULTS:
        raise ConfigError(f"--strategy: unknown strategy {cfg.strategy!r}; choose one of {', '.join(STRATEGY_DEFAULTS)}")
    if cfg.preset not in PRESET_LR_SCALE:
        raise ConfigError(f"--preset: unknown preset {cfg.preset!r}; choose one of {', '.join(PRESET_LR_SCALE)}")
    base, scale = STRATEGY_DEFAULTS[cfg.strategy], PRESET_LR_SCALE[cfg.preset]
    source = (f"default for {cfg.strategy}, {cfg.preset} preset: {base:g} (STRATEGY_DEFAULTS, lr sweep in "
              f"docs/RESULTS.md){f' x {scale:g} (PRESET_LR_SCALE)' if scale != 1 else ''}")
    return dataclasses.replace(cfg, lr=base * scale, lr_source=source)


def stage_dir(run_dir: Path) -> Path:
    return layout.teacher_dir(run_dir)


def run(cfg: TeacherConfig, run_dir: Path) -> dict:
    """Fine-tune, save the best model, write the logit caches; returns metrics.json's content."""
    if cfg.task not in TASKS:
        raise ConfigError(f"--task={cfg.task}: expected one of {', '.join(TASKS)}")
    cfg = resolve_defaults(cfg)  # lr=None -> the strategy's default; train_config.json keeps which
    print(f"teacher: lr {cfg.lr:g} ({cfg.lr_source})")
    out = stage_dir(run_dir)
    with stage_lock(out):  # one writer of teacher/ (training, its checkpoint and the logit cache) at a time
        if cfg.task == "ner":  # token classification: the same strategies, loop and cache, per word
            from teachers.ner import run_ner

            return run_ner(cfg, out, trained=already_trained(out, cfg))
        return run_classification(cfg, out)


def run_classification(cfg: TeacherConfig, out: Path) -> dict:
    """``run`` for task classification (``cfg`` resolved, ``out`` locked by the caller)."""
    from transformers import AutoTokenizer

    device = setup_distributed(cfg.device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.manual_seed(cfg.seed)
    spec = cfg.data_spec()
    source = resolve_model_name(cfg.base_model)  # a base model that is no folder: one line, before the data
    data = load_dataset(spec)  # before anything is written: bad data leaves no half-made run behind
    claim_run_dir(out.parent, stage="teacher")
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        write_skipped_rows(out, data)
    names = data.label_map.names
    tokenizer = AutoTokenizer.from_pretrained(source)
    sources, notes = resolve_sources(cfg.transfer, spec=spec, dataset=data, text_column=cfg.transfer_text_column,
                                     max_rows=cfg.transfer_rows, augment_factor=cfg.augment_factor,
                                     mask_token=tokenizer.mask_token or "[MASK]", seed=cfg.seed)
    trained = already_trained(out, cfg)
    if trained:  # sets scored earlier stay (python -m distill score adds more)
        earlier = read_model_info(out).transfer
        sources = {**{n: {k: v for k, v in e.items() if k != "counts"} for n, e in earlier.items()}, **sources}
    for note in notes:
        print(note)
    transfer = {name: read_transfer(source, dataset=data, spec=spec) for name, source in sources.items()}
    model = load_classifier(cfg.base_model, id2label=data.label_map.id2label, dropout=cfg.dropout)
    if cfg.pooling not in ("cls", "mean") or (cfg.pooling == "mean" and cfg.strategy != "frozen"):
        raise ConfigError(f"--pooling={cfg.pooling!r}: cls, or mean with --strategy=frozen (another strategy "
                          "would train the fixed pooling block)")
    if cfg.pooling == "mean":
        append_mean_pooling_layer(model)  # frozen: the head then reads the mean-pooled states (modeling.py)
    model = apply_strategy(model, strategy=cfg.strategy, top_n=cfg.top_n, lora_r=cfg.lora_r,
                           lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout).to(device)
    params = count_parameters(model)
    train_rows, eval_rows, eval_name = holdout_split(data.train, cfg.holdout_rows, seed=spec.seed, dev=data.dev)
    print(f"teacher: {cfg.base_model} | strategy {cfg.strategy} | {params['parameters']:,} parameters, "
          f"{params['trainable_parameters']:,} trainable | {len(train_rows)} train rows, checkpoints chosen on "
          f"{len(eval_rows)} {eval_name} rows | {len(data.dev)} dev | {device}")
    info = ModelInfo(role="teacher", task="classification", labels=names, max_length=cfg.max_length, data=spec,
                     architecture={"base_model": cfg.base_model, "strategy": cfg.strategy,
                                   **({"top_n": cfg.top_n} if cfg.strategy == "top-n" else {}),
                                   **({"lora_r": cfg.lora_r} if cfg.strategy == "lora" else {}),
                                   **({"pooling": "mean (fixed last block)"} if cfg.pooling == "mean" else {})},
                     transfer={name: {**source, "counts": transfer[name][1]} for name, source in sources.items()},
                     long_text=cfg.long_text_settings().to_dict())

    long_text = cfg.long_text_settings()
    train_set = encode(tokenizer, train_rows, data.label_map.encode(train_rows), cfg.max_length, long_text=long_text)
    eval_set = encode(tokenizer, eval_rows, data.label_map.encode(eval_rows), cfg.max_length, long_text=long_text)
    dev_set = encode(tokenizer, data.dev, data.label_map.encode(data.dev), cfg.max_length, long_text=long_text)
    data_checks, lines = stage_data_checks(
        train=train_rows, dev=data.dev, train_lengths=train_set.source_lengths, dev_lengths=dev_set.source_lengths,
        max_length=cfg.max_length, cut=long_text.effect(tokenizer, cfg.max_length, train_set, dev_set),
        deduped=data.deduped)
    for line in lines if rank == 0 else []:
        print(line)

    def loss_fn(outputs, rows, batch):
        labels = torch.as_tensor(train_set.labels[rows], device=device)  # (B,)
        ce = F.cross_entropy(outputs.logits.float(), labels, ignore_index=IGNORE_INDEX)
        return ce, {"ce": ce.item()}

    def save_best(trained, directory):
        save_model_dir(merge_for_saving(_copy_for_merge(trained, cfg.strategy)), tokenizer, directory, config=cfg,
                       info=info)

    start = time.perf_counter()
    if trained:
        print(f"teacher: {out} is already trained with these settings; scoring only what is missing")
        summary = json.loads((out / "metrics.json").read_text())["loop"]
        if rank == 0:
            write_model_info(out, info)  # transfer sources added since are what later stages read
    else:
        evaluate = classification_evaluate(eval_set, names, batch_size=cfg.eval_batch_size, device=device,
                                           amp=cfg.amp and device.type == "cuda")
        summary = train(model, cfg=cfg, train_set=train_set, evaluate=evaluate, eval_name=eval_name,
                        loss_fn=loss_fn, out_dir=out, save_best=save_best)
        summary = {k: summary[k] for k in ("train_seconds", "samples_seen", "best_step", "total_steps",
                                           "stopped_early", "world_size", "history")}
    wall = time.perf_counter() - start

    # Score with the best checkpoint as saved (the exact weights the fingerprint hashes); every rank
    # scores its share of the chunks.
    best = load_classifier(str(out), id2label=data.label_map.id2label).to(device)
    dev_logits = predict_logits(best, dev_set, batch_size=cfg.eval_batch_size, device=device, amp=cfg.amp)  # (D, C)
    scorer = make_scorer(cfg, best, out, device=device, dev_set=dev_set, dev_logits=dev_logits)
    cache_report = {}
    for name, split in {"train": data.train, **{n: rows for n, (rows, _) in transfer.items()}}.items():
        cache_report[name] = score_split(
            best, tokenizer, teacher_dir=out, info=info, name=name, split=split,
            data_files=split_files(name, data, sources.get(name)), device=device, batch_size=cfg.eval_batch_size,
            dtype=cfg.cache_dtype, chunk_rows=cfg.cache_chunk_rows, amp=cfg.amp, max_chunks=cfg.cache_max_chunks,
            scorer=scorer)
        info.scorers[name] = scorer.name
        if cfg.cache_cls:  # a second pass: the states need output_hidden_states, the logits do not
            cache_report[cls_cache_name(name)] = score_split(
                best, tokenizer, teacher_dir=out, info=info, name=name, split=split,
                data_files=split_files(name, data, sources.get(name)), device=device, batch_size=cfg.eval_batch_size,
                dtype="float16", chunk_rows=cfg.cache_chunk_rows, amp=cfg.amp, max_chunks=cfg.cache_max_chunks,
                what="cls")
        r = cache_report[name]
        if rank == 0 and not r["complete"]:
            print(f"cache {name}: time box reached after {r['rows_scored_this_call']} of {r['rows']} rows "
                  f"({r['rows_per_s']:.0f} rows/s, {r['processes']} process(es)); rerun to score the rest")
        elif rank == 0:
            print(f"cache {name}: {r['rows']} rows, {r['bytes'] / 1e6:.2f} MB {r['dtype']} in {r['seconds']:.1f}s "
                  f"({r['rows_per_s']:.0f} rows/s, {r['processes']} process(es)) -> {out / 'logits' / (name + '.npy')}")
    if rank != 0:
        return {}
    write_model_info(out, info)  # which scorer made each cache: the student rebuilds its fingerprints from it
    metrics = classification_metrics(dev_logits, dev_set.document_labels, names)
    result = {
        **metrics, **count_parameters(best), "trainable_parameters": params["trainable_parameters"],
        "strategy": cfg.strategy, "base_model": cfg.base_model, "train_rows": len(train_rows),
        "checkpoint_chosen_on": eval_name, "eval_rows": len(eval_rows),
        "train_time_s": round(summary["train_seconds"], 2), "wall_time_s": round(wall, 2),
        "train_samples_per_s": round(summary["samples_seen"] / max(summary["train_seconds"], 1e-9), 2),
        "best_step": summary["best_step"], "total_steps": summary["total_steps"],
        "stopped_early": summary["stopped_early"], "device": str(device), "cache": cache_report,
        "scorer": {"name": scorer.name, **scorer.check},
        "transfer": {name: entry["counts"] for name, entry in info.transfer.items()}, "transfer_notes": notes,
        "skipped_rows": len(data.skipped), "fallback_decoded": data.fallback_decoded, "peak_rss_mb": peak_rss_mb(),
        "long_text": info.long_text, "train_model_rows": len(train_set), "data_checks": data_checks,
        "history": summary["history"], "loop": summary,
    }
    finish_stage(out, result)  # metrics.json, the model card, the resume checkpoint dropped
    print(f"teacher done: dev accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
          f"train {result['train_time_s']:.0f}s at {result['train_samples_per_s']:.1f} samples/s -> {out}")
    return result


def already_trained(out: Path, cfg: TeacherConfig) -> bool:
    """True when ``out`` holds a finished teacher trained with ``cfg``'s training settings. A
    finished teacher with other settings is an error: expensive work is never overwritten."""
    if not (out / "metrics.json").exists() or (out / "checkpoint").exists():
        return False
    # both resolved: a config saved before a default existed (lr, pooling) compares by the value it had
    saved, cfg = resolve_defaults(load_config(TeacherConfig, out / "train_config.json")), resolve_defaults(cfg)
    changed = [f"{k}: {getattr(saved, k)!r} -> {getattr(cfg, k)!r}" for k in asdict(cfg)
               if k not in SCORING_ONLY + PROVENANCE + ("restart",) and getattr(saved, k) != getattr(cfg, k)]
    if changed:
        raise ConfigError(f"{out}: holds a teacher trained with other settings ({'; '.join(changed)}); "
                          "use another --run-dir, or delete that folder to train again")
    return True


def make_scorer(cfg: TeacherConfig, model, out: Path, *, device: torch.device, dev_set, dev_logits) -> Scorer:
    """What fills the logit caches (distill/scoring.py): PyTorch eager, or the teacher's own ONNX
    Runtime graph after it reproduced ``dev_logits`` (D, C) on the dev rows (printed with its figures)."""
    kind = resolve_scorer(cfg.scorer, device)
    if kind == "pytorch":
        return pytorch_scorer(model, device=device, amp=cfg.amp)
    scorer = onnx_scorer(out, kind=kind, threads=torch.get_num_threads(), dev=dev_set, reference=dev_logits,
                         batch_size=cfg.eval_batch_size)
    print(f"teacher: scoring with {scorer.name} ({scorer.check['graph']}): dev max |Δlogit| "
          f"{scorer.check['max_abs_diff']:.2e}, agreement {scorer.check['agreement']:.4f} on "
          f"{scorer.check['dev_rows']} rows")
    return scorer


def _copy_for_merge(model, strategy: str):
    # merging LoRA rewrites the weights in place; merge a copy so training can go on
    if strategy != "lora":
        return model
    import copy

    return copy.deepcopy(model)


def parse_args(argv: list[str]) -> tuple[TeacherConfig, Path]:
    parser = argparse.ArgumentParser(prog="python -m distill teacher", description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="dataset directory (train + dev) or hub name")
    parser.add_argument("--run-dir", default="runs/demo", help="output directory of the run")
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    args, overrides = parser.parse_known_args(argv)
    cfg = PRESETS[args.preset]
    if apply_overrides(cfg, overrides).task == "ner":  # token classification: its own presets
        cfg = NER_PRESETS[args.preset]
    if args.data:
        cfg = dataclasses.replace(cfg, data=args.data)
    return apply_overrides(cfg, overrides), Path(args.run_dir)


def main(argv: list[str]) -> int:
    if "--task=lm" in argv:  # a causal LM: its own config and stage (teachers/lm.py)
        from teachers.lm import main as lm_main

        return lm_main(argv)
    cfg, run_dir = parse_args(argv)
    run(cfg, run_dir)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0

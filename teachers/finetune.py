"""The teacher stage: fine-tune a classifier, keep the best checkpoint, cache its logits.

    python -m distill teacher --data data/sst2 --run-dir runs/demo --preset quick [--key=value ...]

Writes ``<run-dir>/teacher/``: the HF model and tokenizer, ``distill.json`` (what later stages
need: labels, max length, the data and the transfer sets), ``train_config.json``,
``metrics.json``, and ``logits/``: the logit cache of the training split and of every transfer set
(label-free text the teacher scores for the student; distill/transfer.py).

This module holds the config, its presets and defaults, the one dispatch on the task (``run``)
and ``ClassificationTeacher``, classification's parts of the stage skeleton (teachers/stage.py);
NER's are in teachers/ner.py, the causal LM's own stage in teachers/lm.py.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from distill import layout
from distill.cache import CacheSettings
from distill.config import ConfigError, apply_overrides, load_config
from distill.data import DEFAULT_DATA, Dataset, DataSpec, LabelMap, Split, load_dataset
from distill.inspect import stage_data_checks
from distill.kd_defaults import IGNORE_INDEX
from distill.lock import stage_lock
from distill.metrics import classification_metrics
from distill.modeling import PACKAGED, TASKS, append_mean_pooling_layer, load_classifier
from distill.ner_data import NerSpec
from distill.scoring import (
    SavedTeacher,
    Scorer,
    cls_cache_name,
    onnx_scorer,
    pytorch_scorer,
    resolve_scorer,
    score_split,
    split_files,
)
from distill.tokens import Encoded, LongText, encode
from distill.trainer import TrainConfig, classification_evaluate, holdout_split, predict_logits
from distill.transfer import AUGMENTED, UNLABELED, UNUSED_TRAIN, read_transfer, resolve_sources
from teachers.stage import Opened, Rows, run_teacher

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

    def cache_settings(self) -> CacheSettings:
        """How this teacher fills its caches: the one place the cache settings are read from the config."""
        return CacheSettings(dtype=self.cache_dtype, chunk_rows=self.cache_chunk_rows, max_chunks=self.cache_max_chunks,
                             batch_size=self.eval_batch_size, amp=self.amp)

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
    # few labels: the mpnet teacher on every labelled row there is (a few hundred), 100 of them held back,
    # and up to 20,000 label-free rows scored for its students (the student preset few). Measured with
    # --max_train_rows=600 on SST-2: dev 0.8922 (docs/RESULTS.md)
    "few": TeacherConfig(base_model="mpnet", max_train_rows=None, max_length=64, epochs=2, batch_size=32,
                         preset="few", evals_per_epoch=2, patience=2, transfer=[UNUSED_TRAIN, UNLABELED],
                         transfer_rows=20000, holdout_rows=100),
}

# --task=ner starts from these instead (parse_args): taggers learn from fewer, shorter examples,
# so more passes (16 epochs at batch 16: on WNUT-16's 1,636 sentences 6 epochs gave dev entity F1
# 0.4806 and 16 gave 0.5684, best at epoch 10.5, the rare types learnt; its 3-layer students gained
# about 3 points from the better teacher: docs/RESULTS.md, "E. A teacher trained longer"),
# the schedule run to its end (a tagger's entity F1 sits at 0 for its first epochs while it
# predicts only O: with patience 4, 120 WNUT sentences stopped at epoch 2.6 keeping a 0.004-F1
# checkpoint), and checkpoints chosen on 200 held-back training sentences (the same ones the
# students hold back), dev only reported. Transfer sets: the training sentences max_train_rows
# left out and the dataset's unlabeled file, when there are any (distill/ner_transfer.py).
NER_PRESETS = {
    name: dataclasses.replace(cfg, task="ner", batch_size=16, epochs=16, evals_per_epoch=2, patience=0,
                              holdout_rows=200, transfer=[UNUSED_TRAIN, UNLABELED], augment_factor=0)
    for name, cfg in PRESETS.items() if name != "few"  # as students/config.py's: no tagger preset few
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
PRESET_LR_SCALE = {"quick": 1.0, "full": 0.5, "mpnet": 0.5, "few": 0.5}  # few: mpnet's
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
        trained = already_trained(out, cfg)
        if cfg.task == "ner":  # token classification: the same strategies, loop and cache, per word
            from teachers.ner import NerTeacher

            return run_teacher(NerTeacher(), cfg, out, trained=trained)
        return run_teacher(ClassificationTeacher(), cfg, out, trained=trained)


class ClassificationTeacher:
    """Task classification's parts of the teacher stage (teachers/stage.py, ``TeacherTask``): a
    label per text (or text pair), long texts cut as ``long_text`` says, checkpoints chosen on
    accuracy, one row of logits per text cached by the scorer ``cfg.scorer`` names (and, with
    ``cache_cls``, the per-layer [CLS] states)."""

    def load(self, cfg: TeacherConfig) -> tuple[DataSpec, Dataset, LabelMap]:
        spec = cfg.data_spec()
        data = load_dataset(spec)
        return spec, data, data.label_map

    def transfer_sources(self, cfg: TeacherConfig, spec: DataSpec, data: Dataset, tokenizer) -> tuple[dict, list[str]]:
        return resolve_sources(cfg.transfer, spec=spec, dataset=data, file_keys={"text_column": cfg.transfer_text_column},
                               max_rows=cfg.transfer_rows, augment_factor=cfg.augment_factor,
                               mask_token=tokenizer.mask_token or "[MASK]", seed=cfg.seed)

    def read_transfer(self, source: dict, data: Dataset, spec: DataSpec) -> tuple[Split, dict]:
        return read_transfer(source, dataset=data, spec=spec)

    def model(self, cfg: TeacherConfig, labels: LabelMap):
        model = load_classifier(cfg.base_model, id2label=labels.id2label, dropout=cfg.dropout)
        if cfg.pooling not in ("cls", "mean") or (cfg.pooling == "mean" and cfg.strategy != "frozen"):
            raise ConfigError(f"--pooling={cfg.pooling!r}: cls, or mean with --strategy=frozen (another strategy "
                              "would train the fixed pooling block)")
        if cfg.pooling == "mean":
            append_mean_pooling_layer(model)  # frozen: the head then reads the mean-pooled states (modeling.py)
        return model

    def long_text(self, cfg: TeacherConfig) -> LongText:
        return cfg.long_text_settings()

    def rows(self, run: Opened, params: dict) -> Rows:
        cfg, data, tokenizer = run.cfg, run.data, run.tokenizer
        train_rows, eval_rows, eval_name = holdout_split(data.train, cfg.holdout_rows, seed=run.spec.seed, dev=data.dev)
        long_text = cfg.long_text_settings()

        def encoded(split: Split) -> Encoded:
            return encode(tokenizer, split, data.label_map.encode(split), cfg.max_length, long_text=long_text)

        train_set, dev_set = encoded(train_rows), encoded(data.dev)
        eval_set = dev_set if eval_name == "dev" else encoded(eval_rows)
        checks, lines = stage_data_checks(
            train=train_rows, dev=data.dev, train_lengths=train_set.source_lengths, dev_lengths=dev_set.source_lengths,
            max_length=cfg.max_length, cut=long_text.effect(tokenizer, cfg.max_length, train_set, dev_set),
            deduped=data.deduped)
        opening = (f"teacher: {cfg.base_model} | strategy {cfg.strategy} | {params['parameters']:,} parameters, "
                   f"{params['trainable_parameters']:,} trainable | {len(train_rows)} train rows, checkpoints chosen on "
                   f"{len(eval_rows)} {eval_name} rows | {len(data.dev)} dev | {run.device}")
        return Rows(train=train_rows, eval=eval_rows, eval_name=eval_name, train_set=train_set, eval_set=eval_set,
                    dev_set=dev_set, batches=train_set, opening=opening, lines=lines, checks=checks)

    def loss(self, rows: Rows, device: torch.device):
        def loss_fn(outputs, batch_rows, batch):
            labels = torch.as_tensor(rows.train_set.labels[batch_rows], device=device)  # (B,)
            ce = F.cross_entropy(outputs.logits.float(), labels, ignore_index=IGNORE_INDEX)
            return ce, {"ce": ce.item()}

        return loss_fn

    def evaluate(self, run: Opened, rows: Rows):
        return classification_evaluate(rows.eval_set, run.labels.names, batch_size=run.cfg.eval_batch_size,
                                       device=run.device, amp=run.cfg.amp and run.device.type == "cuda")

    def dev_logits(self, run: Opened, teacher: SavedTeacher, rows: Rows) -> np.ndarray:
        return predict_logits(teacher.model, rows.dev_set, batch_size=run.cfg.eval_batch_size, device=teacher.device,
                              amp=run.cfg.amp)  # (D, C)

    def score(self, run: Opened, teacher: SavedTeacher, rows: Rows, dev_logits: np.ndarray) -> dict:
        """Every set's logit cache (and, ``cache_cls``, its [CLS]-state cache), by the scorer."""
        cfg = run.cfg
        scorer = make_scorer(cfg, teacher.model, run.out, device=run.device, dev_set=rows.dev_set, dev_logits=dev_logits)
        settings, caches = cfg.cache_settings(), {}
        for name, split in run.sets().items():
            files = split_files(name, run.data, run.sources.get(name))
            caches[name] = score_split(teacher, name=name, split=split, data_files=files, settings=settings,
                                       scorer=scorer)
            if cfg.cache_cls:  # a second pass: the states need output_hidden_states, the logits do not
                caches[cls_cache_name(name)] = score_split(teacher, name=name, split=split, data_files=files,
                                                           settings=settings, what="cls")
            if run.rank == 0:
                print(cache_line(name, caches[name], run.out))
        return {"cache": caches, "scorer": {"name": scorer.name, **scorer.check}}

    def metrics(self, run: Opened, rows: Rows, dev_logits: np.ndarray) -> dict:
        return {**classification_metrics(dev_logits, rows.dev_set.document_labels, run.labels.names),
                "long_text": self.long_text(run.cfg).to_dict(), "train_model_rows": len(rows.train_set),
                "data_checks": rows.checks}

    def done_line(self, result: dict, out: Path) -> str:
        return (f"teacher done: dev accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f}, "
                f"train {result['train_time_s']:.0f}s at {result['train_samples_per_s']:.1f} samples/s -> {out}")


def cache_line(name: str, report: dict, out: Path) -> str:
    """What one set's scoring did (``score_split``'s report), in a line."""
    if not report["complete"]:
        return (f"cache {name}: time box reached after {report['rows_scored_this_call']} of {report['rows']} rows "
                f"({report['rows_per_s']:.0f} rows/s, {report['processes']} process(es)); rerun to score the rest")
    return (f"cache {name}: {report['rows']} rows, {report['bytes'] / 1e6:.2f} MB {report['dtype']} in "
            f"{report['seconds']:.1f}s ({report['rows_per_s']:.0f} rows/s, {report['processes']} process(es)) -> "
            f"{out / 'logits' / (name + '.npy')}")


def already_trained(out: Path, cfg: TeacherConfig) -> bool:
    """True when ``out`` holds a finished teacher trained with ``cfg``'s training settings. A
    finished teacher with other settings is an error: expensive work is never overwritten."""
    if not (out / layout.METRICS_FILE).exists() or (out / "checkpoint").exists():
        return False
    # both resolved: a config saved before a default existed (lr, pooling) compares by the value it had
    saved, cfg = resolve_defaults(load_config(TeacherConfig, out / layout.TRAIN_CONFIG_FILE)), resolve_defaults(cfg)
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


def parse_args(argv: list[str]) -> tuple[TeacherConfig, Path]:
    parser = argparse.ArgumentParser(prog="python -m distill teacher", description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="dataset directory (train + dev) or hub name")
    parser.add_argument("--run-dir", default="runs/demo", help="output directory of the run")
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    args, overrides = parser.parse_known_args(argv)
    cfg = PRESETS[args.preset]
    if apply_overrides(cfg, overrides).task == "ner":  # token classification: its own presets
        if args.preset not in NER_PRESETS:
            raise ConfigError(f"--preset {args.preset}: no such preset for --task=ner; choose one of "
                              f"{', '.join(sorted(NER_PRESETS))}")
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

"""The student stage's flat config and presets (read by students/build.py and students/distill.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from distill.kd_defaults import DEFAULT_TEMPERATURE, DEFAULT_W_CE, DEFAULT_W_KD
from distill.modeling import PACKAGED
from distill.trainer import TrainConfig

CE_SCHEDULES = ("epochs", "matched")  # StudentConfig.ce_schedule


@dataclass
class StudentConfig(TrainConfig):
    teacher_dir: str | None = None  # the teacher stage's output (None: <run-dir>/teacher)
    # the student model
    student: str = "subset"  # subset (layers of the teacher) | pretrained | fresh
    keep_layers: int = 3  # subset: how many teacher layers to keep, evenly spaced
    layer_ids: list[int] = field(default_factory=list)  # subset: explicit layer indices (overrides keep_layers)
    pretrained: str = PACKAGED  # pretrained: a model folder or hub name
    pretrained_layers: int | None = None  # pretrained: keep its first N layers (None: all; students/build.py)
    fresh_layers: int = 4  # fresh: encoder layers
    fresh_hidden: int = 256  # fresh: hidden size (FFN is 4x)
    fresh_heads: int = 4  # fresh: attention heads
    trim_vocab: bool = False  # keep only the embedding rows of tokens the training rows use (distill/trim_vocab.py)
    freeze_embeddings: bool = False  # keep the pretrained word-embedding table as it is (students/build.py: speed)
    # the loss: w_kd * T² * KL + w_ce * CE + w_hidden * hidden-state MSE + w_attn * attention KL
    temperature: float = DEFAULT_TEMPERATURE  # softening T of the KD term
    w_kd: float = DEFAULT_W_KD  # weight of T² * KL(teacher ‖ student)
    w_ce: float = DEFAULT_W_CE  # weight of CE with the hard labels
    w_hidden: float = 0.0  # weight of the hidden-state loss between mapped layers (teacher runs online)
    w_attn: float = 0.0  # weight of the attention-distribution loss between mapped layers (teacher online)
    layer_source: str = "online"  # online: run the teacher for the layer losses | cached: its cached [CLS] states
    # the rows: the labelled training rows, plus the teacher's scored transfer sets as KD-only rows
    use_transfer: bool = True  # add the transfer sets the teacher scored (teacher/distill.json)
    transfer: list[str] = field(default_factory=list)  # which of them (empty: all)
    transfer_rows: int | None = None  # at most this many transfer rows in all (seeded sample; None: all)
    pseudo_labels: bool = False  # transfer rows get the teacher's argmax as a hard label (self-training)
    online: bool = False  # run the teacher every step instead of reading its cached logits
    # the CE-only control, trained beside the KD student into <run-dir>/student_ce
    student_ce: bool = True  # also train the control: the same student on the labelled rows, CE only
    ce_epochs: int | None = None  # the control's epochs (None: epochs)
    # the control's early stopping (0: never: it runs its schedule to the end and keeps its best checkpoint,
    # as compare's CE arm does; stopping at the first plateau left it at the peak lr and flattered KD)
    ce_patience: int = 0
    # the control's schedule: epochs (--ce_epochs passes over its labelled rows) | matched (the optimizer steps
    # and evaluations the KD student was planned, at least --ce_epochs passes: compare's ce arm; with many
    # transfer rows and few labelled ones, a fixed 4 passes starve the control and flatter KD)
    ce_schedule: str = "epochs"  # one of CE_SCHEDULES
    # also log dev accuracy at every evaluation (history's eval.dev_accuracy: an accuracy-against-passes
    # curve); never used to choose a checkpoint
    eval_dev: bool = False

    # the control's settings are resolved into its own run's config (students/distill.py): neither
    # changes the KD student's run, so a resume of either may change them
    resume_neutral: ClassVar[tuple[str, ...]] = TrainConfig.resume_neutral + ("student_ce", "ce_epochs", "ce_patience",
                                                                         "ce_schedule")


# Checkpoints are chosen on 1,000 training rows held back (the teacher presets hold back the same
# rows: the data seed draws them), so dev is only reported; the CE-only control runs compare's
# protocol (4 epochs, the best of its 16 holdout checkpoints, no early stop).
PRESETS = {
    "quick": StudentConfig(max_length=64, epochs=1, batch_size=32, lr=1e-4, evals_per_epoch=4, patience=3,
                           ce_epochs=4, holdout_rows=1000),
    "full": StudentConfig(max_length=128, epochs=3, batch_size=32, lr=5e-5, evals_per_epoch=2, patience=4,
                          save_every_steps=500, ce_epochs=4, holdout_rows=2000),
    # under the mpnet teacher (teacher preset mpnet): the quick schedule, the student the packaged
    # MiniLM-L6 with its own tokenizer (a layer subset of a 768-wide teacher would not be small)
    "mpnet": StudentConfig(max_length=64, epochs=1, batch_size=32, lr=1e-4, evals_per_epoch=4, patience=3,
                           ce_epochs=4, holdout_rows=1000, student="pretrained"),
    # few labels (a few hundred rows) and many label-free ones, under the teacher preset few: the transfer
    # rows carry the teacher's argmax as a label AND its soft targets (w_kd = w_ce = 0.5), 3 passes,
    # MiniLM-L6's first 2 layers with its embeddings frozen, checkpoints on the teacher's 100 held-back
    # rows, and a control given the student's steps and evaluations. On 500 labelled SST-2 rows and 20,000
    # label-free ones, 3 seeds: 81.23 against pseudo-labels alone 79.63, KD alone 74.62, CE-only 72.29
    # (docs/RESULTS.md, "Few labels: the preset")
    "few": StudentConfig(max_length=64, epochs=3, batch_size=32, lr=1e-4, evals_per_epoch=4, patience=0,
                         ce_epochs=4, ce_schedule="matched", holdout_rows=100, pseudo_labels=True,
                         student="pretrained", pretrained_layers=2, freeze_embeddings=True),
}

# A teacher whose distill.json says task ner starts its students from these (students/distill.py):
# the KD student gets the passes its CE-only control gets (the same 8 epochs at least: with
# transfer sentences its epochs are longer), each runs its lr schedule to the end (no early stop),
# and both choose the best of their 16 checkpoints on the 200 training sentences the teacher held
# back, dev only reported. (The classification presets' 1 KD epoch against 3 CE epochs left the NER
# KD student 8 points under its control on a 3,000-sentence CoNLL set; with the schedule run to its
# end, 8 epochs, WNUT-16's students reached their best late: docs/RESULTS.md.)
# (No tagger preset few: on WNUT-16 the teacher's argmax tags did not help a tagger, docs/RESULTS.md.)
NER_PRESETS = {
    name: dataclasses.replace(cfg, epochs=8, ce_epochs=8, evals_per_epoch=2, patience=0, holdout_rows=200)
    for name, cfg in PRESETS.items() if name != "few"
}

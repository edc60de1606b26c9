"""Flat dataclass configs: ``--key=value`` overrides that reject unknown keys, saved as JSON.

Each stage defines its own dataclass (one comment per field) in its module; the helpers here
apply overrides, type-convert them from the field's annotation, and write/read the JSON copy
that sits beside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from distill.errors import PipelineError

C = TypeVar("C")


class ConfigError(ValueError, PipelineError):
    """An unknown key or a value of the wrong type in an override or a config file."""


def _convert(raw: str, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null", "") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(raw, inner[0], key)
    if origin in (list, tuple):
        items = [x for x in raw.split(",") if x != ""]
        converted = [_convert(x, args[0] if args else str, key) for x in items]
        return converted if origin is list else tuple(converted)
    if annotation is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--{key}: expected true or false, got {raw!r}")
    if annotation in (int, float, str):
        try:
            return annotation(raw)
        except ValueError as err:
            raise ConfigError(f"--{key}: expected {annotation.__name__}, got {raw!r}") from err
    raise ConfigError(f"--{key}: cannot parse a value of type {annotation}")


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply_overrides(config: C, overrides: list[str]) -> C:
    """A copy of ``config`` with ``--key=value`` strings applied. Unknown keys are an error that
    lists the known ones."""
    types_ = field_types(type(config))
    changes: dict[str, Any] = {}
    for item in overrides:
        if not item.startswith("--") or "=" not in item:
            raise ConfigError(f"expected --key=value, got {item!r}")
        key, raw = override_key(item), item.split("=", 1)[1]
        if key not in types_:
            raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(sorted(types_))}")
        changes[key] = _convert(raw, types_[key], key)
    return dataclasses.replace(config, **changes)


def override_key(item: str) -> str:
    """The config key a ``--key=value`` string sets (dashes read as underscores)."""
    return item[2:].split("=", 1)[0].replace("-", "_")


def split_overrides(overrides: list[str], cls: type) -> tuple[list[str], list[str]]:
    """``--key=value`` strings split into those that set a field of the dataclass ``cls`` and
    the rest (a driver's own settings, and what it passes on to the stages it runs)."""
    own = {f.name for f in dataclasses.fields(cls)}
    mine = [o for o in overrides if override_key(o) in own]
    return mine, [o for o in overrides if o not in mine]


def config_from_dict(cls: type[C], values: dict[str, Any], source: str) -> C:
    known = field_types(cls)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown config keys {unknown}")
    return cls(**values)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a small file atomically: a temp file in the same directory, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary readable outputs
        os.replace(tmp, path)
    except BaseException:
        # a failed write (unencodable text, full disk, path is a directory) leaves no temp file
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_figure(fig, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Write a matplotlib figure as PNG atomically (temp file + rename) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format="png", dpi=dpi)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # no temp file left behind; the error goes on
        raise
    finally:
        plt.close(fig)
    return path


def save_config(config: Any, path: str | os.PathLike) -> None:
    atomic_write_text(path, json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True) + "\n")


def load_config(cls: type[C], path: str | os.PathLike) -> C:
    with open(path, encoding="utf-8") as handle:
        return config_from_dict(cls, json.load(handle), str(path))

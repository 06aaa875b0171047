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

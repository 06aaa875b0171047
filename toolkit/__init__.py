"""gpt-ablate: swap one component of a GPT, train every variant x seed, compare the results.

Python API (the CLI `ablate` is a thin layer over it):

    import toolkit
    spec = toolkit.load_spec("experiments/quickstart.toml")
    table = toolkit.run(spec, "runs/quickstart")        # pandas.DataFrame, one row per run
    model = toolkit.build_model(toolkit.ModelConfig(emb_dim=128, n_heads=4, n_layers=2))
"""

from __future__ import annotations

from typing import Any

from toolkit.api.hookspecs import hookimpl
from toolkit.errors import ComponentError, DataError, PluginError, SpecError, ToolkitError

__version__ = "0.1.0"

# Heavier modules load on first use, so `import toolkit` in a plugin stays cheap and cycle-free.
_LAZY = {
    "ModelConfig": "toolkit.model.gpt",
    "build_model": "toolkit.model.gpt",
    "preset": "toolkit.model.gpt",
    "Spec": "toolkit.spec.schema",
    "load_spec": "toolkit.spec.schema",
    "run": "toolkit.sweep.runner",
    "collect": "toolkit.sweep.results",
    "summarize": "toolkit.analysis.report",
    "compare": "toolkit.analysis.report",
    "write_report": "toolkit.analysis.report",
    "Plugins": "toolkit.api.manager",
    "load_plugins": "toolkit.api.manager",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")


__all__ = [
    "ComponentError",
    "DataError",
    "PluginError",
    "SpecError",
    "ToolkitError",
    "hookimpl",
    *_LAZY,
]

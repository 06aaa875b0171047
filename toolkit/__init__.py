"""gpt-ablate: swap one component of a GPT, train every variant x seed, compare the results.

Python API (the CLI `ablate` is a thin layer over it):

    import toolkit
    spec = toolkit.load_spec("experiments/quickstart.toml")
    table = toolkit.run(spec, "runs/quickstart")        # pandas.DataFrame, one row per run
    summary = toolkit.compare("runs/quickstart")         # one row per variant, with statistics
    model = toolkit.build_model({"preset": "micro", "norm": "rmsnorm"})
    model = toolkit.load_model("runs/quickstart/norm=layernorm,activation=gelu/seed-0")
    text = toolkit.generate("runs/quickstart/norm=layernorm,activation=gelu/seed-0", "The ")
    scores = toolkit.evaluate("runs/quickstart/norm=layernorm,activation=gelu/seed-0")
"""

from __future__ import annotations

import importlib
from typing import Any

from toolkit.api.hookspecs import hookimpl
from toolkit.errors import (
    ComponentError,
    DataError,
    PluginError,
    SpecError,
    StorageError,
    ToolkitError,
)

__version__ = "0.1.0"

# Heavier modules load on first use, so `import toolkit` in a plugin stays cheap and cycle-free.
# name -> (module, attribute there)
_LAZY = {
    "ModelConfig": ("toolkit.model.config", "ModelConfig"),
    "preset": ("toolkit.model.config", "preset"),
    "build_model": ("toolkit.model.gpt", "build_model"),
    "load_model": ("toolkit.model.checkpoint", "load_model"),
    "Spec": ("toolkit.spec.schema", "Spec"),
    "load_spec": ("toolkit.spec.parse", "load_spec"),
    "run": ("toolkit.sweep.runner", "run"),
    "collect": ("toolkit.sweep.results", "collect"),
    "summarize": ("toolkit.analysis.table", "summarize"),
    "compare": ("toolkit.analysis.comparison", "compare"),
    "write_report": ("toolkit.analysis.render", "write_report"),
    "generate": ("toolkit.inference.generate", "generate_text"),
    "evaluate": ("toolkit.inference.evaluate", "evaluate_checkpoint"),
    "Plugins": ("toolkit.api.manager", "Plugins"),
    "load_plugins": ("toolkit.api.manager", "load_plugins"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")


__all__ = [
    "ComponentError",
    "DataError",
    "PluginError",
    "SpecError",
    "StorageError",
    "ToolkitError",
    "hookimpl",
    *_LAZY,
]

"""Conformance checks of `executor` components.

Checked: a fixed sweep of 2 runs (built-in components only, a 1-layer model, 4 steps each, one
thread) run through the executor gives every run status ok and the same metrics.jsonl, line for
line apart from elapsed_s, as the same sweep run locally.

Not checked: speed, parallelism, retries, behaviour when a run fails or a worker dies, many
nodes, and any drawn input: it is one fixed sweep, so `max_examples` is ignored.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from toolkit.api.manager import Plugins
from toolkit.errors import ToolkitError, one_line
from toolkit.spec.parse import parse_spec
from toolkit.testing.core import Case

# metrics.jsonl fields that time a run: they differ between any two runs, however identical.
CLOCKS = ("elapsed_s", "train_s")


def check_executor(case: Case, max_examples: int) -> None:
    """A 2-run sweep trained by the executor equals the same sweep trained locally: every run
    once, same status, same metrics line for line (one thread each, so bit for bit)."""
    # Imported here for start-up cost only: the runner pulls in pandas and pyarrow (about 0.5 s
    # on every `import toolkit.testing`), which no other check needs.
    from toolkit.sweep.runner import run

    doc = {
        "name": "conformance",
        "seeds": [0],
        "data": {"tokenizer": "bytes"},
        "model": {"context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 1},
        "train": {"batch_size": 2, "max_steps": 4, "eval_interval": 2, "eval_batches": 1,
                  "threads": 1, "checkpoint": False},
        "sampling": {"max_new_tokens": 0},
        "grid": {"model.norm": ["layernorm", "rmsnorm"]},
    }  # fmt: skip
    # The sweep uses built-in components only, loaded by module name, so executors that train
    # in other processes can load them there (whatever else the caller's plugins hold).
    plugins = Plugins(autoload=False)
    spec = parse_spec(doc, plugins=plugins)
    case.inputs = "a sweep of 2 runs of a 1-layer model, 4 steps each"
    executor = case.component.build(**case.options)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        run(spec, out / "local", plugins=plugins, progress=False)
        try:
            table = run(spec, out / "other", plugins=plugins, progress=False,
                        executor=executor)  # fmt: skip
        except ToolkitError as exc:
            raise case.error("execute", str(exc)) from exc
        except Exception as exc:
            raise case.error("execute", f"raised {one_line(exc, 300)}") from exc
        bad = table[table["status"] != "ok"]
        if len(bad):
            raise case.error("execute", f"run {bad['variant'].iloc[0]!r}: {bad['error'].iloc[0]}")
        for r in spec.runs:
            mine, local = (
                [
                    {k: v for k, v in json.loads(line).items() if k not in CLOCKS}
                    for line in (out / side / r.folder / "metrics.jsonl").read_text().splitlines()
                ]
                for side in ("other", "local")
            )
            if mine != local:
                raise case.error(
                    "same losses", f"run {r.variant!r} logged {mine} where local gave {local}"
                )

"""Shared fixtures: an isolated token cache, the built-in plugins, and a tiny spec document."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import pytest
import torch

from toolkit.api.hookspecs import hookimpl
from toolkit.api.manager import Plugins
from toolkit.cli import main
from toolkit.data.encode import usable_cores

E2E = Path(__file__).resolve().parent / "e2e"
# Conformance cases that train real sweeps (executors) or draw many models (attention: its
# formulas are checked in the inner loop by tests/plugins/test_attention.py; optimizer: their
# updates by hand in tests/plugins/test_optimizers.py).
SLOW_CASES = re.compile(r"::test_registered_component_conforms\[(executor|attention|optimizer)-")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject's addopts): a worker per core, at most 8 (each holds torch, and
    the Ray tests start a Ray instance per worker)."""
    return min(8, usable_cores())


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`-n N`), each worker's torch gets its share of the cores: a worker
    whose intra-op threads outnumber its share spins them against the other workers' (the
    inner loop took 1.7x longer on 2 cores with 2 workers of 2 threads each)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // workers))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in tests/e2e/ is slow (whole CLI runs, kills, torchrun, Ray), and so are the
    SLOW_CASES of the conformance suite; `pytest -m "not slow"` leaves them out."""
    for item in items:
        if E2E in item.path.parents or SLOW_CASES.search(item.nodeid):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One token cache for the whole session (tokenizing once is the point of the cache), never
    # the user's home; installed third-party plugins are not loaded into the tests.
    monkeypatch.setenv("ABLATE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("ABLATE_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("ABLATE_TENSORBOARD", raising=False)  # a developer's own logging setup
    monkeypatch.delenv("ABLATE_MLFLOW", raising=False)
    monkeypatch.delenv("ABLATE_WANDB", raising=False)


@pytest.fixture(scope="session")
def plugins() -> Plugins:
    return Plugins(autoload=False)


TINY = {
    "name": "tiny",
    "seeds": [0],
    "data": {"corpus": "pydoc", "tokenizer": "bytes", "val_fraction": 0.1},
    "model": {"context_length": 32, "emb_dim": 32, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0},
    "train": {"batch_size": 4, "max_steps": 6, "eval_interval": 3, "eval_batches": 2, "lr": 3e-3},
    "sampling": {"sampler": "greedy", "max_new_tokens": 8},
}


@pytest.fixture
def tiny_doc() -> dict:
    """A spec document (as tomllib returns) that trains in well under a second."""
    return copy.deepcopy(TINY)


def interrupting_plugins(step: int) -> Plugins:
    """The built-ins plus an observer that interrupts (KeyboardInterrupt, as Ctrl-C does) the
    run at its evaluation of `step`, after resume.pt is written."""

    class Interrupt:
        @hookimpl
        def on_eval(self, run, step: int, metrics) -> None:
            if step == at:
                raise KeyboardInterrupt

    at = step
    plugins = Plugins(autoload=False)
    plugins.add(Interrupt(), name="interrupt")
    return plugins


def small_toml(name: str, seeds: tuple[int, ...] = (0,), **sections: str) -> str:
    """The smallest spec that trains (16 wide, one layer, two steps, bytes), as TOML text;
    `train="max_steps = 6"` and the like add lines to a section (later keys win in effect,
    so give a key only once)."""
    body = {
        "data": 'tokenizer = "bytes"',
        "model": "context_length = 16\nemb_dim = 16\nn_heads = 2\nn_layers = 1",
        "train": "max_steps = 2" if "max_steps" not in sections.get("train", "") else "",
        "sampling": "",
    }
    for section, lines in sections.items():
        body[section] = f"{body[section]}\n{lines}".strip()
    text = f'name = "{name}"\nseeds = {list(seeds)}\n'
    return text + "".join(f"[{k}]\n{v}\n" for k, v in body.items() if v)


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def validation_error(folder: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    """`ablate validate` of spec `text`: asserts exit status 2 and a one-line error, returns it."""
    spec = write_spec(folder / "spec.toml", text)
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("ablate: error:"), err
    return err


TINY_TOML = """
name = "tiny"
seeds = [0, 1]

[data]
tokenizer = "bytes"

[model]
context_length = 32
emb_dim = 32
n_heads = 2
n_layers = 1
drop_rate = 0.0

[train]
batch_size = 4
max_steps = 6
eval_interval = 3
eval_batches = 2
lr = 3e-3

[sampling]
sampler = "greedy"
max_new_tokens = 8

[grid]
"model.norm" = ["layernorm", "rmsnorm"]
"""

"""A component that breaks the (B, T, emb_dim) contract is named, with its plugin, by `ablate
validate` and `ablate run` before any training, and by a run whose first step fails; torch
alone would say "mat1 and mat2 shapes cannot be multiplied" two modules later."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import TINY_TOML

import toolkit.api.manager
from toolkit.api.manager import Plugins
from toolkit.cli import main
from toolkit.errors import ComponentError
from toolkit.model.config import ModelConfig
from toolkit.model.probe import check_architecture

PLUGIN = '''
import torch
from torch import nn
from toolkit import hookimpl


class Wide(nn.Module):
    """Returns twice the width: the next module's matmul fails."""

    def __init__(self, config):
        super().__init__()
        self.up = nn.Linear(config.emb_dim, 2 * config.emb_dim)

    def forward(self, x):
        return self.up(x)


class Double(nn.Module):
    """A norm that computes and returns float64."""

    def forward(self, x):
        return x.double()


class Raising(nn.Module):
    def forward(self, x):
        raise ValueError("window larger than the sequence")


class ReadsAValue(nn.Module):
    """Reads a number out of a tensor (no meta kernel can): probed on the CPU instead."""

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        scale = float(x.abs().max().item()) + 1.0
        return self.norm(x) / scale


class LongOnly(nn.Module):
    """Breaks only past 8 positions, which the tiny probe never reaches."""

    def __init__(self, config):
        super().__init__()
        self.ff = nn.Linear(config.emb_dim, config.emb_dim)

    def forward(self, x):
        return self.ff(x)[:, :, :-1] if x.shape[1] > 8 else self.ff(x)


@hookimpl
def register_components(register):
    register("activation", "wide", lambda config: Wide(config))
    register("normalization", "double", lambda dim: Double())
    register("normalization", "raising", lambda dim: Raising())
    register("normalization", "reads-a-value", lambda dim: ReadsAValue(dim))
    register("activation", "long-only", lambda config: LongOnly(config))
'''


@pytest.fixture
def bad(tmp_path, monkeypatch):
    monkeypatch.setattr(toolkit.api.manager, "_DEFAULT", {})
    (tmp_path / "bad_components.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("bad_components", None)


def _spec(folder: Path, **model: str) -> Path:
    text = TINY_TOML.split("[grid]")[0].replace("seeds = [0, 1]", "seeds = [0]")
    text = text.replace(
        "[model]\n", "[model]\n" + "".join(f'{k} = "{v}"\n' for k, v in model.items())
    )
    path = folder / "spec.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"activation": "wide"},
            "activation 'wide' (plugin 'bad_components') returned shape (1, 8, 64) from an "
            "input of shape (1, 8, 32); it must return the input's shape (B, T, emb_dim)",
        ),
        (
            {"norm": "double"},
            "normalization 'double' (plugin 'bad_components') returned torch.float64 from a "
            "torch.float32 input",
        ),
        (
            {"norm": "raising"},
            "normalization 'raising' (plugin 'bad_components') raised in forward on a "
            "(1, 8, 32) input: ValueError: window larger than the sequence",
        ),
    ],
)
def test_validate_names_the_component_that_breaks_its_contract(bad, capsys, model, message):
    code = main(["validate", str(_spec(bad, **model)), "--plugin", "bad_components"])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "Traceback" not in err
    assert "variant 'base'" in err and message in err


def test_a_component_meta_tensors_cannot_run_is_probed_on_the_cpu(bad):
    plugins = Plugins(["bad_components"], autoload=False)
    config = ModelConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=2, n_layers=1)
    config.norm = "reads-a-value"
    check_architecture(config, plugins)  # passes: the CPU run shows it keeps its contract
    config.activation = "wide"
    with pytest.raises(ComponentError, match=r"^activation 'wide'.*returned shape \(1, 8, 64\)"):
        check_architecture(config, plugins)


def test_a_run_whose_first_step_fails_names_the_component(bad, capsys):
    spec = _spec(bad, activation="long-only")
    out = bad / "runs"
    assert main(["validate", str(spec), "--plugin", "bad_components"]) == 0
    assert main(["run", str(spec), "--plugin", "bad_components", "--out", str(out)]) == 1
    error = (out / "base/seed-0/error.txt").read_text()
    summary = json.loads((out / "base/seed-0/summary.json").read_text())
    assert summary["status"] == "failed"
    named = (
        "activation 'long-only' (plugin 'bad_components') returned shape (4, 32, 31) from an "
        "input of shape (4, 32, 32)"
    )
    assert named in error and named in capsys.readouterr().err

"""A component that breaks the (B, T, emb_dim) contract is named, with its plugin, by `ablate
validate` and `ablate run` before any training (probed with two windows of the full context,
on the meta device or, when it cannot run there, the CPU), and by a run whose first step fails;
torch alone would say "mat1 and mat2 shapes cannot be multiplied" two modules later."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import TINY_TOML

import toolkit.api.manager
from toolkit.api.manager import Plugins
from toolkit.cli import main
from toolkit.errors import ComponentError
from toolkit.model.config import PRESETS, ModelConfig
from toolkit.model.gpt import build_model
from toolkit.model.probe import PROBE_TOKENS, check_architecture, cpu_probe_length

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
    """Breaks only past 8 positions, which a probe of one window of 8 tokens never reached."""

    def __init__(self, config):
        super().__init__()
        self.ff = nn.Linear(config.emb_dim, config.emb_dim)

    def forward(self, x):
        return self.ff(x)[:, :, :-1] if x.shape[1] > 8 else self.ff(x)


class FirstOnly(nn.Module):
    """Keeps only the first sequence of a batch: fine for a batch of one."""

    def __init__(self, config):
        super().__init__()
        self.ff = nn.Linear(config.emb_dim, config.emb_dim)

    def forward(self, x):
        return self.ff(x)[:1]


class BigBatchOnly(nn.Module):
    """Breaks only on batches larger than the probe's two windows: left to the first step."""

    def __init__(self, config):
        super().__init__()
        self.ff = nn.Linear(config.emb_dim, config.emb_dim)

    def forward(self, x):
        return self.ff(x)[:, :, :-1] if x.shape[0] > 2 else self.ff(x)


@hookimpl
def register_components(register):
    register("activation", "wide", lambda config: Wide(config))
    register("normalization", "double", lambda dim: Double())
    register("normalization", "raising", lambda dim: Raising())
    register("normalization", "reads-a-value", lambda dim: ReadsAValue(dim))
    register("activation", "long-only", lambda config: LongOnly(config))
    register("activation", "first-only", lambda config: FirstOnly(config))
    register("activation", "big-batch-only", lambda config: BigBatchOnly(config))
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
            "activation 'wide' (plugin 'bad_components') returned shape (2, 32, 64) from an "
            "input of shape (2, 32, 32); it must return the input's shape (B, T, emb_dim)",
        ),
        (
            {"norm": "double"},
            "normalization 'double' (plugin 'bad_components') returned torch.float64 from a "
            "torch.float32 input",
        ),
        (
            {"norm": "raising"},
            "normalization 'raising' (plugin 'bad_components') raised in forward on a "
            "(2, 32, 32) input: ValueError: window larger than the sequence",
        ),
        # Broken only at the full context (32) or at a batch of more than one.
        (
            {"activation": "long-only"},
            "activation 'long-only' (plugin 'bad_components') returned shape (2, 32, 31) from "
            "an input of shape (2, 32, 32)",
        ),
        (
            {"activation": "first-only"},
            "activation 'first-only' (plugin 'bad_components') returned shape (1, 32, 32) from "
            "an input of shape (2, 32, 32)",
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
    with pytest.raises(ComponentError, match=r"^activation 'wide'.*returned shape \(2, 16, 64\)"):
        check_architecture(config, plugins)
    # The CPU probe runs the full context too (it is cheap for this model): past 8 positions.
    config.activation = "long-only"
    with pytest.raises(ComponentError, match=r"^activation 'long-only'.*\(2, 16, 31\)"):
        check_architecture(config, plugins)


@pytest.mark.parametrize(
    ("sizes", "length"),
    [
        # The quick-start model: its whole context is cheap on the CPU.
        (dict(vocab_size=257, context_length=128, emb_dim=128, n_heads=4, n_layers=4), 128),
        # gpt2-small: a real forward of (2, 1024) took 8 s; 64 tokens about 0.15 s.
        (PRESETS["gpt2-small"], 64),
        # A long context in a tiny model: attention's scores bound it, not its parameters.
        (dict(vocab_size=257, context_length=8192, emb_dim=32, n_heads=4, n_layers=1), 2048),
        # A context shorter than 8 tokens is probed whole.
        (dict(vocab_size=257, context_length=4, emb_dim=32, n_heads=4, n_layers=1), 4),
    ],
)
def test_the_cpu_probe_runs_the_longest_length_it_can_afford(sizes, length):
    config = ModelConfig(**sizes)
    with torch.device("meta"):
        n_params = build_model(config, Plugins(autoload=False)).num_params()
    assert cpu_probe_length(config, n_params) == length


def test_the_cpu_probe_of_a_huge_model_stops_at_8_tokens():
    config = ModelConfig(vocab_size=50257, context_length=1024, emb_dim=768, n_heads=12)
    assert cpu_probe_length(config, 190_000_000_000) == PROBE_TOKENS == 8


def test_a_run_whose_first_step_fails_names_the_component(bad, capsys):
    spec = _spec(bad, activation="big-batch-only")
    out = bad / "runs"
    assert main(["validate", str(spec), "--plugin", "bad_components"]) == 0
    assert main(["run", str(spec), "--plugin", "bad_components", "--out", str(out)]) == 1
    error = (out / "base/seed-0/error.txt").read_text()
    summary = json.loads((out / "base/seed-0/summary.json").read_text())
    assert summary["status"] == "failed"
    named = (
        "activation 'big-batch-only' (plugin 'bad_components') returned shape (4, 32, 31) from "
        "an input of shape (4, 32, 32)"
    )
    assert named in error and named in capsys.readouterr().err

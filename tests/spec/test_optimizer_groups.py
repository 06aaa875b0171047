"""An optimizer plugin whose parameter groups leave a trainable parameter out, hold one twice, or
have no lr for the schedule is refused when the spec is validated, with the very message a run
would fail with (both call toolkit.api.contracts.check_optimizer), not after `ablate run`
started training."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import small_toml, write_spec

import toolkit.api.manager
from toolkit.api.hookspecs import hookimpl
from toolkit.api.manager import Plugins
from toolkit.cli import main
from toolkit.errors import ComponentError, SpecError
from toolkit.model.gpt import build_model
from toolkit.spec.parse import parse_spec
from toolkit.training.optimizer import make_optimizer


def first_only(model, config):
    """SGD over the first parameter only"""
    return torch.optim.SGD([next(model.parameters())], lr=config.lr)


def twice(model, config):
    """AdamW with the first parameter in a second group too (added by hand: torch's own
    constructor refuses it)"""
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    optimizer.param_groups.append({**optimizer.param_groups[0], "params": params[:1]})
    return optimizer


def no_lr(model, config):
    """AdamW whose one group has lost its lr"""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    del optimizer.param_groups[0]["lr"]
    return optimizer


def plugins_with(**factories) -> Plugins:
    class Throwaway:
        @hookimpl
        def register_components(self, register):
            for name, factory in factories.items():
                register("optimizer", name.replace("_", "-"), factory)

    plugins = Plugins(autoload=False)
    plugins.add(Throwaway(), name="rt")
    return plugins


PLUGINS = plugins_with(first_only=first_only, twice=twice, no_lr=no_lr)
WHO = "optimizer '{}' (plugin 'rt')"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "first-only",
            "puts parameter 'pos_emb.weight' in none of its parameter groups; every trainable "
            "parameter must be in exactly one",
        ),
        ("twice", "puts parameter 'tok_emb.weight' in 2 of its parameter groups"),
        ("no-lr", "gives parameter group 0 no 'lr'; every group needs one"),
    ],
)
def test_validation_refuses_the_optimizers_a_run_would_refuse(tiny_doc, name, message):
    tiny_doc["train"]["optimizer"] = name
    with pytest.raises(SpecError) as err:
        parse_spec(tiny_doc, plugins=PLUGINS)
    said = str(err.value)
    assert f"{WHO.format(name)} {message}" in said and "\n" not in said, said

    # The run's own check says the same (in case validation was skipped, as the Python API may).
    tiny_doc["train"]["optimizer"] = "adamw"
    run = parse_spec(tiny_doc, plugins=PLUGINS).runs[0]
    run.train.optimizer = name
    model = build_model(run.model_config(257), PLUGINS)
    with pytest.raises(ComponentError) as at_run:
        make_optimizer(model, run, "cpu", PLUGINS)
    assert said.endswith(str(at_run.value))


PLUGIN = '''
import torch
from toolkit import hookimpl


def missing(model, config):
    """SGD over the first parameter only"""
    return torch.optim.SGD([next(model.parameters())], lr=config.lr)


@hookimpl
def register_components(register):
    register("optimizer", "missing", missing)
'''


@pytest.fixture
def optimizer_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(toolkit.api.manager, "_DEFAULT", {})
    (tmp_path / "rt.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("rt", None)


def test_ablate_validate_refuses_it_in_one_line(
    optimizer_plugin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(
        optimizer_plugin / "spec.toml", small_toml("cat", train='optimizer = "missing"')
    )
    assert main(["validate", str(spec), "--plugin", "rt"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err == (
        f"ablate: error: {spec}: optimizer 'missing' (plugin 'rt') puts parameter "
        "'pos_emb.weight' in none of its parameter groups; every trainable parameter must be in "
        "exactly one"
    )

"""Samplers are checked before anything trains: their options (a temperature the float32
division cannot take) and, called once on dummy logits, what they return against the sampler
contract, for sampling.sampler and for every [sampling_ablation] sampler."""

from __future__ import annotations

import re

import pytest
import torch

from tests.conftest import small_toml
from toolkit.api.hookspecs import hookimpl
from toolkit.api.manager import Plugins
from toolkit.cli import main
from toolkit.errors import SpecError
from toolkit.spec.parse import parse_spec
from toolkit.spec.validate import SAMPLER_PROBE
from toolkit.sweep.runner import run

INFINITE = '{ name = "top-k", k = 10, temperature = inf }'
ABLATION = "\n[sampling_ablation]\nprompt_tokens = 4\nmax_new_tokens = 4\nsamplers = "


@pytest.mark.parametrize(
    "text",
    [
        small_toml("hot", sampling=f"sampler = {INFINITE}"),
        small_toml("hot", sampling='sampler = { name = "temperature", temperature = 1e-40 }'),
        small_toml("hot") + ABLATION + f'["greedy", {INFINITE}]\n',
    ],
    ids=["sampling-inf", "sampling-tiny", "ablation-inf"],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_temperature_that_cannot_divide_fails_before_training(tmp_path, capsys, command, text):
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    out = tmp_path / "out"
    argv = [command, str(spec)] + (["--out", str(out), "--quiet"] if command == "run" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: ") and err.count("\n") == 1, err
    assert "option temperature must be 0 (greedy) or a number from" in err, err
    assert not out.exists()


def test_generate_refuses_an_infinite_temperature_in_one_line(tmp_path, tiny_doc, plugins, capsys):
    run(parse_spec(tiny_doc, plugins=plugins), tmp_path, plugins=plugins, progress=False)
    argv = ["generate", str(tmp_path / "base/seed-0"), "--sampler", "top-k"]
    assert main([*argv, "--set", "sampling.temperature=inf", "--max-new-tokens", "3"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("ablate: error: ") and err.count("\n") == 1, err
    assert "sampler 'top-k' option temperature must be 0 (greedy)" in err


# -- the sampler contract, called once ---------------------------------------------------------
def _in_place(logits, generator):
    logits[:, 0] = 1e9  # wins the argmax, in the caller's tensor
    return logits.argmax(-1, keepdim=True)


def _raises(logits, generator):
    raise ValueError("no vocabulary today")


BROKEN = {
    # name: (sampler, what the error says)
    "flat": (lambda logits, g: logits.argmax(-1), r"returned \(2,\) torch\.int64"),
    "float-ids": (
        lambda logits, g: logits.argmax(-1, keepdim=True).float(),
        r"returned \(2, 1\) torch\.float32",
    ),
    "past-vocab": (
        lambda logits, g: logits.argmax(-1, keepdim=True) + logits.shape[-1],
        r"returned ids \[\d+, \d+\]",
    ),
    "negative": (lambda logits, g: torch.full((2, 1), -1), r"returned ids \[-1, -1\]"),
    "list": (lambda logits, g: [[0], [1]], "returned list, not a tensor"),
    "raises": (_raises, "raised when called on logits \\(2, 16\\): ValueError: no vocabulary"),
    "in-place": (_in_place, "changed the logits it was given in place"),
}


def _global_rng(logits, generator):
    """Keeps the contract, but draws from torch's global generator, not the one given."""
    return torch.multinomial(torch.softmax(logits, -1), 1)


def _factory(sample):
    """A sampler factory without options that returns `sample`."""
    return lambda: sample


class BrokenSamplers:
    """Samplers that build but break the contract when called; and two that keep it."""

    @hookimpl
    def register_components(self, register):
        for name, (sample, _) in BROKEN.items():
            register("sampler", name, _factory(sample))
        register("sampler", "not-callable", lambda: 42)
        register("sampler", "fine", lambda: lambda logits, g: torch.zeros(len(logits), 1).long())
        register("sampler", "global-rng", lambda: _global_rng)


@pytest.fixture(scope="module")
def broken() -> Plugins:
    plugins = Plugins(autoload=False)
    plugins.add(BrokenSamplers(), name="broken-samplers")
    return plugins


SHORT = {"prompt_tokens": 4, "max_new_tokens": 4}  # within tiny_doc's context
CASES = {
    **{name: message for name, (_, message) in BROKEN.items()},
    "not-callable": "built int, which is not callable",
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("where", ["sampling", "sampling_ablation"])
def test_a_sampler_that_breaks_the_contract_fails_validation(tiny_doc, broken, where, name):
    if where == "sampling":
        tiny_doc["sampling"]["sampler"] = name
        key = "sampling.sampler:"
    else:
        tiny_doc["sampling_ablation"] = {"samplers": ["greedy", name], **SHORT}
        key = "[sampling_ablation] samplers:"
    with pytest.raises(SpecError) as info:
        parse_spec(tiny_doc, plugins=broken)
    message = str(info.value)
    assert "\n" not in message
    assert f"{key} sampler {name!r} (plugin 'broken-samplers')" in message, message
    assert re.search(CASES[name], message), message
    if "returned" in CASES[name]:
        b, v = SAMPLER_PROBE
        assert f"a sampler returns the next token ids, ({b}, 1) torch.int64 in [0, {v})" in message


def test_a_sampler_that_keeps_the_contract_passes(tiny_doc, broken):
    tiny_doc["sampling"]["sampler"] = "fine"
    tiny_doc["sampling_ablation"] = {"samplers": ["greedy", "fine"], **SHORT}
    spec = parse_spec(tiny_doc, plugins=broken)
    assert spec.runs[0].sampling.sampler == "fine"
    assert spec.sampling_ablation.samplers == ["greedy", "fine"]


def test_calling_a_sampler_leaves_the_global_rng_alone(tiny_doc, broken):
    """Validation draws nothing from the process's random state, even for a sampler that
    ignores the generator it is given."""
    tiny_doc["sampling"]["sampler"] = "global-rng"
    torch.manual_seed(5)
    before = torch.get_rng_state()
    parse_spec(tiny_doc, plugins=broken)
    assert torch.equal(torch.get_rng_state(), before)


def test_the_cli_names_the_broken_sampler(tmp_path, capsys, monkeypatch):
    """Through `ablate validate --plugin`: one line, status 2."""
    (tmp_path / "flat_sampler.py").write_text(
        "from toolkit import hookimpl\n\n\n"
        "@hookimpl\n"
        "def register_components(register):\n"
        '    register("sampler", "flat", lambda: lambda logits, g: logits.argmax(-1))\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    text = small_toml("flat", sampling='sampler = "flat"')
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    assert main(["validate", str(spec), "--plugin", "flat_sampler"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: ") and err.count("\n") == 1, err
    assert "sampler 'flat' (plugin 'flat_sampler') returned (2,) torch.int64" in err, err


def test_the_builtin_samplers_pass(tmp_path, capsys):
    samplers = '"greedy", "temperature", "top-k", "top-p", "min-p", "typical", "chain"'
    spec = tmp_path / "spec.toml"
    spec.write_text(small_toml("all") + ABLATION + f"[{samplers}]\n")
    assert main(["validate", str(spec)]) == 0, capsys.readouterr().err

"""generate(): per-sequence stopping and streaming; `ablate generate` on tiny trained run folders
(through toolkit.inference.generate.main, which runs the command as the CLI does)."""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from plugins.tokenizers import ByteTokenizer, GPT2Tokenizer
from tests.conftest import TINY
from toolkit.api.manager import Plugins
from toolkit.cli import main
from toolkit.cli.generate import _sampling
from toolkit.errors import SpecError, ToolkitError
from toolkit.inference.generate import (
    IncrementalDecoder,
    generate,
    stream,
)
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run

PLUGINS = Plugins(autoload=False)
SAMPLERS = PLUGINS.registry.names("sampler")


def train_tiny(folder: Path, base: Path, **data) -> Path:
    """A tiny run folder; the cache and plugin settings match conftest's (module fixtures run
    before its autouse fixture)."""
    doc = copy.deepcopy(TINY)
    doc["data"].update(data)
    doc["sampling"] = {"sampler": {"name": "top-k", "k": 3}, "prompt": "def ", "max_new_tokens": 4}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABLATE_CACHE_DIR", str(base / "cache"))
        mp.setenv("ABLATE_DISABLE_PLUGIN_AUTOLOAD", "1")
        table = run(parse_spec(doc, plugins=PLUGINS), folder, plugins=PLUGINS, progress=False)
    assert table["status"].tolist() == ["ok"]
    return folder / "base" / "seed-0"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("gen"), tmp_path_factory.getbasetemp())


def ablate(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["generate", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


# -- generate() ------------------------------------------------------------------------------
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=20, context_length=6, emb_dim=16, n_heads=2, n_layers=1)
    return build_model(config, PLUGINS)


@pytest.mark.parametrize("use_cache", [True, False])
def test_each_sequence_stops_at_eot_and_the_batch_when_all_have(use_cache) -> None:
    """Row 0 ends at the 2nd new token and then only gets eot; row 1 ends at the 4th."""
    eot, calls = 19, []

    def sampler(logits, generator):
        calls.append(len(calls))
        ends = {0: 1, 1: 3}
        return torch.tensor([[eot if ends[r] == calls[-1] else 1 + r] for r in range(2)])

    out = generate(tiny_model(), torch.zeros(2, 3, dtype=torch.long), 10, sampler, 6, None, eot)
    assert out[:, 3:].tolist() == [[1, eot, eot, eot], [2, 2, 2, eot]]
    calls.clear()
    out = generate(tiny_model(), torch.zeros(2, 3, dtype=torch.long), 10, sampler, 6)
    assert out.shape == (2, 13)  # without eot_id, every step runs


@pytest.mark.parametrize("use_cache", [True, False])
def test_a_single_sequence_stops_at_its_eot(use_cache) -> None:
    eot, calls = 19, []

    def sampler(logits, generator):
        calls.append(len(calls))
        return torch.tensor([[eot if len(calls) == 3 else 1]])

    prompt = torch.zeros(1, 3, dtype=torch.long)
    out = generate(tiny_model(), prompt, 10, sampler, 6, None, eot, use_cache)
    assert out[0, 3:].tolist() == [1, 1, eot] and len(calls) == 3


def test_stream_yields_step_by_step_and_restores_the_mode() -> None:
    model = tiny_model().train()
    greedy = PLUGINS.registry.get("sampler", "greedy").build()
    steps = stream(model, torch.zeros(1, 2, dtype=torch.long), 9, greedy, 6)
    first = next(steps)
    assert first.shape == (1, 1) and not model.training  # eval while generating
    rest = list(steps)
    assert len(rest) == 8 and model.training
    assert torch.is_grad_enabled()  # no_grad does not leak out of the generator


def test_generated_ids_are_ordinary_tensors() -> None:
    """The steps run in inference mode; the ids generate() returns are still ordinary ones."""
    greedy = PLUGINS.registry.get("sampler", "greedy").build()
    out = generate(tiny_model(), torch.zeros(1, 2, dtype=torch.long), 3, greedy, 6)
    assert not out.is_inference()
    out[:, 0] = 1  # in place, outside inference mode


@pytest.mark.parametrize("tokenizer", [ByteTokenizer(), GPT2Tokenizer()])
def test_incremental_decoding_prints_whole_characters_only(tokenizer) -> None:
    text = "naïve 日本語 🤖 done"
    decoder = IncrementalDecoder(tokenizer.decode)
    pieces = [decoder.add(i) for i in tokenizer.encode(text)]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    # Bytes that never complete a character come out at the end, as decode() gives them.
    decoder = IncrementalDecoder(ByteTokenizer().decode)
    assert decoder.add(0xE6) == "" and decoder.add(0x97) == ""
    assert decoder.flush() == "\ufffd"


# -- ablate generate ---------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_generate_each_sampler_from_a_run_folder(capsys, run_dir, sampler) -> None:
    args = (run_dir, "--prompt", "The ", "--sampler", sampler, "--max-new-tokens", 12, "--seed", 1)
    rc, out, err = ablate(capsys, *args)
    assert rc == 0 and err == ""
    assert out.startswith("The ") and out.endswith("\n")
    assert 0 < len(out) - len("The \n") <= 12  # bytes: a token makes at most a character
    assert ablate(capsys, *args)[1] == out  # same seed, same text
    if sampler == "greedy":
        assert ablate(capsys, *args, "--no-cache")[1] == out


def test_generate_streams_as_it_goes(monkeypatch, run_dir) -> None:
    writes: list[str] = []

    class Stdout:
        def write(self, text: str) -> None:
            writes.append(text)

        def flush(self) -> None:
            pass

    monkeypatch.setattr("sys.stdout", Stdout())
    assert main(["generate", str(run_dir), "--max-new-tokens", "10", "--sampler", "greedy"]) == 0
    assert writes[0] == "def " and len(writes) > 3  # the run's prompt, then piece by piece


def test_the_runs_sampling_section_and_set_overrides(capsys, run_dir) -> None:
    rc, out, _ = ablate(
        capsys, run_dir, "--set", "sampling.prompt='x = '", "--set", "sampling.max_new_tokens=3"
    )
    assert rc == 0 and out.startswith("x = ") and len(out) <= len("x = ") + 3 + 1
    rc, out, _ = ablate(capsys, run_dir, "--sampler", "top-p", "--set", "sampling.p=0.5")
    assert rc == 0 and out.startswith("def ")


def test_sampler_options_follow_the_chosen_sampler() -> None:
    config = {"sampler": {"name": "top-k", "k": 3}, "prompt": "a", "max_new_tokens": 100}

    def resolve(*argv: str) -> dict:
        parser = argparse.ArgumentParser()
        from toolkit.cli.generate import add_parser

        add_parser(parser.add_subparsers())
        return _sampling(config, parser.parse_args(["generate", "x", *argv]), PLUGINS)

    assert resolve()["sampler"] == {"name": "top-k", "k": 3}
    assert resolve("--sampler", "top-k", "--set", "sampling.temperature=0.5")["sampler"] == {
        "name": "top-k", "k": 3, "temperature": 0.5,
    }  # fmt: skip
    assert resolve("--sampler", "min-p", "--set", "sampling.p=0.2")["sampler"] == {
        "name": "min-p", "p": 0.2,
    }  # fmt: skip
    chosen = resolve("--set", "sampling.sampler={name = 'chain', top_k = 4}")
    assert chosen["sampler"] == {"name": "chain", "top_k": 4}
    assert resolve("--set", "sampling.sampler.k=7")["sampler"]["k"] == 7
    assert resolve("--max-new-tokens", "2", "--prompt", "b")["max_new_tokens"] == 2
    with pytest.raises(SpecError, match="has no option 'k'"):
        resolve("--sampler", "top-p", "--set", "sampling.k=3")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{missing}"], "does not exist"),
        (["{empty}"], "no checkpoint.pt in"),
        (["{run}", "--sampler", "nucleus"], "unknown sampler 'nucleus'"),
        (["{run}", "--set", "sampling.p"], "expected KEY=VALUE"),
        (["{run}", "--set", "train.lr=1"], "sampling.* keys only"),
        (["{run}", "--set", "sampling.q=1"], "no option 'q'"),
        (["{run}", "--sampler", "top-p", "--set", "sampling.p=2"], r"must be in \(0, 1\]"),
        (["{run}", "--set", "sampling.k=two"], "must be an integer"),
        (["{run}", "--set", "sampling.max_new_tokens=-1"], "must be >= 0"),
        (["{run}", "--set", "sampling.sampler=3"], "expected a sampler name"),
        (["{bad}"], "cannot be read"),
        (["{alone}"], r"e\.g\. --tokenizer bytes \(257 ids\)"),
        (
            ["{run}", "--max-new-tokens", "10000000000"],
            "--max-new-tokens must be at most 1,048,576",
        ),
        (["{run}", "--max-new-tokens", "9" * 20], "--max-new-tokens must be at most 1,048,576"),
        (["{run}", "--max-new-tokens", "-1"], "--max-new-tokens must be >= 0, got -1"),
        (
            ["{run}", "--set", "sampling.max_new_tokens=10000000000"],
            "max_new_tokens must be at most",
        ),
        (
            ["{run}", "--seed", "9" * 23],
            r"--seed: seed 9{23} is out of range; seeds go from 0 to 2\*\*63 - 1",
        ),
        (["{run}", "--seed", "-1"], r"--seed: seed -1 is out of range; seeds go from 0 to 2\*\*63"),
        (["{run}", "--seed", str(2**63)], r"--seed: seed 9223372036854775808 is out of range"),
        # The flags are checked before the source is even looked at.
        (["{missing}", "--seed", "-1"], "--seed: seed -1 is out of range"),
        (["{missing}", "--max-new-tokens", "10000000000"], "--max-new-tokens must be at most"),
    ],
)
def test_bad_input_is_one_line_and_status_2(capsys, tmp_path, run_dir, argv, message) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    raw = torch.load(run_dir / "checkpoint.pt", weights_only=True)  # without its tokenizer:
    torch.save({"model": raw["model"], "config": raw["config"]}, tmp_path / "alone.pt")
    paths = {
        "missing": tmp_path / "nope",
        "empty": tmp_path / "empty",
        "run": run_dir,
        "bad": tmp_path / "bad.pt",
        "alone": tmp_path / "alone.pt",
    }
    rc, out, err = ablate(capsys, *[a.format(**paths) for a in argv])
    assert rc == 2 and out == ""
    assert err.startswith("ablate: error: ") and err.count("\n") == 1
    assert re.search(message, err), err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": 2.5}, "max_new_tokens must be a whole number of tokens, got 2.5"),
        ({"max_new_tokens": True}, "max_new_tokens must be a whole number of tokens, got True"),
        ({"max_new_tokens": -1}, "max_new_tokens must be >= 0, got -1"),
        ({"max_new_tokens": 10**10}, "max_new_tokens must be at most 1,048,576"),
        ({"seed": -1}, r"seed: seed -1 is out of range; seeds go from 0 to 2\*\*63 - 1"),
        ({"seed": 2**63}, "seed: seed 9223372036854775808 is out of range"),
        ({"seed": 1.5}, r"seed must be an integer from 0 to 2\*\*63 - 1, got 1.5"),
        ({"prompt": 3}, "prompt must be text"),
        ({"sampler": 5}, r"sampler: expected a sampler name or a \{name = \.\.\., options\}"),
        ({"sampler": {"k": 3}}, "sampler: expected a sampler name"),
        ({"sampler": "no-such"}, "unknown sampler 'no-such'"),
        ({"device": "meta"}, "device meta: not a device models run on"),
        ({"device": "cuda:7"}, "device cuda:7: "),
    ],
)
def test_the_python_api_refuses_bad_arguments_in_one_line(run_dir, kwargs, message) -> None:
    import toolkit

    with pytest.raises(ToolkitError, match=message) as raised:
        toolkit.generate(run_dir, **{"prompt": "def ", **kwargs})
    assert "\n" not in str(raised.value)


def test_the_bounds_themselves_are_accepted(capsys, run_dir) -> None:
    import toolkit
    from toolkit.inference.generate import MAX_NEW_TOKENS, check_max_new_tokens

    assert check_max_new_tokens(MAX_NEW_TOKENS, "n") == MAX_NEW_TOKENS == 1 << 20
    with pytest.raises(SpecError, match=r"^n must be at most 1,048,576 \(new tokens of one"):
        check_max_new_tokens(MAX_NEW_TOKENS + 1, "n")

    assert toolkit.generate(run_dir, "def ", max_new_tokens=0, seed=2**63 - 1) == ""
    assert len(toolkit.generate(run_dir, "def ", sampler="greedy", max_new_tokens=3, seed=0)) <= 3
    # The run's own sampler, named, keeps the run's options (k=3), as `ablate generate` does.
    named = [toolkit.generate(run_dir, sampler="top-k", seed=s) for s in range(6)]
    assert named == [toolkit.generate(run_dir, seed=s) for s in range(6)]
    assert named == [
        toolkit.generate(run_dir, sampler={"name": "top-k", "k": 3}, seed=s) for s in range(6)
    ]
    rc, out, err = ablate(capsys, run_dir, "--max-new-tokens", 0, "--seed", 2**63 - 1)
    assert rc == 0 and out == "def \n" and err == ""


def test_a_checkpoint_file_alone(capsys, tmp_path, run_dir) -> None:
    rc, beside, _ = ablate(capsys, run_dir / "checkpoint.pt", "--sampler", "greedy")
    assert rc == 0  # config.json beside it gives the tokenizer and sampling defaults
    shutil.copy(run_dir / "checkpoint.pt", tmp_path / "model.pt")
    rc, alone, _ = ablate(capsys, tmp_path / "model.pt", "--tokenizer", "bytes", "--prompt", "def ", "--sampler", "greedy", "--max-new-tokens", 4)  # fmt: skip
    assert rc == 0 and alone == beside
    # A checkpoint that names its tokenizer needs no flag.
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.save({**checkpoint, "tokenizer": "bytes"}, tmp_path / "named.pt")
    rc, named, _ = ablate(capsys, tmp_path / "named.pt", "--prompt", "def ", "--sampler", "greedy", "--max-new-tokens", 4)  # fmt: skip
    assert rc == 0 and named == beside
    # A config.json beside it that cannot be read is said, in one line, not passed over.
    (tmp_path / "config.json").write_text("{ not json")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        rc, again, err = ablate(capsys, tmp_path / "named.pt", "--prompt", "def ", "--sampler", "greedy", "--max-new-tokens", 4)  # fmt: skip
    assert rc == 0 and again == beside
    assert err.startswith("warning: ") and err.count("\n") == 1
    assert "config.json cannot be read (JSONDecodeError:" in err


def test_a_bpe_run_uses_its_learned_tokenizer(capsys, tmp_path, tmp_path_factory) -> None:
    text = "".join(f"def f{i}(x, y):\n    return x * {i} + y / {i * 7}\n" for i in range(300))
    (tmp_path / "code.txt").write_text(text)
    folder = train_tiny(
        tmp_path / "out",
        tmp_path_factory.getbasetemp(),
        corpus={"name": "files", "path": str(tmp_path / "code.txt")},
        tokenizer={"name": "bpe", "vocab_size": 300},
    )
    rc, out, err = ablate(capsys, folder, "--sampler", "greedy", "--max-new-tokens", 6)
    assert rc == 0 and out.startswith("def ") and err == ""

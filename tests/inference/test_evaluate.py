"""Whole-corpus evaluation: every token after the first scored once (checked against a
brute-force loop), bits per byte by definition, batch size irrelevant; and `ablate eval` on a
trained run folder and on an imported Hugging Face checkpoint."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import toolkit
from toolkit.cli import main as cli_main
from toolkit.data.tokens import load_tokens
from toolkit.errors import DataError
from toolkit.inference.evaluate import combine, evaluate_checkpoint, evaluate_corpus
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model
from toolkit.spec.parse import parse_spec
from toolkit.sweep.results import TASKS_FILE
from toolkit.sweep.runner import run

CONTEXT = 8


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=50, context_length=CONTEXT, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.2
    )
    return build_model(config)


def random_tokens(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 50, n).astype(np.uint16)
    token_bytes = rng.integers(0, 4, 50)  # some ids stand for no bytes (end-of-text)
    return tokens, token_bytes


def brute_force(model: nn.Module, tokens: np.ndarray, context: int) -> float:
    """Summed nats, one target at a time: target t is predicted from its window's tokens
    before it (windows of `context` inputs start at 0, context, 2 context, ...)."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for t in range(1, len(tokens)):
            start = (t - 1) // context * context
            x = torch.tensor(tokens[start:t], dtype=torch.long)[None]
            logits = model(x)[0, -1]
            total += F.cross_entropy(logits, torch.tensor(int(tokens[t]))).item()
    return total


@pytest.mark.parametrize("n", [3 * CONTEXT + 6, 2 * CONTEXT + 1, 5, 2])
def test_every_token_after_the_first_is_scored_once(model, n):
    tokens, token_bytes = random_tokens(n)
    model.train()
    result = evaluate_corpus(model, tokens, token_bytes, CONTEXT, batch_size=2)
    assert model.training  # restored
    nats = brute_force(model, tokens, CONTEXT)
    n_bytes = int(token_bytes[tokens[1:]].sum())
    assert result["tokens"] == n - 1 and result["bytes"] == n_bytes
    assert result["nats"] == pytest.approx(nats, rel=1e-5)
    assert result["loss"] == pytest.approx(nats / (n - 1), rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]), rel=1e-9)
    assert result["bpb"] == pytest.approx(nats / (math.log(2) * n_bytes), rel=1e-5)


def test_batch_size_and_memory_mapping_do_not_change_the_result(model, tmp_path):
    tokens, token_bytes = random_tokens(7 * CONTEXT + 3, seed=1)
    np.save(tmp_path / "tokens.npy", tokens)
    mapped = np.load(tmp_path / "tokens.npy", mmap_mode="r")
    seen = []
    results = [
        evaluate_corpus(
            model, mapped, token_bytes, CONTEXT, b, progress=lambda d, t: seen.append((d, t))
        )
        for b in (1, 2, 3, 7, 100)
    ]
    for r in results[1:]:
        assert r["tokens"] == results[0]["tokens"] and r["bytes"] == results[0]["bytes"]
        assert r["loss"] == pytest.approx(results[0]["loss"], rel=1e-6)
    assert seen[-1] == (7 * CONTEXT + 2, 7 * CONTEXT + 2)
    shorter = evaluate_corpus(model, mapped, token_bytes, 3, 4)  # a shorter context is allowed
    assert shorter["tokens"] == results[0]["tokens"]
    assert shorter["loss"] == pytest.approx(
        brute_force(model, tokens, 3) / shorter["tokens"], rel=1e-5
    )


def test_combine_sums_exactly(model):
    tokens, token_bytes = random_tokens(40, seed=2)
    a = evaluate_corpus(model, tokens[:25], token_bytes, CONTEXT, 4)
    b = evaluate_corpus(model, tokens[25:], token_bytes, CONTEXT, 4)
    both = combine([a, b])
    assert both["tokens"] == 38 and both["bytes"] == a["bytes"] + b["bytes"]
    assert both["loss"] == pytest.approx((a["nats"] + b["nats"]) / 38, rel=1e-12)
    assert both["bpb"] == pytest.approx((a["nats"] + b["nats"]) / (math.log(2) * both["bytes"]))


def test_bad_arguments(model):
    tokens, token_bytes = random_tokens(10)
    with pytest.raises(DataError, match="at least 2"):
        evaluate_corpus(model, tokens[:1], token_bytes, CONTEXT, 2)
    with pytest.raises(DataError, match="batch_size"):
        evaluate_corpus(model, tokens, token_bytes, CONTEXT, 0)


# -- ablate eval ------------------------------------------------------------------------------
def write_text(path, n_words: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    words = ["the", "model", "predicts", "next", "token", "byte", "loss", "of", "a", "é"]
    path.write_text(" ".join(words[i] for i in rng.integers(0, len(words), n_words)) + "\n")
    return path


@pytest.mark.parametrize(
    ("attention", "positional"),
    [
        ("multihead", "rope"),
        ("multihead", "alibi"),
        ("sdpa", "alibi"),
        ({"name": "sliding-window", "window": 3}, "rope"),
        ("sdpa", "sinusoidal"),
        ("mla", "none"),
    ],
)
def test_a_model_whose_positional_reads_any_length_is_scored_in_longer_windows(
    attention, positional
):
    """Train short, test long: windows past context_length score each target from its
    window's tokens before it, as the definition (the brute-force loop) says."""
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=50, context_length=CONTEXT, emb_dim=16, n_heads=2, n_layers=2,
        drop_rate=0.0, attention=attention, positional=positional,
    )  # fmt: skip
    model = build_model(config)
    tokens, token_bytes = random_tokens(5 * CONTEXT + 3)
    long = 2 * CONTEXT + 3
    got = evaluate_corpus(model, tokens, token_bytes, long, batch_size=2)
    assert got["nats"] == pytest.approx(brute_force(model, tokens, long), rel=1e-5)


def run_doc(text, **model) -> dict:
    """A spec document that trains a tiny byte-level model on `text` for four steps (model
    keys added or replaced by `model`), keeping its checkpoint and writing no sample."""
    return {
        "name": "tiny",
        "seeds": [0],
        "data": {"path": str(text), "tokenizer": "bytes", "val_fraction": 0.1},
        "model": {"context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 1, **model},
        "train": {"batch_size": 4, "max_steps": 4, "eval_interval": 4, "eval_batches": 1},
        "sampling": {"max_new_tokens": 0},
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, corpus file): a tiny model trained for a few steps on a small text file."""
    root = tmp_path_factory.mktemp("eval-run")
    text = write_text(root / "corpus.txt")
    doc = run_doc(text)
    with pytest.MonkeyPatch.context() as mp:  # the session's cache, before the autouse fixture
        mp.setenv("ABLATE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        mp.setenv("ABLATE_DISABLE_PLUGIN_AUTOLOAD", "1")
        run(parse_spec(doc), root / "out", progress=False)
    return root / "out" / "base" / "seed-0", text


def parse(out: str) -> dict[str, dict[str, float]]:
    rows = {}
    for name, loss, _ppl, bpb, tokens in re.findall(
        r"^(\w+)\s+loss (\S+)\s+perplexity (\S+)\s+bits per byte (\S+)\s+\(([\d,]+) tokens",
        out,
        re.M,
    ):
        rows[name] = {
            "loss": float(loss),
            "bpb": float(bpb),
            "tokens": int(tokens.replace(",", "")),
        }
    return rows


def test_eval_a_run_folder(trained, capsys):
    folder, text = trained
    before = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert cli_main(["eval", str(folder), "--batch-size", "64"]) == 0
    out = capsys.readouterr().out
    rows = parse(out)
    assert list(rows) == ["val"] and "tokenizer bytes" in out  # a run folder: its held-out text

    from toolkit.api.manager import Plugins
    from toolkit.model.checkpoint import load_model

    plugins = Plugins(autoload=False)
    tok = plugins.registry.get("tokenizer", "bytes").build()
    corpus = plugins.registry.get("corpus", "files").build(path=str(text))
    data = load_tokens(corpus, tok, 0.1)
    model = load_model(folder / "checkpoint.pt", plugins)
    expected = {
        s: evaluate_corpus(model, getattr(data, s), data.token_bytes, 16, 48)
        for s in ("train", "val")
    }
    assert rows["val"]["tokens"] == len(data.val) - 1
    assert rows["val"]["loss"] == pytest.approx(expected["val"]["loss"], abs=6e-5)
    assert rows["val"]["bpb"] == pytest.approx(expected["val"]["bpb"], abs=6e-5)

    assert (
        cli_main(["eval", str(folder / "checkpoint.pt"), "--split", "all", "--batch-size", "32"])
        == 0
    )
    rows = parse(capsys.readouterr().out)
    assert list(rows) == ["train", "val", "all"]
    everything = combine(expected.values())
    assert rows["all"]["tokens"] == everything["tokens"] == len(data.train) + len(data.val) - 2
    assert rows["all"]["loss"] == pytest.approx(everything["loss"], abs=6e-5)
    assert rows["train"]["loss"] == pytest.approx(expected["train"]["loss"], abs=6e-5)

    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == before  # wrote nothing

    argv = ["eval", str(folder), "--context", "5", "--split", "train", "--batch-size", "64"]
    assert cli_main(argv) == 0
    rows = parse(capsys.readouterr().out)
    assert rows["train"]["loss"] == pytest.approx(
        evaluate_corpus(model, data.train, data.token_bytes, 5, 32)["loss"], abs=6e-5
    )
    # A length asked for: the score is recorded in the run folder, and nothing else is touched.
    after = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert set(after) - set(before) == {folder / TASKS_FILE}
    assert {p: t for p, t in after.items() if p in before} == before
    held = json.loads((folder / TASKS_FILE).read_text())["tasks"]
    assert set(held) == {"train@5"}
    assert held["train@5"]["metrics"]["loss"] == pytest.approx(rows["train"]["loss"], abs=6e-5)


def test_eval_other_text_and_errors(trained, tmp_path, capsys):
    folder, _ = trained
    other = write_text(tmp_path / "other.txt", n_words=300, seed=1)
    assert cli_main(["eval", str(folder), "--data", str(other), "--split", "all"]) == 0
    assert parse(capsys.readouterr().out)["all"]["tokens"] == len(other.read_bytes()) - 2
    cases = {
        ("--context", "17"): "longer than the model's context_length (16)",
        ("--tokenizer", "gpt2"): "trained with tokenizer 'bytes', not 'gpt2', whose ids it never",
        ("--data", str(tmp_path / "missing.txt")): "missing.txt",
        ("--corpus", "nope"): "nope",
        ("--batch-size", "0"): "--batch-size must be at least 1",
        ("--val-fraction", "1.5"): "val_fraction",
    }
    for flags, message in cases.items():
        assert cli_main(["eval", str(folder), *flags]) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("ablate: error: ") and err.count("\n") == 1, err
        assert message in err, (flags, err)
    assert cli_main(["eval", str(folder), "--context", "17"]) == 2  # learned: 16 rows
    assert "its positional 'learned' reads no further" in capsys.readouterr().err
    assert cli_main(["eval", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["eval", str(folder.parent.parent)]) == 0  # the experiment folder: a table
    assert "val loss (nats/token) by window length" in capsys.readouterr().out


def test_ablate_eval_scores_a_rope_run_in_windows_longer_than_it_trained_on(tmp_path, capsys):
    text = write_text(tmp_path / "corpus.txt")
    run(parse_spec(run_doc(text, positional="rope")), tmp_path / "out", progress=False)
    folder = tmp_path / "out" / "base" / "seed-0"
    scores = {}
    for context in ("16", "64"):
        assert cli_main(["eval", str(folder), "--context", context]) == 0
        out = capsys.readouterr().out
        assert f"context {context};" in out
        scores[context] = parse(out)["val"]
    assert scores["16"]["tokens"] == scores["64"]["tokens"]  # the same targets, longer windows
    assert scores["16"]["loss"] != scores["64"]["loss"]
    # One run at one length is recorded as the experiment's table records it, for the report.
    held = json.loads((folder / TASKS_FILE).read_text())["tasks"]
    assert set(held) == {"val@16", "val@64"}
    assert held["val@64"]["metrics"]["loss"] == pytest.approx(scores["64"]["loss"], abs=6e-5)
    assert held["val@64"]["settings"]["context"] == 64
    assert cli_main(["report", str(tmp_path / "out")]) == 0
    assert "val@64/loss" in capsys.readouterr().out


@pytest.mark.slow
def test_eval_an_imported_hf_checkpoint(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=257)
    ).eval()
    hf.save_pretrained(tmp_path / "hf")
    checkpoint = tmp_path / "gpt.pt"
    argv = ["import", "--format", "hf-gpt2", str(tmp_path / "hf"), "--out", str(checkpoint)]
    assert cli_main(argv) == 0
    text = write_text(tmp_path / "text.txt", n_words=400)
    capsys.readouterr()

    assert cli_main(["eval", str(checkpoint), "--data", str(text)]) == 2  # vocab 257
    assert "e.g. --tokenizer bytes (257 ids)" in capsys.readouterr().err
    argv = ["eval", str(checkpoint), "--data", str(text), "--tokenizer", "bytes"]
    assert cli_main([*argv, "--context", "20", "--batch-size", "64"]) == 0
    rows = parse(capsys.readouterr().out)
    assert list(rows) == ["train", "val", "all"]  # a bare checkpoint: all of the text

    class HF(nn.Module):  # transformers' own model, scored by the same windows
        def forward(self, x):
            return hf(x).logits

    from toolkit.api.manager import Plugins

    plugins = Plugins(autoload=False)
    tok = plugins.registry.get("tokenizer", "bytes").build()
    data = load_tokens(plugins.registry.get("corpus", "files").build(path=str(text)), tok, 0.1)
    expected = combine(
        evaluate_corpus(HF(), a, data.token_bytes, 20, 32) for a in (data.train, data.val)
    )
    assert rows["all"]["loss"] == pytest.approx(expected["loss"], abs=6e-5)
    assert rows["all"]["bpb"] == pytest.approx(expected["bpb"], abs=6e-5)


def test_a_learned_tokenizer_is_the_runs_even_on_other_text(tmp_path, capsys):
    """bpe learns its merges from the run's training text: evaluating other text must use
    those merges, not learn new ones from the other text."""
    text = write_text(tmp_path / "corpus.txt")
    doc = {
        "name": "bpe",
        "data": {"path": str(text), "tokenizer": {"name": "bpe", "vocab_size": 280}},
        "model": {"context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 1},
        "train": {"batch_size": 4, "max_steps": 2, "eval_interval": 2, "eval_batches": 1},
        "sampling": {"max_new_tokens": 0},
    }
    run(parse_spec(doc), tmp_path / "out", progress=False)
    folder = tmp_path / "out" / "base" / "seed-0"
    other = write_text(tmp_path / "other.txt", n_words=300, seed=3)
    argv = ["eval", str(folder), "--data", str(other), "--split", "all", "--batch-size", "64"]
    assert cli_main(argv) == 0
    rows = parse(capsys.readouterr().out)

    from toolkit.api.manager import Plugins

    plugins = Plugins(autoload=False)
    tok = plugins.registry.get("tokenizer", "bpe").build(vocab_size=280)
    load_tokens(plugins.registry.get("corpus", "files").build(path=str(text)), tok, 0.1)
    content = other.read_text()
    cut = round(len(content) * 0.9)
    n_tokens = len(tok.encode(content[:cut])) + len(tok.encode(content[cut:]))
    assert rows["all"]["tokens"] == n_tokens - 2

    # The checkpoint keeps the merges: alone, or with the text they came from edited, it
    # scores as before; the run's own corpus, edited, is refused (its splits are not the run's).
    raw = torch.load(folder / "checkpoint.pt", weights_only=True)
    torch.save(raw, tmp_path / "bare.pt")
    bare = ["eval", str(tmp_path / "bare.pt"), *argv[2:]]
    assert cli_main(bare) == 0 and parse(capsys.readouterr().out)["all"] == rows["all"]
    text.write_text(text.read_text().upper())
    assert cli_main(argv) == 0 and parse(capsys.readouterr().out)["all"] == rows["all"]
    assert cli_main(["eval", str(folder)]) == 2
    assert "is not the text" in capsys.readouterr().err
    assert cli_main(["eval", str(tmp_path / "bare.pt"), "--tokenizer", "bpe"]) == 2
    assert "trained with tokenizer 'bpe (vocab_size=280)', not 'bpe'" in capsys.readouterr().err
    # A checkpoint from before checkpoints kept the merges learns them again from the run's
    # text, and refuses when that text has changed.
    del raw["tokenizer_state"]
    torch.save(raw, folder / "checkpoint.pt")
    assert cli_main(argv) == 2
    assert "has changed since the run trained" in capsys.readouterr().err


def test_ablate_eval_tabulates_a_sweep_by_window_length(tmp_path, capsys):
    text = write_text(tmp_path / "corpus.txt", n_words=3000)
    doc = {**run_doc(text), "seeds": [0, 1], "grid": {"model.positional": ["learned", "alibi"]}}
    run(parse_spec(doc), tmp_path / "out", progress=False)
    assert cli_main(["eval", str(tmp_path / "out"), "--context", "16,48"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    learned, alibi = rows["positional=learned"], rows["positional=alibi"]
    assert learned[1] == "2" and learned[-1] == "-" and len(learned) == 6  # none past 16
    assert alibi[1] == "2" and len(alibi) == 8  # variant, seeds, 2 x (mean ± std)
    run_dir = tmp_path / "out" / "positional=alibi" / "seed-1"
    one = evaluate_checkpoint(run_dir, context=48).results["val"]["loss"]
    other = evaluate_checkpoint(run_dir.parent / "seed-0", context=48).results["val"]["loss"]
    assert float(alibi[5]) == pytest.approx((one + other) / 2, abs=6e-5)
    assert "-: longer than the context_length the model trained at" in out
    for bad in ("16,x", "0", "16,,32"):
        assert cli_main(["eval", str(tmp_path / "out"), "--context", bad]) == 2
        err = capsys.readouterr().err
        assert (
            err.startswith("ablate: error: --context takes window lengths") and err.count("\n") == 1
        )
    assert cli_main(["eval", str(tmp_path / "out"), "--context", "16,48,16"]) == 2
    assert "--context lists 16 twice" in capsys.readouterr().err

    # Recorded in each run folder, so the report compares them with the baseline's.
    held = json.loads((run_dir / TASKS_FILE).read_text())["tasks"]
    assert set(held) == {"val@16", "val@48"}
    assert held["val@48"]["metrics"]["loss"] == pytest.approx(one, abs=1e-6)
    assert held["val@48"]["settings"]["tokenizer"] == "bytes"
    learned_held = json.loads(
        (tmp_path / "out" / "positional=learned" / "seed-0" / TASKS_FILE).read_text()
    )
    assert set(learned_held["tasks"]) == {"val@16"}  # refused at 48: nothing recorded
    summary = toolkit.compare(tmp_path / "out").set_index("variant")
    assert summary.loc["positional=alibi", "task:val@48/loss_mean"] == pytest.approx(
        (one + other) / 2, abs=1e-6
    )
    assert math.isnan(summary.loc["positional=learned", "task:val@48/loss_mean"])
    assert not math.isnan(summary.loc["positional=alibi", "task:val@16/loss_p"])
    assert cli_main(["report", str(tmp_path / "out")]) == 0
    report = capsys.readouterr().out
    assert "scores after training:" in report and "val@48/loss" in report


def test_window_scores_across_tokenizers_compare_by_bits_per_byte(tmp_path, capsys):
    """A grid over tokenizers, each run scored in longer windows with its own tokenizer: one
    way of scoring (no warning that the means mix two), and only bits per byte is tested
    against the baseline, as a loss per token of other tokens does not compare."""
    text = write_text(tmp_path / "corpus.txt", n_words=3000)
    doc = {**run_doc(text), "seeds": [0, 1]}
    doc["grid"] = {"data.tokenizer": ["bytes", {"name": "bpe", "vocab_size": 280}]}
    run(parse_spec(doc), tmp_path / "out", progress=False)
    assert cli_main(["eval", str(tmp_path / "out"), "--context", "16"]) == 0
    capsys.readouterr()
    summary = toolkit.compare(tmp_path / "out")
    assert summary.attrs["task_settings_differ"] == {}
    other = summary.set_index("variant").drop(index=summary.attrs["baseline"]).iloc[0]
    assert not math.isnan(other["task:val@16/bpb_p"])
    assert math.isnan(other["task:val@16/loss_p"]) and math.isnan(other["task:val@16/loss_delta"])
    assert not math.isnan(other["task:val@16/loss_mean"])
    assert cli_main(["report", str(tmp_path / "out")]) == 0
    assert "scored in 2 ways" not in capsys.readouterr().out

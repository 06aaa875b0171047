"""Ablations that start from trained weights: `model.init_from` keeps the weights where the
change allows (untie: the head starts as a copy of the embedding) and refuses clearly where it
does not (changing emb_dim)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import TINY

from toolkit.errors import SpecError
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run


@pytest.fixture(scope="module")
def trained(tmp_path_factory, plugins):
    """One trained run, read (never written) by every test here."""
    doc = copy.deepcopy(TINY)
    doc["model"]["tie_embeddings"] = True
    doc["train"]["max_steps"] = 12
    out = tmp_path_factory.mktemp("base")
    run(parse_spec(doc), out, plugins=plugins, progress=False)
    return out / "base/seed-0"


def first_eval(folder):
    return json.loads((folder / "metrics.jsonl").read_text().splitlines()[0])


def test_fine_tune_variants_start_from_the_checkpoint(trained, tmp_path, plugins):
    final = json.loads((trained / "summary.json").read_text())["val_loss"]
    doc = {
        "name": "finetune",
        "data": {"tokenizer": "bytes"},
        "model": {"init_from": str(trained)},  # sizes come from the checkpoint
        "train": {
            "max_steps": 1,
            "eval_interval": 1,
            "eval_batches": 2,
            "batch_size": 4,
            "lr": 1e-12,
        },
        "sampling": {"max_new_tokens": 0},
        "variants": [
            {"name": "same"},
            {"name": "untied", "model.tie_embeddings": False},
            {"name": "dropout", "model.drop_rate": 0.3},
        ],
    }
    spec = parse_spec(doc)
    assert spec.runs[0].model.emb_dim == 32 and spec.runs[0].model.tie_embeddings is True
    table = run(spec, tmp_path / "ft", plugins=plugins, progress=False)
    assert set(table["status"]) == {"ok"}
    for variant in ["same", "untied", "dropout"]:
        # A learning rate of 1e-12 leaves the weights where the checkpoint had them.
        assert first_eval(tmp_path / f"ft/{variant}/seed-0")["val_loss"] == pytest.approx(
            final, abs=1e-4
        )
    untied = torch.load(tmp_path / "ft/untied/seed-0/checkpoint.pt", weights_only=True)["model"]
    torch.testing.assert_close(
        untied["out_head.weight"], untied["tok_emb.weight"], atol=1e-6, rtol=0
    )
    assert untied["out_head.weight"].data_ptr() != untied["tok_emb.weight"].data_ptr()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"emb_dim": 64}, r"tok_emb.weight: \(257, 32\) in the weights, \(257, 64\) in the model"),
        ({"norm": "rmsnorm"}, r"do not fit this model \((missing|unexpected) "),
        ({"preset": "nano"}, "either preset or init_from"),
    ],
)
def test_changes_that_do_not_fit_the_weights_fail_before_training(
    trained, tmp_path, plugins, model, message
):
    from toolkit.sweep.preflight import prepare_data

    doc = {"data": {"tokenizer": "bytes"}, "model": {"init_from": str(trained), **model}}
    with pytest.raises(SpecError, match=message):
        prepare_data(parse_spec(doc), plugins)


def test_a_missing_checkpoint_is_a_spec_error():
    with pytest.raises(SpecError, match=r"model.init_from: .*nothing.pt does not exist"):
        parse_spec({"data": {"tokenizer": "bytes"}, "model": {"init_from": "nothing.pt"}})


@pytest.mark.slow
def test_fine_tune_ablation_from_an_imported_hf_checkpoint(tmp_path, plugins, capsys):
    transformers = pytest.importorskip("transformers")
    from toolkit.cli import main

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=257)
    )
    hf.save_pretrained(tmp_path / "hf")
    imported = tmp_path / "gpt2-tiny.pt"
    assert (
        main(["import", "--format", "hf-gpt2", str(tmp_path / "hf"), "--out", str(imported)]) == 0
    )
    spec = tmp_path / "finetune.toml"
    spec.write_text(f"""
name = "finetune"
[data]
tokenizer = "bytes"
[model]
init_from = "{imported}"
context_length = 64
[train]
max_steps = 3
eval_interval = 3
eval_batches = 2
batch_size = 2
[sampling]
max_new_tokens = 4
[grid]
"model.tie_embeddings" = [true, false]
"model.drop_rate" = [0.0, 0.1]
""")
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    table = __import__("pandas").read_csv(tmp_path / "out/results.csv")
    assert len(table) == 4 and set(table["status"]) == {"ok"}
    assert set(table["params"]) == {hf.num_parameters(), hf.num_parameters() + 257 * 32}
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                str(tmp_path / "out/tie_embeddings=true,drop_rate=0.0/seed-0"),
                "--split",
                "val",
            ]
        )
        == 0
    )
    assert "perplexity" in capsys.readouterr().out


def test_a_checkpoint_of_another_tokenizer_fails_before_training(trained, tmp_path, plugins):
    """Fine-tuning feeds the checkpoint's embeddings this run's ids: they must be the ids it
    learned. Its run's tokenizer is compared by name and options, a learned one (bpe) also by
    what it learned, and a vocabulary that does not fit says which tokenizer to use."""
    from toolkit.sweep.preflight import prepare_data

    def fine_tune(tokenizer, source, path):
        doc = {"data": {"tokenizer": tokenizer, "path": str(path)}, "model": {"init_from": source}}
        prepare_data(parse_spec(doc), plugins)

    words = "the quick brown fox jumps over the lazy dog while a cat sleeps in the sun\n"
    text_a, text_b = tmp_path / "a.txt", tmp_path / "b.txt"
    text_a.write_text(words * 40)
    text_b.write_text(words.upper() * 40)
    with pytest.raises(SpecError, match=r"train with the tokenizer model\.init_from's checkpoint"):
        fine_tune("gpt2", str(trained), text_a)  # 50,257 ids into 257 rows
    bpe = {"name": "bpe", "vocab_size": 270}
    doc = copy.deepcopy(TINY) | {"data": {"tokenizer": bpe, "path": str(text_a)}}
    doc["model"] = doc["model"] | {"context_length": 8}
    doc["train"] = doc["train"] | {"max_steps": 1, "batch_size": 2}
    run(parse_spec(doc), tmp_path / "bpe", plugins=plugins, progress=False)
    source = str(tmp_path / "bpe/base/seed-0")
    fine_tune(bpe, source, text_a)  # its own tokenizer, learned from its own text: fine
    with pytest.raises(SpecError, match=r"learned from other text than this run's training"):
        fine_tune(bpe, source, text_b)
    with pytest.raises(SpecError, match=r"trained with tokenizer 'bpe \(vocab_size=270\)', but "):
        fine_tune("bytes", source, text_a)

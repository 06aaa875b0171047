"""What the book's chapter-5 recipe needs from training: evaluation on the windows training
visits, weight decay on every parameter, and run records that say which evaluation they used."""

from __future__ import annotations

import json

import pytest

from toolkit.analysis.table import summarize
from toolkit.analysis.text import format_summary
from toolkit.model.gpt import build_model
from toolkit.spec.parse import parse_spec
from toolkit.spec.schema import with_legacy_values
from toolkit.sweep.runner import run
from toolkit.training.optimizer import make_optimizer

# A short text the tiny model can learn by heart: 854 byte tokens, 769 of them for training,
# 24 training windows of 32 tokens. Not repetitive: memorizing it means memorizing each window.
TEXT = (
    "It had always been my habit to look at the pictures before the people, and so it was "
    "that I saw the little portrait first: a woman in grey against a window, her hands in her "
    "lap, the light falling on one side of her face. Nobody in the room was talking about it. "
    "They were talking about the frame, which was new and very expensive, and about the "
    "painter, who had died the winter before and left the house to his sister. I asked her "
    "whether the portrait had been sold. She said it had not been offered; her brother had "
    "kept it by his bed for twenty years, turned to the wall. Then she laughed, and said "
    "that I should take it if I liked it so much, because she could not bear to look at it. "
    "I carried it home under my arm through the rain, and when I unwrapped it on my table "
    "the woman in grey was smiling, which I was almost sure she had not been before. "
)


def _memorize(tmp_path, windows: str, **train) -> dict:
    corpus = tmp_path / "story.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    doc = {
        "name": f"memorize-{windows}",
        "seeds": [0],
        "data": {"path": str(corpus), "tokenizer": "bytes", "val_fraction": 0.1},
        "model": {
            "context_length": 32, "emb_dim": 64, "n_heads": 4, "n_layers": 2,
            "drop_rate": 0.0, "positional": "learned",
        },
        "train": {
            "batch_size": 4, "epochs": 40, "lr": 3e-3, "min_lr_ratio": 1.0, "grad_clip": 0,
            "eval_interval": 1000, "eval_batches": 2, "eval_windows": windows,
            "checkpoint": False, **train,
        },
        "sampling": {"max_new_tokens": 0},
    }  # fmt: skip
    table = run(parse_spec(doc), tmp_path / windows, progress=False)
    return table.iloc[0].to_dict()


@pytest.mark.slow
def test_a_memorized_text_scores_near_zero_on_the_windows_it_trained_on(tmp_path):
    # The shape of the book's chapter-5 curve in miniature: a model that memorizes its training
    # text with learned absolute positions. On the trained windows (the grid) its train loss
    # falls far below the first epoch's; on windows shifted off the grid ("spread") it stays
    # high, which is what the toolkit reported before train.eval_windows.
    grid = _memorize(tmp_path, "grid")
    spread = _memorize(tmp_path, "spread")
    assert grid["train_loss"] < 0.5, (
        f"after 40 epochs on {len(TEXT)} characters the train loss on the trained windows is "
        f"{grid['train_loss']:.3f}, not below 0.5: the model no longer memorizes its windows, "
        f"or the train split is no longer scored on the windows it trains on"
    )
    assert spread["train_loss"] > grid["train_loss"] + 0.5, (
        f"spread windows scored {spread['train_loss']:.3f} and grid {grid['train_loss']:.3f}; "
        f"the two evaluations should differ for a model memorizing positions"
    )
    assert grid["eval_windows"] == "grid" and spread["eval_windows"] == "spread"


def test_weight_decay_on_all_parameters_or_on_matrices_only(tiny_doc):
    tiny_doc["train"]["weight_decay"] = 0.1
    for target, decayed_vectors in (("matrices", False), ("all", True)):
        tiny_doc["train"]["weight_decay_on"] = target
        r = parse_spec(tiny_doc).runs[0]
        model = build_model(r.model_config(257))
        optimizer = make_optimizer(model, r, "cpu")
        decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
        params = list(model.parameters())
        assert len(decay) == len(params)  # every parameter in exactly one group
        for p in params:
            expected = 0.1 if p.dim() >= 2 or decayed_vectors else 0.0
            assert decay[id(p)] == expected, (target, tuple(p.shape))


def test_a_run_records_its_evaluation_and_older_records_read_as_spread(tmp_path, tiny_doc):
    table = run(parse_spec(tiny_doc), tmp_path / "a", progress=False)
    assert table["eval_windows"].tolist() == ["grid"]
    config = json.loads((tmp_path / "a/base/seed-0/config.json").read_text())
    assert config["train"]["eval_windows"] == "grid"
    old = {**config, "train": {k: v for k, v in config["train"].items() if k != "eval_windows"}}
    assert with_legacy_values(old)["train"]["eval_windows"] == "spread"
    assert "eval_windows" not in old["train"]  # a copy: the record read is left alone


def test_the_hash_of_a_run_at_the_old_evaluation_is_the_hash_it_had_before(tiny_doc):
    tiny_doc["train"]["eval_windows"] = "spread"
    spread = parse_spec(tiny_doc).runs[0]
    tiny_doc["train"]["eval_windows"] = "grid"
    grid = parse_spec(tiny_doc).runs[0]
    assert spread.config_hash() != grid.config_hash()
    # The hash runs had before these keys existed: the same body without them.
    import hashlib
    from dataclasses import asdict

    body = {name: asdict(getattr(spread, name)) for name in ("data", "model", "train", "sampling")}
    for key in ("eval_windows", "weight_decay_on", "max_flops", "target_loss", "optimizer",
                "schedule"):  # fmt: skip
        del body["train"][key]
    for key in ("split", "test_fraction", "val_documents", "test_documents"):
        del body["data"][key]
    for key in ("ffn_hidden", "bias", "logit_softcap", "z_loss", "recipe"):
        del body["model"][key]
    body["seed"] = spread.seed
    before = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    assert spread.config_hash() == before[:16]


def _runs(windows: dict[str, list[str]]):
    import pandas as pd

    rows = []
    for variant, per_seed in windows.items():
        for seed, w in enumerate(per_seed):
            rows.append({
                "variant": variant, "seed": seed, "status": "ok", "baseline": variant == "base",
                "val_loss": 2.0 + 0.01 * seed + (0.1 if variant != "base" else 0.0),
                "val_perplexity": 7.4, "val_bpb": 1.0, "train_loss": 1.9, "causal": True,
                "eval_windows": w,
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_a_table_mixing_evaluations_flags_them_and_says_why():
    summary = summarize(_runs({"base": ["grid"] * 2, "a": ["spread"] * 2, "b": ["grid"] * 2}))
    flags = dict(zip(summary["variant"], summary["flags"], strict=True))
    assert flags == {"base": "", "a": "eval windows: spread", "b": ""}
    assert "other evaluation windows than the baseline's" in format_summary(summary)
    mixed = summarize(_runs({"base": ["grid", "spread"]}))
    assert mixed["flags"].tolist() == ["eval windows: grid+spread"]
    same = summarize(_runs({"base": ["grid"] * 2, "a": ["grid"] * 2}))
    assert "evaluation windows" not in format_summary(same)
    # A failed run scored nothing: the windows a results table fills in for it flag nothing.
    failed = _runs({"base": ["grid"] * 3, "a": ["grid"] * 2})
    failed.loc[2, ["status", "eval_windows", "precision"]] = ["failed", "spread", "bf16-mixed"]
    failed.loc[:, "precision"] = failed["precision"].fillna("fp32")
    flags = summarize(failed).set_index("variant")["flags"].to_dict()
    assert flags == {"base": "1 failed, 2/3 seeds", "a": ""}

"""The mixture-of-experts feed-forward (plugins/moe.py): its routing, its load-balancing loss, its
active parameters, and a spec that compares it with a dense feed-forward at matched active
parameters."""

from __future__ import annotations

import copy
import json
import math
import tomllib

import pandas as pd
import pytest
import torch
from torch import nn

from plugins.activations import gelu_feed_forward
from plugins.moe import MixtureOfExperts, balance_loss, moe_feed_forward
from tests.conftest import small_toml, write_spec
from toolkit.analysis.table import summarize
from toolkit.api.manager import Plugins
from toolkit.cli import main
from toolkit.data.batches import eval_batches
from toolkit.data.resolve import load_data
from toolkit.errors import ComponentError, SpecError
from toolkit.model.checkpoint import load_model
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model, count_params
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run
from toolkit.testing import check_component
from toolkit.training.step import evaluate_batches
from toolkit.training.throughput import flops_per_token

PLUGINS = Plugins(autoload=False)  # the built-ins, moe among them
CONFIG = ModelConfig(vocab_size=50, context_length=16, emb_dim=16, n_heads=2, n_layers=2)


def moe(config: ModelConfig = CONFIG, **options) -> MixtureOfExperts:
    torch.manual_seed(0)
    return moe_feed_forward(config, **options)


def routed_rows(block: MixtureOfExperts, x: torch.Tensor) -> list[torch.Tensor]:
    """The rows each expert was given in one forward pass of x."""
    seen: list[torch.Tensor] = []
    hooks = [
        e.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
        for e in block.experts
    ]
    block(x)
    for hook in hooks:
        hook.remove()
    return seen


def test_each_token_goes_to_its_top_k_experts_only() -> None:
    block = moe(n_experts=4, top_k=2).eval()
    x = torch.randn(3, 5, CONFIG.emb_dim)
    seen = routed_rows(block, x)
    tokens = x.reshape(-1, CONFIG.emb_dim)
    best = block.router(tokens).topk(2, dim=-1).indices
    for i, token in enumerate(tokens):
        went = {e for e, rows in enumerate(seen) if (rows == token).all(dim=-1).any()}
        assert went == set(best[i].tolist())
    assert sum(len(rows) for rows in seen) == 2 * len(tokens)


def test_the_weights_of_a_tokens_experts_sum_to_one() -> None:
    # Identical experts: the output is the weighted sum of one output, which is that output
    # exactly when the weights sum to 1.
    block = moe(n_experts=4, top_k=3).eval()
    for e in block.experts[1:]:
        e.load_state_dict(block.experts[0].state_dict())
    x = torch.randn(2, 7, CONFIG.emb_dim)
    assert torch.allclose(block(x), block.experts[0](x), atol=1e-6)


def test_one_expert_is_the_dense_feed_forward() -> None:
    block = moe(n_experts=1, top_k=1)
    dense = gelu_feed_forward(CONFIG)
    dense.load_state_dict(block.experts[0].state_dict())
    x = torch.randn(2, 9, CONFIG.emb_dim)
    assert torch.equal(block(x), dense(x))


def test_balance_loss_is_its_formula() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    chosen = torch.tensor([[0, 1], [0, 1], [2, 0], [0, 1]])  # slots: 4, 3 and 1 of 8
    f = [4 / 8, 3 / 8, 1 / 8]
    p = [(0.7 + 0.5 + 0.1 + 0.6) / 4, (0.2 + 0.3 + 0.1 + 0.3) / 4, (0.1 + 0.2 + 0.8 + 0.1) / 4]
    expected = 3 * sum(fi * pi for fi, pi in zip(f, p, strict=True))
    assert balance_loss(probs, chosen).item() == pytest.approx(expected)
    # Uniform routing is the minimum, 1; everything to one expert is n_experts.
    uniform = torch.full((4, 4), 0.25)
    assert balance_loss(uniform, torch.tensor([[0], [1], [2], [3]])).item() == pytest.approx(1)
    one_hot = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 4)
    assert balance_loss(one_hot, torch.zeros(4, 1, dtype=torch.long)).item() == pytest.approx(4)


def test_aux_loss_is_weighted_while_training_and_absent_in_eval() -> None:
    block = moe(n_experts=4, top_k=2, aux_weight=0.5)
    nn.init.zeros_(block.router.weight)  # uniform router probabilities: the minimum, 1
    x = torch.randn(2, 6, CONFIG.emb_dim)
    block.train()(x)
    assert set(block.aux_losses) == {"moe_balance"}
    assert block.aux_losses["moe_balance"].item() == pytest.approx(0.5)
    block.eval()(x)
    assert block.aux_losses == {}


def test_a_model_can_be_copied_after_a_training_step() -> None:
    model = build_model({**CONFIG.to_dict(), "activation": "moe"}, PLUGINS).train()
    model(torch.zeros(1, 4, dtype=torch.long))
    assert model.gather_aux_losses()
    copied = copy.deepcopy(model)
    assert copied.gather_aux_losses() == {}


def test_active_parameters_and_flops_count_top_k_experts() -> None:
    n_experts, top_k, d, h, layers = 4, 2, CONFIG.emb_dim, 4 * CONFIG.emb_dim, CONFIG.n_layers
    config = ModelConfig(
        **{
            **CONFIG.to_dict(),
            "activation": {"name": "moe", "n_experts": n_experts, "top_k": top_k},
        }
    )
    model = build_model(config, PLUGINS)
    expert = 2 * d * h + h + d  # two Linears with biases
    unused = layers * (n_experts - top_k) * expert
    assert model.num_params(active=True) == model.num_params() - unused
    assert model.num_params(non_embedding=True, active=True) == (
        model.num_params(non_embedding=True) - unused
    )
    assert count_params(config, PLUGINS, active=True) == (
        model.num_params(active=True),
        model.num_params(non_embedding=True, active=True),
    )
    # FLOPs: 6 x the matrices a token multiplies by (router, top_k experts' weights, attention,
    # head) + the attention scores' 12 x layers x d x context.
    dense = build_model(CONFIG, PLUGINS)
    matrices = sum(m.weight.numel() for m in dense.modules() if isinstance(m, nn.Linear))
    matrices += layers * (top_k - 1) * 2 * d * h + layers * n_experts * d  # experts, router
    assert flops_per_token(model) == 6 * matrices + 12 * layers * d * CONFIG.context_length


def test_model_bias_false_leaves_no_bias_in_the_experts() -> None:
    for expert in ("gelu", "swiglu"):
        config = ModelConfig(**{**CONFIG.to_dict(), "bias": False})
        block = moe(config, n_experts=3, top_k=2, expert=expert)
        linears = [m for m in block.modules() if isinstance(m, nn.Linear)]
        assert len(linears) > 3 and all(m.bias is None for m in linears)


def test_residual_projections_are_the_experts_output_layers() -> None:
    block = moe(n_experts=3, top_k=1, expert="swiglu")
    assert block.residual_projections() == [e.down for e in block.experts]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_experts": 0}, "n_experts must be at least 1, got 0"),
        ({"top_k": 0}, "top_k must be at least 1, got 0"),
        ({"n_experts": 2, "top_k": 3}, r"top_k \(3\) is larger than n_experts \(2\); "),
        ({"aux_weight": -0.1}, "aux_weight must be a number >= 0, got -0.1"),
        (
            {"expert": "gelux"},
            "unknown expert 'gelux' .did you mean 'gelu'.*choose one of: .*swiglu",
        ),
        ({"expert": "moe"}, "unknown expert 'moe'"),
    ],
)
def test_bad_options_are_one_line_errors(options, message) -> None:
    with pytest.raises(ComponentError, match=message) as info:
        moe_feed_forward(CONFIG, **options)
    assert "\n" not in str(info.value)


def test_bad_options_fail_when_the_spec_is_read(tiny_doc) -> None:
    tiny_doc["model"]["activation"] = {"name": "moe", "n_experts": 2, "top_k": 3}
    with pytest.raises(SpecError, match=r"top_k \(3\) is larger than n_experts \(2\)") as info:
        parse_spec(tiny_doc, plugins=PLUGINS)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_conforms_with_gated_experts_and_top_1() -> None:
    # The defaults are a case of tests/testing/test_conformance.py, like every built-in.
    options = {"n_experts": 3, "top_k": 1, "expert": "swiglu"}
    check_component("activation", "moe", PLUGINS, options=options, max_examples=10)


# -- match_params = "active" ----------------------------------------------------------------
def dense_and_moe(doc: dict, match) -> dict:
    doc["match_params"] = match
    doc["model"]["ffn_hidden"] = None
    doc["variants"] = [
        {"name": "moe", "model": {"activation": {"name": "moe", "n_experts": 4, "top_k": 2}}},
        {"name": "dense"},
    ]
    return doc


def active_non_embedding(run) -> int:
    return count_params(run.model_config(257), PLUGINS, active=True)[1]


def test_match_params_active_matches_the_parameters_a_token_uses(tiny_doc) -> None:
    spec = parse_spec(dense_and_moe(tiny_doc, "active"), plugins=PLUGINS)
    runs = {r.variant: r for r in spec.runs}
    target, got = active_non_embedding(runs["moe"]), active_non_embedding(runs["dense"])
    assert runs["dense"].model.ffn_hidden > 4 * 32  # two experts' worth: wider than 4d
    assert abs(got / target - 1) < 0.02
    assert any(
        n.startswith("match_params: dense gets model.ffn_hidden = ")
        and "active non-embedding parameters against moe's" in n
        for n in spec.notes
    )


def test_match_params_total_is_true(tiny_doc) -> None:
    widths = []
    for match in (True, "total"):
        spec = parse_spec(dense_and_moe(copy.deepcopy(tiny_doc), match), plugins=PLUGINS)
        widths.append({r.variant: r.model.ffn_hidden for r in spec.runs})
        assert not any("active" in n for n in spec.notes)
    assert widths[0] == widths[1] and widths[0]["dense"] > 8 * 32  # all 4 experts' worth


@pytest.mark.parametrize("value", ["activ", 1, ["active"]])
def test_match_params_bad_values_are_one_line_errors(tiny_doc, value) -> None:
    tiny_doc["match_params"] = value
    with pytest.raises(SpecError, match=r'true, false, "total" .* or "active"') as info:
        parse_spec(tiny_doc, plugins=PLUGINS)
    assert "\n" not in str(info.value)


# -- reports ------------------------------------------------------------------------------------
DENSE = {"variant": "dense", "baseline": True, "val_loss": 2.0, "params": 100,
         "params_non_embedding": 50}  # fmt: skip
MIXTURE = {"variant": "moe", "baseline": False, "val_loss": 1.9, "params": 200,
           "params_non_embedding": 150, "params_active": 100,
           "params_active_non_embedding": 50}  # fmt: skip


def runs_table(*rows: dict) -> pd.DataFrame:
    """A results table of one finished run per row."""
    base = {"status": "ok", "train_loss": 1.0, "val_bpb": 1.0, "causal": True, "seed": 0}
    table = pd.DataFrame([{**base, **r} for r in rows])
    table["val_perplexity"] = table["val_loss"].map(math.exp)
    return table


def test_the_table_flags_mismatched_active_parameters() -> None:
    wide = {"variant": "wide", "baseline": False, "val_loss": 1.8, "params": 120,
            "params_non_embedding": 70}  # fmt: skip
    table = runs_table(DENSE, MIXTURE, wide)
    summary = summarize(table).set_index("variant")
    assert summary.loc["dense", "params_active_non_embedding"] == 50  # dense: all are active
    assert summary.loc["moe", "params_active"] == 100
    assert "params" not in summary.loc["moe", "flags"]  # 3x the total, the same active
    assert "active params +40.0%" in summary.loc["wide", "flags"]
    # Without a mixture of experts, nothing changes: no active columns, total params flagged.
    dense_only = summarize(table[table["variant"] != "moe"]).set_index("variant")
    assert dense_only["params_active"].isna().all()
    assert "params +40.0%" in dense_only.loc["wide", "flags"]


# -- a whole run ----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_run_records_the_balance_loss_and_active_parameters(tmp_path, tiny_doc) -> None:
    tiny_doc["model"]["activation"] = {"name": "moe", "n_experts": 4, "top_k": 2}
    spec = parse_spec(tiny_doc, plugins=PLUGINS)
    table = run(spec, tmp_path, plugins=PLUGINS, progress=False)
    folder = tmp_path / "base/seed-0"
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((folder / "summary.json").read_text())
    assert [m["step"] for m in metrics] == [3, 6]
    assert all(0 < m["aux_moe_balance"] < 0.01 * 4 for m in metrics)  # one layer: 0.01 x [0, 4]
    assert summary["aux_moe_balance"] == metrics[-1]["aux_moe_balance"]
    model = load_model(folder, PLUGINS)
    assert summary["params_active"] == model.num_params(active=True) < summary["params"]
    assert summary["params_active_non_embedding"] == model.num_params(
        non_embedding=True, active=True
    )
    assert table["params_active"].iloc[0] == summary["params_active"]
    # The validation loss is the cross-entropy alone, the balance loss left out.
    r = spec.runs[0]
    data, _ = load_data(r.data, PLUGINS)
    val = eval_batches(data.val, r.model.context_length, r.train.batch_size, r.train.eval_batches)
    token_bytes = torch.tensor(data.token_bytes, dtype=torch.long)
    loss, _ = evaluate_batches(model, val, token_bytes, "cpu")
    assert loss == pytest.approx(summary["val_loss"], rel=1e-6)
    assert model.gather_aux_losses() == {}


def test_the_printed_table_shows_active_parameters_only_for_a_mixture() -> None:
    from toolkit.analysis.text import format_summary

    table = runs_table(DENSE, MIXTURE)
    header = format_summary(summarize(table)).splitlines()[0].split()
    assert header[header.index("params") + 1] == "active"
    plain = format_summary(summarize(table[table["variant"] == "dense"])).splitlines()[0]
    assert "active" not in plain.split()


def test_validate_shows_the_parameters_a_token_uses_only_when_some_variant_differs(
    tmp_path, capsys
) -> None:
    grid = '[grid]\n"model.activation" = ["gelu", { name = "moe", n_experts = 4, top_k = 2 }]\n'
    spec = write_spec(tmp_path / "m.toml", small_toml("m") + grid)
    assert main(["validate", str(spec)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()[1:]
    assert header.split() == ["variant", "params", "non-emb", "active", "non-emb", "components"]
    cells = [row[2:].split() for row in rows]  # after the baseline's mark
    counts = {c[0]: [int(n.replace(",", "")) for n in c[1:4]] for c in cells}
    moe = parse_spec(tomllib.loads(spec.read_text()), plugins=PLUGINS).runs[1]
    total, non_emb = count_params(moe.model_config(257), PLUGINS)
    _, active = count_params(moe.model_config(257), PLUGINS, active=True)
    assert counts["activation=moe(n_experts=4,top_k=2)"] == [total, non_emb, active]
    assert active < non_emb and counts["activation=gelu"][1] == counts["activation=gelu"][2]

    dense = write_spec(tmp_path / "d.toml", small_toml("d"))
    assert main(["validate", str(dense)]) == 0
    assert "active" not in capsys.readouterr().out

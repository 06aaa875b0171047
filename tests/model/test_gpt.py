from __future__ import annotations

import math

import pytest
import torch

from toolkit.errors import ComponentError
from toolkit.model.config import ModelConfig, preset

# FACTS.md: GPT-2 parameter counts (tied embeddings, biases on).
from toolkit.model.gpt import build_model, count_params

# FACTS.md: GPT-2 parameter counts (tied embeddings, biases on).
GPT2 = {
    "gpt2-small": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
}


@pytest.mark.parametrize(("name", "expected"), GPT2.items())
def test_gpt2_presets_have_exact_parameter_counts(plugins, name, expected):
    total, non_embedding = count_params(preset(name), plugins)
    assert total == expected
    cfg = preset(name)
    assert (
        non_embedding == expected - cfg.vocab_size * cfg.emb_dim - cfg.context_length * cfg.emb_dim
    )


def test_untied_without_qkv_bias_matches_facts(plugins):
    assert (
        count_params(preset("gpt2-small", tie_embeddings=False, qkv_bias=False), plugins)[0]
        == 163_009_536
    )


def test_meta_device_allocates_nothing(plugins):
    with torch.device("meta"):
        model = build_model(preset("gpt2-xl"), plugins)
    assert all(p.is_meta for p in model.parameters())


def test_forward_maps_ids_to_logits(plugins):
    model = build_model(
        ModelConfig(vocab_size=100, context_length=16, emb_dim=32, n_heads=4, n_layers=2), plugins
    )
    logits = model(torch.randint(0, 100, (3, 10)))
    assert logits.shape == (3, 10, 100)


def test_tied_head_shares_the_embedding(plugins):
    model = build_model(
        ModelConfig(
            vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1, tie_embeddings=True
        ),
        plugins,
    )
    assert model.out_head.weight is model.tok_emb.weight
    untied = build_model(
        ModelConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1), plugins
    )
    assert untied.num_params() - model.num_params() == 50 * 16


def test_state_dict_uses_the_books_names(plugins):
    model = build_model(
        ModelConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1), plugins
    )
    keys = set(model.state_dict())
    for key in [
        "tok_emb.weight",
        "pos_emb.weight",
        "trf_blocks.0.att.W_query.weight",
        "trf_blocks.0.att.out_proj.bias",
        "trf_blocks.0.ff.layers.0.weight",
        "trf_blocks.0.ff.layers.2.weight",
        "trf_blocks.0.norm1.scale",
        "trf_blocks.0.norm2.shift",
        "final_norm.scale",
        "out_head.weight",
    ]:
        assert key in keys


def test_bad_configs_are_clear_errors(plugins):
    with pytest.raises(ComponentError, match="divisible"):
        build_model(ModelConfig(emb_dim=10, n_heads=3), plugins)
    with pytest.raises(
        ComponentError, match=r"unknown preset 'gpt2-smal'.*did you mean 'gpt2-small'"
    ):
        preset("gpt2-smal")
    with pytest.raises(ComponentError, match="takes no option 'eps2'"):
        build_model(
            ModelConfig(
                vocab_size=10,
                context_length=4,
                emb_dim=8,
                n_heads=2,
                n_layers=1,
                norm={"name": "rmsnorm", "eps2": 1.0},
            ),
            plugins,
        )


def test_initial_loss_is_near_uniform(plugins):
    # A fresh model should not be confidently wrong: loss close to ln(vocab).
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(vocab_size=257, context_length=16, emb_dim=32, n_heads=2, n_layers=2), plugins
    )
    x = torch.randint(0, 257, (4, 16))
    loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten())
    assert abs(loss.item() - math.log(257)) < 1.5


def small(**overrides) -> ModelConfig:
    base = dict(vocab_size=40, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)
    return ModelConfig(**{**base, **overrides})


def test_norm_placements_wire_the_block_as_named(plugins):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    pre = build_model(small(), plugins).trf_blocks[0]
    with torch.no_grad():
        h = x + pre.att(pre.norm1(x))
        torch.testing.assert_close(pre(x), h + pre.ff(pre.norm2(h)))
    post_model = build_model(small(norm_placement="post"), plugins)
    post = post_model.trf_blocks[0]
    with torch.no_grad():
        h = post.norm1(x + post.att(x))
        torch.testing.assert_close(post(x), post.norm2(h + post.ff(h)))
    assert isinstance(post_model.final_norm, torch.nn.Identity)  # the block already ends in a norm
    sandwich = build_model(small(norm_placement="sandwich"), plugins).trf_blocks[0]
    with torch.no_grad():
        h = x + sandwich.norm1_out(sandwich.att(sandwich.norm1(x)))
        torch.testing.assert_close(
            sandwich(x), h + sandwich.norm2_out(sandwich.ff(sandwich.norm2(h)))
        )
    with pytest.raises(
        ComponentError, match="norm_placement 'middle' is not one of pre, post, sandwich"
    ):
        build_model(small(norm_placement="middle"), plugins)


def test_dropout_rate_per_site_falls_back_to_drop_rate(plugins):
    cfg = small(drop_rate=0.1, drop_rate_attn=0.0, drop_rate_resid=0.3)
    assert (cfg.dropout("emb"), cfg.dropout("attn"), cfg.dropout("resid")) == (0.1, 0.0, 0.3)
    model = build_model(cfg, plugins)
    assert model.drop_emb.p == 0.1
    assert model.trf_blocks[0].drop_shortcut.p == 0.3
    assert model.trf_blocks[0].att.dropout.p == 0.0


def test_gpt2_init_scales_residual_projections(plugins):
    torch.manual_seed(0)
    cfg = small(emb_dim=256, n_heads=4, n_layers=8, vocab_size=1000, init="gpt2")
    model = build_model(cfg, plugins)
    block = model.trf_blocks[0]
    assert block.att.W_query.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.att.out_proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)  # sqrt(2*8)
    assert block.ff.layers[2].weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(block.att.out_proj.bias) == 0
    assert torch.all(block.norm1.scale == 1)  # norms keep ones and zeros
    default = build_model(small(emb_dim=256, n_heads=4, n_layers=8, vocab_size=1000), plugins)
    assert default.tok_emb.weight.std().item() == pytest.approx(
        1.0, rel=0.05
    )  # nn.Embedding's N(0, 1)


def test_same_seed_same_initial_weights(plugins):
    for init in ("default", "gpt2"):
        torch.manual_seed(3)
        a = build_model(small(init=init), plugins).state_dict()
        torch.manual_seed(3)
        b = build_model(small(init=init), plugins).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_gpt2_init_scales_every_heads_output_in_the_wrapper(plugins):
    torch.manual_seed(0)
    cfg = small(emb_dim=256, n_heads=4, n_layers=8, attention="multihead-wrapper", init="gpt2")
    heads = build_model(cfg, plugins).trf_blocks[0].att.heads
    for head in heads:
        assert head.W_value.weight.std().item() == pytest.approx(0.02 / 4, rel=0.1)
        assert head.W_query.weight.std().item() == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"preset": "nano", "vocab_size": 257, "drop_rate": 2.0}, r"drop_rate must be in \[0, 1\)"),
        ({"preset": "nano", "vocab_size": 257, "drop_rate_attn": float("nan")}, "got nan"),
        ({"preset": "nano", "vocab_size": -1}, "vocab_size must be between 1 and"),
        ({"preset": "nano", "vocab_size": 257, "emb_dim": 0}, "emb_dim must be at least 1"),
        ({"preset": "nano", "vocab_size": 257, "n_layers": 2.5}, "n_layers must be at least 1"),
        ("nano", "takes a ModelConfig or a dict of its fields, got str"),
    ],
)
def test_build_model_refuses_out_of_range_values_in_one_line(config, message):
    # The spec's rule (validation says the same of a [model] table), for the Python API.
    with pytest.raises(ComponentError, match=message) as info:
        build_model(config)
    assert "\n" not in str(info.value)

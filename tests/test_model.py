from __future__ import annotations

import math

import pytest
import torch

from toolkit.errors import ComponentError
from toolkit.model import ModelConfig, build_model, count_params, preset

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

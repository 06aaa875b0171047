"""Attention components against the book's formulas recomputed from their own weights, per head
and position by position; causality (with RoPE and ALiBi bound too), sliding windows, grouped
key/value heads, qk_norm, dropout, option checks, and every (attention, positional) pair in a
full model."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import plugins.attention as attention_plugin
import plugins.heads as heads_plugin
from toolkit.api.contracts import TrainConfig
from toolkit.api.manager import Plugins
from toolkit.errors import ComponentError
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model, check_compatible
from toolkit.testing import check_component

PLUGINS = Plugins(autoload=False)
CFG = ModelConfig(
    vocab_size=37, context_length=12, emb_dim=16, n_heads=4, n_layers=1, drop_rate=0.0
)
BOOK = ["simplified", "self", "causal", "multihead-wrapper"]
HEADED = ["causal", "multihead-wrapper", "multihead", "sdpa", "sliding-window", "gqa", "mqa"]
PROJECTED = ["multihead", "sdpa", "sliding-window", "gqa", "mqa"]  # W_* and out_proj
POSITIONALS = [None, "rope", "alibi"]  # None: nothing bound


def attention(name: str, config: ModelConfig = CFG, pos: str | None = None, **options):
    module = PLUGINS.registry.get("attention", name).build(config, **options).eval()
    if pos is not None:
        module.bind_positional(positional(pos, config))
    return module


def positional(name: str, config: ModelConfig = CFG, **options):
    return PLUGINS.registry.get("positional", name).build(config, **options)


def config(**overrides) -> ModelConfig:
    return ModelConfig(**{**CFG.to_dict(), **overrides})


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def reference_head(q, k, v, *, bias=None, window=None, causal=True, scale=True, sink=None):
    """One head, one sequence, element by element: q, k, v (T, hs) -> (T, hs). Position i
    attends to j when j <= i (causal) and i - j < window; scores q_i.k_j / sqrt(hs) + bias;
    a sink logit is one more score, whose weight multiplies nothing."""
    t, hs = q.shape
    out = torch.zeros_like(v)
    for i in range(t):
        keys = [
            j for j in range(t) if (not causal or j <= i) and (window is None or i - j < window)
        ]
        scores = torch.stack([q[i] @ k[j] for j in keys])
        if scale:
            scores = scores / math.sqrt(hs)
        if bias is not None:
            scores = scores + torch.stack([bias[i, j] for j in keys])
        if sink is not None:
            scores = torch.cat([scores, sink.view(1)])
        weights = torch.softmax(scores, dim=0)[: len(keys)]
        out[i] = sum(w * v[j] for w, j in zip(weights, keys, strict=True))
    return out


def rotated(pos_module, x):
    """x (T, hs) as one head rotated by a bound positional (identity for ALiBi)."""
    if pos_module is None:
        return x
    return pos_module.rotate(x[None, None], x[None, None])[0][0, 0]


def head_bias(pos_module, h: int, t: int):
    bias = None if pos_module is None else pos_module.score_bias(t, t)
    return None if bias is None else bias[h]


# ---------------------------------------------------------------------------- registration


def test_names_facts_and_options():
    names = set(PLUGINS.registry.names("attention"))
    assert set(BOOK + HEADED) <= names
    for name in BOOK + HEADED:
        c = PLUGINS.registry.get("attention", name)
        assert c.plugin == "plugins.attention"
        assert c.description and "\n" not in c.description and not c.description.endswith(".")
        assert c.facts["causal"] is (name not in ("simplified", "self"))
        assert bool(c.facts.get("positional_inside")) is (name in HEADED)
        expected = {"qk_norm"} if name in HEADED else set()
        expected |= {"gate", "sinks"} if name in PROJECTED else set()
        expected |= {"gqa": {"n_kv_heads"}, "sliding-window": {"window"}}.get(name, set())
        assert set(c.options) == expected
        for flag in ("qk_norm", "gate", "sinks"):
            if flag in c.options:
                assert c.options[flag].type is bool and c.options[flag].default is False
    assert PLUGINS.registry.get("attention", "gqa").options["n_kv_heads"].default == 2
    assert PLUGINS.registry.get("attention", "sliding-window").options["window"].default == 64


# ------------------------------------------------------------- the book's four, by formula


def test_simplified_is_softmax_of_x_xT_times_x_without_weights():
    att = attention("simplified")
    assert n_params(att) == 0
    x = torch.randn(2, 5, CFG.emb_dim) * 0.3
    expected = torch.stack(
        [reference_head(x[b], x[b], x[b], causal=False, scale=False) for b in range(2)]
    )
    torch.testing.assert_close(att(x), expected, atol=1e-5, rtol=1e-5)


def test_self_attention_is_the_books_v2():
    torch.manual_seed(0)
    att = attention("self", config(qkv_bias=True))
    assert [n for n, _ in att.named_children()] == ["W_query", "W_key", "W_value"]  # no out_proj
    x = torch.randn(2, 5, CFG.emb_dim)
    with torch.no_grad():
        q, k, v = att.W_query(x), att.W_key(x), att.W_value(x)
        expected = torch.stack([reference_head(q[b], k[b], v[b], causal=False) for b in range(2)])
        torch.testing.assert_close(att(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos", POSITIONALS)
def test_causal_single_head_is_the_books_causal_attention(pos):
    torch.manual_seed(1)
    att = attention("causal", pos=pos)
    assert att.W_query.out_features == CFG.emb_dim  # d_out = emb_dim, one head
    p = att._positional[0] if pos else None
    x = torch.randn(2, 6, CFG.emb_dim)
    with torch.no_grad():
        q, k, v = att.W_query(x), att.W_key(x), att.W_value(x)
        expected = torch.stack(
            [
                # Alone it takes row 0 of a per-head bias: ALiBi's steepest slope.
                reference_head(rotated(p, q[b]), rotated(p, k[b]), v[b], bias=head_bias(p, 0, 6))
                for b in range(2)
            ]
        )
        torch.testing.assert_close(att(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos", POSITIONALS)
def test_wrapper_concatenates_independent_causal_heads(pos):
    torch.manual_seed(2)
    att = attention("multihead-wrapper", pos=pos)
    assert len(att.heads) == CFG.n_heads
    assert all(h.W_query.out_features == CFG.head_dim for h in att.heads)
    assert not hasattr(att, "out_proj")  # the book's wrapper has none
    p = att.heads[0]._positional[0] if pos else None
    x = torch.randn(1, 7, CFG.emb_dim)
    with torch.no_grad():
        expected = torch.cat(
            [
                reference_head(
                    rotated(p, head.W_query(x)[0]),
                    rotated(p, head.W_key(x)[0]),
                    head.W_value(x)[0],
                    bias=head_bias(p, h, 7),  # head h takes slope h
                )
                for h, head in enumerate(att.heads)
            ],
            dim=-1,
        )
        torch.testing.assert_close(att(x)[0], expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------- multi-head variants


def projected_reference(att, x, *, n_kv: int, window=None):
    """Per head: query head h reads key/value head h // (n_heads / n_kv); then out_proj."""
    hs, nh, t = CFG.head_dim, CFG.n_heads, x.shape[1]
    p = att._positional[0] if att._positional else None
    q, k, v = att.W_query(x)[0], att.W_key(x)[0], att.W_value(x)[0]
    heads = []
    for h in range(nh):
        g = h // (nh // n_kv)
        qh, kh, vh = (
            q[:, h * hs : (h + 1) * hs],
            k[:, g * hs : (g + 1) * hs],
            v[:, g * hs : (g + 1) * hs],
        )
        if att.q_norm is not None:
            qh, kh = att.q_norm(qh), att.k_norm(kh)
        heads.append(
            reference_head(
                rotated(p, qh),
                rotated(p, kh),
                vh,
                bias=head_bias(p, h, t),
                window=window,
                sink=None if att.sinks is None else att.sinks[h],
            )
        )
    context = torch.cat(heads, dim=-1)
    if att.W_gate is not None:  # elementwise, per head and dimension, from the same input
        gate = 1 / (1 + torch.exp(-(x[0] @ att.W_gate.weight.T + att.W_gate.bias)))
        context = context * gate
    return att.out_proj(context)


CASES = [
    ("multihead", {}, CFG.n_heads, None),
    ("sdpa", {}, CFG.n_heads, None),
    ("sliding-window", {"window": 3}, CFG.n_heads, 3),
    ("sliding-window", {"window": 1}, CFG.n_heads, 1),
    ("gqa", {}, 2, None),
    ("gqa", {"n_kv_heads": 1}, 1, None),
    ("mqa", {}, 1, None),
    ("multihead", {"gate": True}, CFG.n_heads, None),
    ("sdpa", {"gate": True, "qk_norm": True}, CFG.n_heads, None),
    ("sliding-window", {"window": 3, "gate": True}, CFG.n_heads, 3),
    ("gqa", {"gate": True}, 2, None),
    ("mqa", {"gate": True}, 1, None),
    ("multihead", {"sinks": True}, CFG.n_heads, None),
    ("sdpa", {"sinks": True, "qk_norm": True}, CFG.n_heads, None),
    ("sliding-window", {"window": 3, "sinks": True}, CFG.n_heads, 3),
    ("gqa", {"sinks": True}, 2, None),
    ("mqa", {"sinks": True, "gate": True}, 1, None),
]


@pytest.mark.parametrize("pos", POSITIONALS)
@pytest.mark.parametrize(("name", "options", "n_kv", "window"), CASES)
def test_projected_attention_matches_per_head_reference(name, options, n_kv, window, pos):
    torch.manual_seed(3)
    att = attention(name, config(qkv_bias=True), pos=pos, **options)
    if att.sinks is not None:  # away from their zero init, one per head
        att.sinks.data = torch.tensor([-2.0, 0.5, 1.5, 3.0])
    x = torch.randn(1, 9, CFG.emb_dim)
    with torch.no_grad():
        expected = projected_reference(att, x, n_kv=n_kv, window=window)
        torch.testing.assert_close(att(x)[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", PROJECTED)
def test_the_gate_adds_one_d_by_d_projection_and_leaves_out_proj_the_residual_one(name):
    plain, gated = attention(name), attention(name, gate=True)
    d = CFG.emb_dim
    assert plain.W_gate is None and n_params(gated) - n_params(plain) == d * d  # no qkv bias
    model = build_model(config(attention={"name": name, "gate": True}, init="gpt2"), PLUGINS)
    zeroed = build_model(
        config(
            attention={"name": name, "gate": True}, init={"name": "gpt2", "zero_residual": True}
        ),
        PLUGINS,
    )
    att, zero = model.trf_blocks[0].att, zeroed.trf_blocks[0].att
    assert not zero.out_proj.weight.any() and zero.W_gate.weight.any()
    assert att.out_proj.weight.std() < att.W_gate.weight.std()  # gpt2 scales the residual one


@pytest.mark.parametrize("name", ["sdpa", "gqa"])
def test_gated_attentions_pass_the_conformance_kit(name):
    check_component("attention", name, PLUGINS, options={"gate": True}, max_examples=5)


@pytest.mark.parametrize("name", PROJECTED)
def test_sinks_are_one_undecayed_logit_per_head_starting_at_zero(name):
    plain, sunk = attention(name), attention(name, sinks=True)
    assert plain.sinks is None and n_params(sunk) - n_params(plain) == CFG.n_heads
    assert dict(sunk.named_parameters())["sinks"].tolist() == [0.0] * CFG.n_heads
    model = build_model(config(attention={"name": name, "sinks": True}, init="gpt2"), PLUGINS)
    assert not model.trf_blocks[0].att.sinks.any()  # the init leaves them at 0
    groups = TrainConfig(1e-3, (0.9, 0.95), 0.1, "matrices").decay_groups(
        [model.trf_blocks[0].att.sinks]
    )
    assert groups[1]["weight_decay"] == 0.0 and len(groups[1]["params"]) == 1


@pytest.mark.parametrize("name", ["multihead", "sdpa"])
def test_a_sink_takes_weight_from_the_values_and_learns(name):
    """A very negative sink is no sink; a very large one leaves a head nothing to read (its
    output is out_proj's bias); the loss's gradient reaches the sinks through either path."""
    torch.manual_seed(4)
    plain, sunk = attention(name), attention(name, sinks=True)
    sunk.load_state_dict({**plain.state_dict(), "sinks": torch.full((CFG.n_heads,), -1e4)})
    x = torch.randn(2, 9, CFG.emb_dim)
    torch.testing.assert_close(sunk(x), plain(x))
    sunk.sinks.data.fill_(1e4)
    torch.testing.assert_close(sunk(x), sunk.out_proj.bias.expand_as(x))
    sunk.sinks.data.zero_()
    sunk(x).square().sum().backward()
    assert sunk.sinks.grad is not None and sunk.sinks.grad.abs().min() > 0


def test_sinks_survive_bfloat16_training_steps_and_forward_only_calls():
    torch.manual_seed(5)
    att = attention("sdpa", sinks=True).train()
    att.sinks.data.normal_()
    x = torch.randn(2, 9, CFG.emb_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = att(x.requires_grad_())
        with torch.no_grad():
            forward_only = att(x)
    out.float().sum().backward()
    assert att.sinks.grad is not None
    torch.testing.assert_close(forward_only.float(), att(x).float(), atol=0.05, rtol=0.05)


@pytest.mark.parametrize("name", ["sliding-window", "gqa"])
def test_attentions_with_sinks_pass_the_conformance_kit(name):
    check_component("attention", name, PLUGINS, options={"sinks": True}, max_examples=5)


def test_key_value_projections_shrink_with_fewer_heads():
    mh, gqa, mqa = attention("multihead"), attention("gqa"), attention("mqa")
    d, hs = CFG.emb_dim, CFG.head_dim
    assert mqa.W_key.out_features == hs and gqa.W_key.out_features == 2 * hs
    assert n_params(mh) - n_params(mqa) == 2 * d * (d - hs)
    assert n_params(mqa) < n_params(gqa) < n_params(mh)


@pytest.mark.parametrize("pos", POSITIONALS)
def test_gqa_with_every_head_equals_multihead(pos):
    torch.manual_seed(4)
    book = attention("multihead", pos=pos)
    grouped = attention("gqa", pos=pos, n_kv_heads=CFG.n_heads)
    grouped.load_state_dict(book.state_dict())  # same names and shapes
    x = torch.randn(3, 12, CFG.emb_dim)
    with torch.no_grad():
        torch.testing.assert_close(grouped(x), book(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("pos", POSITIONALS)
@pytest.mark.parametrize("other", ["sdpa", "sliding-window"])
def test_fused_ones_equal_the_books_multihead(other, pos, qk_norm):
    # sliding-window at its default window 64 > T covers every position.
    torch.manual_seed(5)
    book = attention("multihead", pos=pos, qk_norm=qk_norm)
    if qk_norm:
        with torch.no_grad():
            book.q_norm.weight.uniform_(0.5, 2.0)
    fused = attention(other, pos=pos, qk_norm=qk_norm)
    fused.load_state_dict(book.state_dict())
    book.load_state_dict(fused.state_dict())  # and back
    x = torch.randn(2, 12, CFG.emb_dim)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), book(x), atol=1e-5, rtol=1e-5)


def test_out_proj_is_the_last_linear_so_gpt2_init_scales_it():
    for name in PROJECTED:
        att = attention(name, qk_norm=True)
        linears = [m for m in att.modules() if isinstance(m, torch.nn.Linear)]
        assert linears[-1] is att.out_proj, name


# --------------------------------------------------------------------------------- causality


@pytest.mark.parametrize("name", ["simplified", "self"])
def test_the_books_first_two_see_the_future_and_say_so(name):
    assert PLUGINS.registry.get("attention", name).facts["causal"] is False
    torch.manual_seed(6)
    att = attention(name)
    # Small inputs: unscaled x.x^T at full size puts all of softmax's weight on the diagonal.
    x = torch.randn(1, 5, CFG.emb_dim) * 0.3
    changed = x.clone()
    changed[:, -1] = torch.randn(CFG.emb_dim) * 0.3  # only the last token
    with torch.no_grad():
        assert not torch.allclose(att(x)[:, 0], att(changed)[:, 0])


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(HEADED),
    pos=st.sampled_from(POSITIONALS),
    t=st.integers(1, 12),
    cut=st.integers(0, 11),
    seed=st.integers(0, 2**16),
)
def test_causal_ones_never_see_the_future_with_positionals_bound(name, pos, t, cut, seed):
    assert PLUGINS.registry.get("attention", name).facts["causal"] is True
    torch.manual_seed(seed)
    att = attention(name, pos=pos, qk_norm=bool(seed % 2))
    x = torch.randn(2, t, CFG.emb_dim)
    cut = min(cut, t - 1)
    changed = x.clone()
    changed[:, cut + 1 :] = torch.randn_like(changed[:, cut + 1 :])
    with torch.no_grad():
        torch.testing.assert_close(att(x)[:, : cut + 1], att(changed)[:, : cut + 1])


@settings(max_examples=40, deadline=None)
@given(
    window=st.integers(1, 6),
    t=st.integers(2, 12),
    changed_upto=st.integers(1, 11),
    pos=st.sampled_from(POSITIONALS),
    seed=st.integers(0, 2**16),
)
def test_sliding_window_ignores_tokens_older_than_the_window(window, t, changed_upto, pos, seed):
    torch.manual_seed(seed)
    att = attention("sliding-window", pos=pos, window=window)
    x = torch.randn(1, t, CFG.emb_dim)
    c = min(changed_upto, t - 1)
    changed = x.clone()
    changed[:, :c] = torch.randn_like(changed[:, :c])  # positions 0 .. c-1
    # Position i sees i-window+1 .. i: those from c+window-1 on see none of the changed ones.
    first = c + window - 1
    with torch.no_grad():
        a, b = att(x), att(changed)
    torch.testing.assert_close(a[:, first:], b[:, first:])
    if window > 1:  # while position c, whose window holds c-1, does see a change
        assert not torch.allclose(a[:, c], b[:, c])


@pytest.mark.parametrize("pos", POSITIONALS)
def test_sliding_window_covering_the_sequence_is_multihead(pos):
    torch.manual_seed(7)
    book = attention("multihead", pos=pos)
    x = torch.randn(2, 10, CFG.emb_dim)
    for window in (10, 11, 64):
        sliding = attention("sliding-window", pos=pos, window=window)
        sliding.load_state_dict(book.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(sliding(x), book(x), atol=1e-5, rtol=1e-5)
    narrow = attention("sliding-window", pos=pos, window=9)
    narrow.load_state_dict(book.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(narrow(x)[:, :9], book(x)[:, :9], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(narrow(x)[:, 9], book(x)[:, 9])


# ----------------------------------------------------------------------------------- qk_norm


@pytest.mark.parametrize("name", HEADED)
def test_qk_norm_adds_one_gain_per_head_dim_for_q_and_k(name):
    torch.manual_seed(8)
    plain, normed = attention(name), attention(name, qk_norm=True)
    extra = {k: v for k, v in normed.state_dict().items() if k not in plain.state_dict()}
    # The single head of `causal` spans emb_dim; the wrapper's heads head_dim each.
    dim = CFG.emb_dim if name == "causal" else CFG.head_dim
    copies = CFG.n_heads if name == "multihead-wrapper" else 1
    assert len(extra) == 2 * copies
    assert all(k.endswith(("q_norm.weight", "k_norm.weight")) for k in extra)
    assert all(v.shape == (dim,) and torch.all(v == 1) for v in extra.values())
    normed.load_state_dict(plain.state_dict(), strict=False)  # same projections
    x = torch.randn(2, 8, CFG.emb_dim)
    with torch.no_grad():
        assert not torch.allclose(normed(x), plain(x), atol=1e-4)


@pytest.mark.parametrize("name", PROJECTED)
def test_qk_norm_makes_scores_ignore_the_scale_of_queries_and_keys(name):
    torch.manual_seed(9)
    att = attention(name, qk_norm=True)  # no qkv bias: scaling W scales q and k
    x = torch.randn(2, 8, CFG.emb_dim)
    with torch.no_grad():
        before = att(x)
        att.W_query.weight.mul_(7.0)
        att.W_key.weight.mul_(3.0)
        torch.testing.assert_close(att(x), before, atol=1e-5, rtol=1e-4)


def test_qk_norm_is_rms_norm_over_head_dim_with_its_gain():
    torch.manual_seed(10)
    att = attention("multihead", qk_norm=True)
    with torch.no_grad():
        att.q_norm.weight.uniform_(0.5, 2.0)
        att.k_norm.weight.uniform_(0.5, 2.0)
    x = torch.randn(1, 6, CFG.emb_dim)
    q = torch.randn(3, CFG.head_dim)
    expected = q / torch.sqrt(q.pow(2).mean(-1, keepdim=True) + 1e-6) * att.q_norm.weight
    with torch.no_grad():
        torch.testing.assert_close(att.q_norm(q), expected)
        torch.testing.assert_close(
            att(x)[0], projected_reference(att, x, n_kv=CFG.n_heads), atol=1e-5, rtol=1e-5
        )


# ----------------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("name", HEADED)
def test_attention_dropout_acts_in_train_mode_only(name):
    cfg = config(drop_rate=0.0, drop_rate_attn=0.5)  # the attention site's own rate
    torch.manual_seed(11)
    att = attention(name, cfg)
    dropouts = [m for m in att.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.p == 0.5 for m in dropouts)
    quiet = attention(name)
    quiet.load_state_dict(att.state_dict())
    x = torch.randn(2, 8, CFG.emb_dim)
    with torch.no_grad():
        torch.testing.assert_close(att.eval()(x), quiet(x))
        att.train()
        assert not torch.allclose(att(x), att(x))


@pytest.mark.parametrize("name", ["simplified", "self"])
def test_the_books_first_two_have_no_dropout(name):
    att = attention(name, config(drop_rate=0.5)).train()
    assert not any(isinstance(m, torch.nn.Dropout) for m in att.modules())
    x = torch.randn(2, 5, CFG.emb_dim)
    torch.testing.assert_close(att(x), att(x))


# ------------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        (
            "gqa",
            {"n_kv_heads": 3},
            r"n_kv_heads \(3\) must divide n_heads \(4\); choose one of 1, 2, 4",
        ),
        ("gqa", {"n_kv_heads": 8}, r"n_kv_heads \(8\) must divide n_heads \(4\)"),
        ("gqa", {"n_kv_heads": 0}, r"n_kv_heads \(0\) must divide"),
        ("gqa", {"n_kv_heads": 2.0}, "must be an integer"),
        ("sliding-window", {"window": 0}, "window must be at least 1"),
        ("sliding-window", {"window": -3}, "window must be at least 1"),
        ("simplified", {"qk_norm": True}, "takes no option 'qk_norm'"),
        ("self", {"qk_norm": True}, "takes no option 'qk_norm'"),
        ("multihead", {"qk_norm": 1}, "must be true or false"),
        ("mqa", {"n_kv_heads": 1}, "takes no option 'n_kv_heads'"),
    ],
)
def test_bad_options_are_one_line_component_errors(name, options, message):
    with pytest.raises(ComponentError, match=message) as err:
        attention(name, **options)
    assert "\n" not in str(err.value)
    spec = config(attention={"name": name, **options})
    with pytest.raises(ComponentError, match=message):
        build_model(spec, PLUGINS)


# ------------------------------------------------------------------- every pair in a model

PAIRS = list(
    itertools.product(PLUGINS.registry.names("attention"), PLUGINS.registry.names("positional"))
)


def _accepted(att: str, pos: str) -> bool:
    try:
        check_compatible(config(attention=att, positional=pos), PLUGINS)
    except ComponentError:
        return False
    return True


def test_only_the_unheaded_attentions_refuse_inside_positionals():
    refused = {pair for pair in PAIRS if not _accepted(*pair)}
    builtin = {(a, p) for a, p in refused if a in BOOK + HEADED}
    assert builtin == {(a, p) for a in ("simplified", "self") for p in ("rope", "alibi")}


@pytest.mark.parametrize(("att", "pos"), PAIRS)
def test_every_pair_builds_and_trains_or_is_refused_by_name(att, pos):
    cfg = config(attention=att, positional=pos, n_layers=2, drop_rate=0.1)
    if not _accepted(att, pos):
        with pytest.raises(ComponentError, match=f"attention {att!r} cannot apply") as err:
            build_model(cfg, PLUGINS)
        assert "\n" not in str(err.value)
        return
    torch.manual_seed(12)
    model = build_model(cfg, PLUGINS).train()
    idx = torch.randint(0, CFG.vocab_size, (2, CFG.context_length))
    logits = model(idx)
    assert logits.shape == (2, CFG.context_length, CFG.vocab_size)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits.flatten(0, 1), idx.flatten()).backward()
    assert all(p.grad is not None for p in model.parameters())
    if PLUGINS.registry.get("positional", pos).facts.get("inside_attention"):
        # Bound in every layer, but owned (counted, saved, moved) once, by the model.
        for block in model.trf_blocks:
            bound = [m for m in block.att.modules() if getattr(m, "_positional", ())]
            assert bound and all(m._positional[0] is model.pos_emb for m in bound)
        assert not any("_positional" in k for k in model.state_dict())


def test_a_bound_positional_is_not_a_submodule_and_unbound_costs_nothing():
    torch.manual_seed(13)
    plain = build_model(config(positional="none"), PLUGINS)
    roped = build_model(config(positional="rope"), PLUGINS)
    att = plain.trf_blocks[0].att
    assert att._positional == ()
    assert att.positional_bias(5) is None
    q, k = torch.randn(1, 4, 5, 4), torch.randn(1, 4, 5, 4)
    nq, nk = att.queries_keys(q, k)
    assert nq is q and nk is k  # untouched, not even copied
    assert roped.num_params() == plain.num_params()
    assert set(roped.state_dict()) == set(plain.state_dict())
    inner = [m for m in roped.trf_blocks[0].att.modules()]
    assert roped.pos_emb not in inner
    roped.double()  # moving the model moves the module the attention holds
    assert roped.trf_blocks[0].att._positional[0].cos.dtype == torch.float64
    roped(torch.randint(0, CFG.vocab_size, (1, 6)))


@pytest.mark.parametrize("pos", POSITIONALS)
def test_grouped_heads_without_enable_gqa_expand_keys_and_values(pos, monkeypatch):
    # torch < 2.5 has no enable_gqa: keys and values are repeated per query group instead.
    torch.manual_seed(14)
    att = attention("gqa", pos=pos)
    x = torch.randn(2, 9, CFG.emb_dim)
    with torch.no_grad():
        native = att(x)
        monkeypatch.setattr(heads_plugin, "_SDPA_HAS_GQA", False)
        torch.testing.assert_close(att(x), native, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "name, pos", [("sdpa", None), ("gqa", "alibi"), ("sliding-window", "rope")]
)
def test_bf16_training_steps_attend_in_float32_on_the_cpu(name, pos, monkeypatch):
    """Under bf16 autocast a training step's fused attention runs the kernel on float32 inputs
    (its bfloat16 backward is the slower one on CPUs) and returns bfloat16; a forward without
    gradients (evaluation, generation) keeps the bfloat16 kernel."""
    module = attention(name, pos=pos, **({"window": 5} if name == "sliding-window" else {}))
    module.train()
    seen: list[torch.dtype] = []
    kernel = F.scaled_dot_product_attention

    def watched(q, k, v, **kwargs):
        seen.append(q.dtype)
        return kernel(q, k, v, **kwargs)

    monkeypatch.setattr(attention_plugin.F, "scaled_dot_product_attention", watched)
    x = torch.randn(2, 12, CFG.emb_dim, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
        with torch.no_grad():
            forward_only = module(x)
    assert seen == [torch.float32, torch.bfloat16]
    assert out.dtype == forward_only.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with torch.no_grad():  # the same maths: float32 attention within bf16 rounding of the rest
        torch.testing.assert_close(out.float(), forward_only.float(), atol=3e-2, rtol=3e-2)

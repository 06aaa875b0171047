"""model.bias: false removes every linear layer's bias and every norm's shift in every built-in
attention, feed-forward and norm; true (the default) builds exactly the model it built before the
switch existed. A model without biases trains, generates the same with and without a KV cache,
and goes out to GPT-2's and the book's formats (which always have biases) and back unchanged."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from toolkit.api.manager import Plugins
from toolkit.inference.generate import generate
from toolkit.model.book import export_book, import_book
from toolkit.model.checkpoint import model_from_state
from toolkit.model.config import NORM_PLACEMENTS, ModelConfig
from toolkit.model.gpt import build_model
from toolkit.model.hf_gpt2 import export_hf_gpt2, import_hf_gpt2

PLUGINS = Plugins(autoload=False)
TINY = ModelConfig(vocab_size=40, context_length=8, emb_dim=16, n_heads=4, n_layers=2)
SLOTS = {"attention": "attention", "activation": "activation", "normalization": "norm"}
# One model per built-in: the default config with that component in its slot.
CASES = [(slot, name) for kind, slot in SLOTS.items() for name in PLUGINS.registry.names(kind)]
IDS = [f"{slot}={name}" for slot, name in CASES]
# sha256 (first 16 hex digits) of every parameter's name, shape and bytes, seed 0, of the model
# with each component there was before model.bias existed, and of the default one with qkv_bias,
# taken from that code: the switch left at true must not move one bit of a seeded run.
BEFORE = {
    "attention=causal": "449f97108ab69088",
    "attention=gqa": "9862cfc84584d0b8",
    "attention=mqa": "43443360fadc6265",
    "attention=multihead": "3ebd802f210bfa09",
    "attention=multihead-wrapper": "818e56894118662e",
    "attention=sdpa": "3ebd802f210bfa09",
    "attention=self": "449f97108ab69088",
    "attention=simplified": "e21e03123e67bbcc",
    "attention=sliding-window": "3ebd802f210bfa09",
    "activation=geglu": "1a0ecd7e7a516b9b",
    "activation=gelu": "3ebd802f210bfa09",
    "activation=gelu-exact": "3ebd802f210bfa09",
    "activation=relu": "3ebd802f210bfa09",
    "activation=relu2": "3ebd802f210bfa09",
    "activation=silu": "3ebd802f210bfa09",
    "activation=swiglu": "1a0ecd7e7a516b9b",
    "norm=layernorm": "3ebd802f210bfa09",
    "norm=none": "0c70355b684469b3",
    "norm=rmsnorm": "7dc71cbd57e9e7fb",
    "norm=scalenorm": "5285f4df341bfd39",
    "norm=torch-layernorm": "931e8015fe7e1d9c",
    "qkv_bias": "3b971078e0e08df2",
}


def model(config: ModelConfig = TINY, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_model(replace(config, **overrides), PLUGINS)


def biases(m: torch.nn.Module) -> list[str]:
    """Parameters that add rather than multiply: linear biases and norm shifts (the book's
    LayerNorm calls its shift `shift`)."""
    return [n for n, _ in m.named_parameters() if n.endswith(("bias", "shift"))]


def digest(m: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in m.named_parameters():
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize(("slot", "name"), CASES, ids=IDS)
def test_bias_false_removes_every_bias_and_nothing_else(slot: str, name: str) -> None:
    for qkv_bias in (False, True):  # model.bias = false overrides qkv_bias
        bare = model(**{slot: name}, qkv_bias=qkv_bias, bias=False)
        assert biases(bare) == [], (slot, name, qkv_bias)
        full = model(**{slot: name}, qkv_bias=qkv_bias)
        kept = {n: p.shape for n, p in full.named_parameters() if n not in biases(full)}
        assert {n: p.shape for n, p in bare.named_parameters()} == kept


@pytest.mark.parametrize("placement", NORM_PLACEMENTS)
def test_every_norm_placement_drops_its_norms_shifts(placement: str) -> None:
    for norm in ("layernorm", "torch-layernorm"):
        assert biases(model(norm=norm, norm_placement=placement, bias=False)) == []


@pytest.mark.parametrize("case", [c for c in BEFORE if "=" in c])
def test_bias_true_is_the_model_from_before_the_switch(case: str) -> None:
    slot, name = case.split("=")
    explicit, default = model(**{slot: name}, bias=True), model(**{slot: name})
    assert digest(explicit) == digest(default) == BEFORE[case]


def test_bias_true_keeps_the_qkv_biases_from_before_the_switch() -> None:
    assert digest(model(qkv_bias=True, bias=True)) == BEFORE["qkv_bias"]


def test_the_parameter_count_drops_by_the_biases_counted_by_hand() -> None:
    d, layers = TINY.emb_dim, TINY.n_layers
    # multihead + gelu + layernorm, per block: q/k/v biases 3d, out_proj d, the feed-forward's
    # 4d + d, two norms' shifts 2d; then the final norm's shift d.
    per_block = 3 * d + d + (4 * d + d) + 2 * d
    assert per_block == 176
    full = model(qkv_bias=True)
    bare = model(qkv_bias=True, bias=False)
    assert full.num_params() - bare.num_params() == layers * per_block + d == 368
    assert model().num_params() - bare.num_params() == 368 - layers * 3 * d  # no qkv biases


def test_a_norm_option_given_explicitly_wins_over_model_bias() -> None:
    m = model(bias=False, norm={"name": "layernorm", "bias": True})
    assert biases(m) == [f"trf_blocks.{i}.norm{j}.shift" for i in (0, 1) for j in (1, 2)] + [
        "final_norm.shift"
    ]


@pytest.mark.parametrize("name", ["layernorm", "torch-layernorm"])
def test_a_norm_without_shift_computes_a_zero_shift(name: str) -> None:
    component = PLUGINS.registry.get("normalization", name)
    assert component.options["bias"].default is True
    with_shift, without = component.build(24, eps=1e-6), component.build(24, eps=1e-6, bias=False)
    assert len(list(without.parameters())) == 1 == len(list(with_shift.parameters())) - 1
    torch.manual_seed(0)
    gain = torch.rand(24) + 0.5
    with torch.no_grad():
        for norm in (with_shift, without):
            next(norm.parameters()).copy_(gain)  # the gain first (scale / weight), shift zero
    x = torch.randn(3, 5, 24) * 3 + 1
    assert torch.equal(with_shift(x), without(x))
    assert torch.equal(without.bfloat16()(x.bfloat16()), with_shift.bfloat16()(x.bfloat16()))


def test_norms_without_a_shift_have_no_bias_option() -> None:
    for name in PLUGINS.registry.names("normalization"):
        options = PLUGINS.registry.get("normalization", name).options
        assert ("bias" in options) == (name in ("layernorm", "torch-layernorm", "dyt")), name


LLAMA_LIKE = {"attention": "gqa", "activation": "swiglu", "norm": "rmsnorm", "positional": "rope"}


@pytest.mark.parametrize("overrides", [{}, LLAMA_LIKE], ids=["gpt2-like", "llama-like"])
def test_a_model_without_biases_trains(overrides: dict) -> None:
    m = model(bias=False, drop_rate=0.0, **overrides)
    tokens = torch.randint(0, 40, (4, 9), generator=torch.Generator().manual_seed(0))
    x, y = tokens[:, :-1], tokens[:, 1:]
    optimizer = torch.optim.SGD(m.parameters(), lr=0.5)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(m(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses


def test_cached_generation_of_a_model_without_biases_equals_uncached() -> None:
    m = model(bias=False, qkv_bias=True, positional="rope", drop_rate=0.1)
    greedy = PLUGINS.registry.get("sampler", "greedy").build()
    ctx = TINY.context_length
    gen = torch.Generator().manual_seed(0)
    short = torch.randint(0, 40, (2, 3), generator=gen)  # crosses context_length while going
    long = torch.randint(0, 40, (2, ctx + 3), generator=gen)  # cropped from the start
    for prompt in (short, long):
        cached = generate(m, prompt, 2 * ctx, greedy, ctx, use_cache=True)
        assert torch.equal(cached, generate(m, prompt, 2 * ctx, greedy, ctx, use_cache=False))


def exported_model(norm: str = "layernorm"):
    """A bias-free model with every weight moved off its initial value."""
    m = model(bias=False, qkv_bias=True, drop_rate=0.0, norm=norm)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return m.eval()


@pytest.mark.parametrize("norm", ["layernorm", "torch-layernorm"])
def test_gpt2_export_of_a_model_without_biases_comes_back_the_same(tmp_path, norm: str) -> None:
    ours = exported_model(norm)
    export_hf_gpt2(ours, tmp_path / "hf")
    config, state = import_hf_gpt2(tmp_path / "hf")
    zeros = [k for k in state if k.endswith(("bias", "shift"))]
    assert zeros and all(not state[k].any() for k in zeros)  # written as zeros, read back
    back = model_from_state(config, state).eval()
    ids = torch.randint(0, 40, (3, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(back(ids), ours(ids), atol=1e-5, rtol=0)
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids), atol=1e-5, rtol=0)


def test_book_export_of_a_model_without_biases_comes_back_the_same(tmp_path) -> None:
    ours = exported_model()
    book = export_book(ours, tmp_path / "model.pth")
    assert book["qkv_bias"] is False  # there were none to write
    config, state = import_book(tmp_path / "model.pth", n_heads=4, drop_rate=0.0)
    assert not state["trf_blocks.0.att.out_proj.bias"].any()
    ids = torch.randint(0, 40, (3, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model_from_state(config, state).eval()(ids), ours(ids))

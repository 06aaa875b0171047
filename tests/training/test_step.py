"""The compiled training step: one graph for forward, loss and auxiliary losses, the same
losses as eager, and the eager fallback when a component cannot be compiled."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from toolkit import run
from toolkit.api.hookspecs import hookimpl
from toolkit.api.manager import Plugins
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model
from toolkit.spec.parse import parse_spec
from toolkit.training.step import LossStep


@torch.library.custom_op("ablate_tests::opaque_gelu", mutates_args=())
def opaque_gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU as an operator torch.compile cannot trace: it has no fake (meta) implementation,
    as a third party's C++ or Triton kernel often lacks one. Eager autograd works."""
    return F.gelu(x)


def _backward(ctx, grad: torch.Tensor) -> torch.Tensor:
    (x,) = ctx.saved_tensors
    with torch.enable_grad():
        x = x.detach().requires_grad_()
        return torch.autograd.grad(F.gelu(x), x, grad)[0]


opaque_gelu.register_autograd(
    _backward, setup_context=lambda ctx, inputs, output: ctx.save_for_backward(inputs[0])
)


class OpaqueFeedForward(torch.nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        d = config.emb_dim
        self.up, self.down = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(opaque_gelu(self.up(x)))


class OpaquePlugin:
    @hookimpl
    def register_components(self, register):
        register("activation", "opaque-gelu", OpaqueFeedForward)


def _summary(out) -> dict:
    return json.loads((out / "base/seed-0/summary.json").read_text())


def _batch(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, config.vocab_size, (2, config.context_length), generator=g)
    return x, torch.roll(x, -1, dims=1)


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
@pytest.mark.slow
def test_the_default_model_step_compiles_as_one_graph(plugins, precision):
    config = ModelConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=2, n_layers=2)
    step = LossStep(build_model(config, plugins), "cpu", precision)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(step)(*_batch(config))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


BUILT_IN_CHOICES = [
    {slot: name}
    for kind, slot in [
        ("attention", "attention"),
        ("normalization", "norm"),
        ("activation", "activation"),
        ("positional", "positional"),
    ]
    for name in Plugins(autoload=False).registry.names(kind)
    # A mixture of experts splits its tokens by expert in sizes read from the data: one
    # graph break per layer, at the routing (plugins/moe.py).
    if name != "moe"
] + [
    {"norm_placement": "post"},
    {"norm_placement": "parallel"},
    {"logit_softcap": 30.0},
    {"attention": {"name": "sliding-window", "window": 8, "sinks": True}},
    {"attention": {"name": "gqa", "sinks": True, "gate": True}},
]


@pytest.mark.slow
@pytest.mark.parametrize("choice", BUILT_IN_CHOICES, ids=lambda c: "=".join(map(str, *c.items())))
def test_every_built_in_component_compiles_without_a_graph_break(plugins, choice):
    config = ModelConfig(
        **{**dict(vocab_size=64, context_length=16, emb_dim=32, n_heads=4, n_layers=1), **choice}
    )
    torch._dynamo.reset()
    explained = torch._dynamo.explain(LossStep(build_model(config, plugins), "cpu", "fp32"))(
        *_batch(config)
    )
    assert explained.graph_break_count == 0, explained.break_reasons


def test_the_step_returns_the_cross_entropy_and_adds_the_auxiliary_losses(plugins):
    config = ModelConfig(
        vocab_size=64,
        context_length=16,
        emb_dim=32,
        n_heads=2,
        n_layers=1,
        z_loss=1e-2,
        drop_rate=0.0,
    )
    model = build_model(config, plugins)
    x, y = _batch(config)
    loss, total, aux = LossStep(model, "cpu", "fp32")(x, y)
    expected = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    torch.testing.assert_close(loss, expected)
    assert set(aux) == {"z_loss"} and aux["z_loss"] > 0
    torch.testing.assert_close(total, loss + aux["z_loss"])
    summed, _, none = LossStep(model, "cpu", "fp32")(x, y, reduction="sum")
    torch.testing.assert_close(summed, expected * y.numel())
    assert none == {}


@pytest.mark.slow
def test_a_component_that_cannot_compile_trains_eagerly_with_the_same_losses(
    tmp_path, tiny_doc, capsys
):
    plugins = Plugins(autoload=False)
    plugins.add(OpaquePlugin(), name="opaque-plugin")
    tiny_doc["model"]["activation"] = "opaque-gelu"
    spec = parse_spec(tiny_doc, plugins=plugins)
    eager = run(spec, tmp_path / "eager", plugins=plugins, progress=False)
    tiny_doc["train"]["compile"] = True
    torch._dynamo.reset()
    table = run(
        parse_spec(tiny_doc, plugins=plugins), tmp_path / "c", plugins=plugins, progress=False
    )
    err = capsys.readouterr().err
    assert "train.compile: torch.compile failed" in err and "training eagerly" in err
    assert "opaque_gelu" in err  # the message names what could not be compiled
    assert table["status"].tolist() == ["ok"] and not _summary(tmp_path / "c")["compiled"]
    assert table["val_loss"].tolist() == eager["val_loss"].tolist()


@pytest.mark.slow
def test_compiled_training_gives_the_eager_losses(tmp_path, tiny_doc, plugins):
    tiny_doc["model"]["z_loss"] = 1e-4  # an auxiliary loss inside the compiled region too
    eager = run(parse_spec(tiny_doc), tmp_path / "eager", plugins=plugins, progress=False)
    tiny_doc["train"]["compile"] = True
    torch._dynamo.reset()
    compiled = run(parse_spec(tiny_doc), tmp_path / "c", plugins=plugins, progress=False)
    assert _summary(tmp_path / "c")["compiled"] is True
    assert compiled["status"].iloc[0] == "ok"
    for column in ("train_loss", "val_loss", "aux_z_loss"):  # fused kernels round differently
        assert compiled[column].iloc[0] == pytest.approx(eager[column].iloc[0], rel=1e-4)

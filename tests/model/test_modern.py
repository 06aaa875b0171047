"""The architecture changes of recent models: the parallel block, logit soft-capping, the z-loss
(an auxiliary loss: in the training loss, recorded apart, never in validation loss) and
zero-initialized residual projections."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from toolkit.api.manager import Plugins
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import ParallelBlock, build_model
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run

PLUGINS = Plugins(autoload=False)


def tiny(**extra) -> torch.nn.Module:
    config = ModelConfig(
        vocab_size=40, context_length=8, emb_dim=16, n_heads=4, n_layers=2, drop_rate=0.0,
        **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    return build_model(config, PLUGINS)


def ids() -> torch.Tensor:
    return torch.randint(0, 40, (3, 8), generator=torch.Generator().manual_seed(1))


def test_the_parallel_block_adds_both_branches_of_one_normalized_input() -> None:
    model = tiny(norm_placement="parallel")
    block = model.trf_blocks[0]
    assert isinstance(block, ParallelBlock) and not hasattr(block, "norm2")
    x = torch.randn(2, 8, 16)
    h = block.norm1(x)
    torch.testing.assert_close(block(x), x + block.att(h) + block.ff(h))
    # One norm per block fewer than pre-norm: 2 x emb_dim parameters (scale and shift) each.
    assert tiny().num_params() - model.num_params() == 2 * 2 * 16


def test_soft_capped_logits_are_the_plain_ones_squashed_below_the_cap() -> None:
    plain, capped = tiny(), tiny(logit_softcap=2.0)
    capped.load_state_dict(plain.state_dict())
    x = ids()
    expected = 2.0 * torch.tanh(plain(x) / 2.0)
    torch.testing.assert_close(capped(x), expected)
    assert capped(x).abs().max() < 2.0 and plain(x).abs().max() > 0
    # The cached path (generation) caps too.
    cache = capped.eval().new_cache()
    torch.testing.assert_close(capped.forward_cached(x, cache, 0), capped(x))


def test_the_z_loss_is_its_formula_in_training_and_absent_in_evaluation() -> None:
    model = tiny(z_loss=1e-2)
    logits = model(ids())
    z = torch.logsumexp(logits.float(), dim=-1)
    aux = model.gather_aux_losses()
    assert set(aux) == {"z_loss"}
    torch.testing.assert_close(aux["z_loss"], 1e-2 * z.square().mean())
    model.aux_losses = {}
    model.eval()(ids())
    assert model.gather_aux_losses() == {}
    assert tiny()(ids()) is not None and tiny().gather_aux_losses() == {}  # off by default


def test_aux_losses_of_one_name_add_up_over_modules() -> None:
    model = tiny()
    model.trf_blocks[0].ff.aux_losses = {"balance": torch.tensor(1.0)}
    model.trf_blocks[1].ff.aux_losses = {"balance": torch.tensor(2.0), "other": torch.tensor(3.0)}
    assert {k: float(v) for k, v in model.gather_aux_losses().items()} == {
        "balance": 3.0,
        "other": 3.0,
    }


def read_metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_run_with_z_loss_trains_on_it_records_it_and_validates_without_it(
    tmp_path, tiny_doc, plugins
) -> None:
    plain = run(parse_spec(tiny_doc), tmp_path / "plain", plugins=plugins, progress=False)
    tiny_doc["model"]["z_loss"] = 0.1
    with_z = run(parse_spec(tiny_doc), tmp_path / "z", plugins=plugins, progress=False)
    lines = read_metrics(tmp_path / "z/base/seed-0")
    assert all(m["aux_z_loss"] > 0 for m in lines)
    assert not any(
        k.startswith("aux_") for m in read_metrics(tmp_path / "plain/base/seed-0") for k in m
    )
    summary = json.loads((tmp_path / "z/base/seed-0/summary.json").read_text())
    assert summary["aux_z_loss"] == lines[-1]["aux_z_loss"]
    # The z-loss moved the weights (it is in the gradient) ...
    assert with_z["val_loss"].iloc[0] != plain["val_loss"].iloc[0]
    assert math.isfinite(summary["val_loss"])


def test_evaluation_scores_the_cross_entropy_alone_with_aux_losses_on() -> None:
    """Validation (and test) loss is what evaluate_batches scores: the cross-entropy of the
    model in eval mode, with no auxiliary loss in it, so variants with and without one stay
    comparable."""
    from toolkit.training.step import evaluate_batches

    model = tiny(z_loss=10.0)  # a weight that would dwarf the cross-entropy
    x = ids()
    y = torch.roll(x, -1, dims=1)
    model(x)  # a training forward leaves its z-loss ...
    loss, _ = evaluate_batches(model, [(x, y)], torch.ones(40, dtype=torch.long), "cpu")
    with torch.no_grad():
        expected = F.cross_entropy(model.eval()(x).flatten(0, 1), y.flatten())
    assert loss == pytest.approx(float(expected), rel=1e-6)
    assert model.gather_aux_losses() == {}  # ... which an evaluation forward clears


def test_zero_residual_starts_every_block_as_the_identity() -> None:
    for init in ("default", "gpt2"):
        model = tiny(init={"name": init, "zero_residual": True})
        x = torch.randn(2, 8, 16)
        for block in model.trf_blocks:
            torch.testing.assert_close(block(x), x)
        # Nothing else is zero: the rest trains from its usual start.
        assert model.trf_blocks[0].att.W_query.weight.abs().sum() > 0


def test_zero_residual_off_is_the_init_it_was() -> None:
    for init in ("default", "gpt2"):
        before = tiny(init=init).state_dict()
        after = tiny(init={"name": init, "zero_residual": False}).state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("cap", [0.0, -1.0])
def test_a_soft_cap_that_is_not_positive_is_a_one_line_error(tiny_doc, cap) -> None:
    from toolkit.errors import SpecError

    tiny_doc["model"]["logit_softcap"] = cap
    with pytest.raises(SpecError, match=r"model.logit_softcap must be a positive number"):
        parse_spec(tiny_doc)


def test_a_negative_z_loss_is_a_one_line_error(tiny_doc) -> None:
    from toolkit.errors import SpecError

    tiny_doc["model"]["z_loss"] = -0.1
    with pytest.raises(SpecError, match=r"model.z_loss must be 0 \(off\) or positive"):
        parse_spec(tiny_doc)


def test_no_biases_with_qkv_biases_is_a_one_line_error(tiny_doc) -> None:
    from toolkit.errors import SpecError

    tiny_doc["model"].update(bias=False, qkv_bias=True)
    with pytest.raises(SpecError, match=r"model.bias = false removes every bias, yet model.qkv"):
        parse_spec(tiny_doc)


def test_a_layernorm_without_shift_exports_with_zeros_and_qkv_biases_kept(tmp_path) -> None:
    from toolkit.model.checkpoint import model_from_state
    from toolkit.model.hf_gpt2 import export_hf_gpt2, import_hf_gpt2

    ours = tiny(norm={"name": "layernorm", "bias": False}, qkv_bias=True).eval()
    export_hf_gpt2(ours, tmp_path / "hf")
    config, state = import_hf_gpt2(tmp_path / "hf")
    assert state["trf_blocks.0.att.W_query.bias"].any()  # the model's own, not zeros
    with torch.no_grad():
        back = model_from_state(config, state).eval()
        torch.testing.assert_close(back(ids()), ours(ids()), atol=1e-5, rtol=0)


def test_gpt2_cannot_hold_a_soft_cap_and_says_so(tmp_path) -> None:
    from toolkit.errors import ComponentError
    from toolkit.model.hf_gpt2 import export_hf_gpt2

    with pytest.raises(ComponentError, match=r"GPT-2 cannot represent logit_softcap 30"):
        export_hf_gpt2(tiny(logit_softcap=30.0), tmp_path / "hf")


def test_a_model_with_a_z_loss_copies_after_a_training_step() -> None:
    import copy

    model = tiny(z_loss=1e-2)
    model(ids()).sum().backward()
    twin = copy.deepcopy(model)
    assert twin.aux_losses == {} and set(model.gather_aux_losses()) == {"z_loss"}

"""Schedule-free AdamW against the paper's three sequences written out in float64; what its
average is for (a noisy problem at a constant lr); its eval() / train() switch; the loop's
evaluation-weights contract with a third party's optimizer; and a schedule-free run that is
interrupted resuming to the same metrics."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from plugins.schedule_free import ScheduleFreeAdamW
from tests.conftest import interrupting_plugins, small_toml, validation_error, write_spec
from toolkit import hookimpl
from toolkit.api.manager import Plugins
from toolkit.cli import main
from toolkit.model.checkpoint import CHECKPOINT_FILE
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run
from toolkit.testing import check_component

PLUGINS = Plugins(autoload=False)


def reference(w0, grads_at, lrs, beta1, beta2, eps, decay, power):
    """x, y and z kept apart (the paper's Algorithm 1, weighted as the authors' code weighs):
    returns the final (x, y)."""
    x, z, y = w0.clone(), w0.clone(), w0.clone()
    v, weight_sum, lr_max = torch.zeros_like(w0), 0.0, 0.0
    for t, lr in enumerate(lrs, start=1):
        g = grads_at(y)
        v = beta2 * v + (1 - beta2) * g * g
        z = z - lr * (g / ((v / (1 - beta2**t)).sqrt() + eps) + decay * y)
        lr_max = max(lr_max, lr)
        weight_sum += lr_max**power
        c = lr_max**power / weight_sum
        x = (1 - c) * x + c * z
        y = (1 - beta1) * z + beta1 * x
    return x, y


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    beta1=st.floats(0.5, 0.98),
    beta2=st.floats(0.9, 0.999),
    decay=st.sampled_from((0.0, 0.1)),
    power=st.sampled_from((0.0, 1.0, 2.0)),
    lrs=st.lists(st.floats(1e-3, 0.1), min_size=1, max_size=12),
)
def test_steps_follow_the_papers_three_sequences(seed, beta1, beta2, decay, power, lrs):
    gen = torch.Generator().manual_seed(seed)
    w0 = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    a = torch.rand(5, 3, generator=gen, dtype=torch.float64) + 0.1
    b = torch.randn(5, 3, generator=gen, dtype=torch.float64)

    def grads_at(w):  # 0.5 sum a (w - b)^2
        return a * (w - b)

    p = nn.Parameter(w0.clone())
    opt = ScheduleFreeAdamW(
        [p], lr=lrs[0], betas=(beta1, beta2), eps=1e-8, weight_decay=decay, weight_lr_power=power
    )
    for lr in lrs:  # the schedule sets each step's lr in the group, as LambdaLR does
        opt.param_groups[0]["lr"] = lr
        p.grad = grads_at(p.detach())
        opt.step()
    x, y = reference(w0, grads_at, lrs, beta1, beta2, 1e-8, decay, power)
    torch.testing.assert_close(p.detach(), y, rtol=1e-9, atol=1e-9)  # training: y
    opt.eval()
    torch.testing.assert_close(p.detach(), x, rtol=1e-9, atol=1e-9)  # evaluating: x
    opt.eval()  # idempotent
    torch.testing.assert_close(p.detach(), x, rtol=1e-9, atol=1e-9)
    opt.train()
    torch.testing.assert_close(p.detach(), y, rtol=1e-9, atol=1e-9)


def test_the_average_is_what_a_noisy_problem_at_a_constant_lr_wants():
    """Noisy gradients of a quadratic at a constant lr: the iterate z keeps jumping around
    the minimum at a distance the lr sets, while the average x settles much closer."""
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(200, generator=gen)
    p = nn.Parameter(torch.zeros(200))
    opt = ScheduleFreeAdamW([p], lr=0.05)
    for _ in range(400):
        p.grad = (p.detach() - target) + torch.randn(200, generator=gen)
        opt.step()
    z = opt.state[p]["z"]
    opt.eval()
    x_error = float((p.detach() - target).pow(2).mean())
    z_error = float((z - target).pow(2).mean())
    assert x_error < 0.2 * z_error, (x_error, z_error)


def test_a_step_in_eval_mode_is_refused_and_an_unstepped_switch_changes_nothing():
    p = nn.Parameter(torch.ones(3))
    opt = ScheduleFreeAdamW([p])
    opt.eval()  # no step yet: x = y = z
    assert torch.equal(p.detach(), torch.ones(3))
    p.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match=r"call train\(\) first"):
        opt.step()
    opt.train()
    opt.step()
    assert not torch.equal(p.detach(), torch.ones(3))


def test_its_state_records_the_mode_and_a_saved_state_resumes():
    p = nn.Parameter(torch.ones(4))
    opt = ScheduleFreeAdamW([p], lr=0.1)
    for _ in range(3):
        p.grad = p.detach() * 2
        opt.step()
    saved = copy.deepcopy(opt.state_dict())  # as torch.save would: no shared tensors
    assert saved["param_groups"][0]["steps"] == 3 and saved["param_groups"][0]["train_mode"]
    q = nn.Parameter(p.detach().clone())
    again = ScheduleFreeAdamW([q], lr=0.1)
    again.load_state_dict(saved)
    for o, w in ((opt, p), (again, q)):
        w.grad = w.detach() * 2
        o.step()
        o.eval()
    assert torch.equal(p, q)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("weight_lr_power = -1.0", "weight_lr_power must be a finite number >= 0, got -1.0"),
        ('weight_lr_power = "x"', "option 'weight_lr_power' must be a number"),
    ],
)
def test_bad_options_are_one_line_errors_at_validation(tmp_path, capsys, options, message):
    text = small_toml("sf", train=f'optimizer = {{ name = "schedule-free", {options} }}')
    err = validation_error(tmp_path, text, capsys)
    assert re.search(message, err), err


def test_it_conforms():
    check_component("optimizer", "schedule-free", PLUGINS, max_examples=4)


# -- the schedule it is meant for ------------------------------------------------------------
def pairing_doc(tiny_doc, base_schedule: str) -> dict:
    """Three variants: schedule-free with the base schedule, with constant, and adamw."""
    doc = copy.deepcopy(tiny_doc)
    doc["train"].update(optimizer="schedule-free", schedule=base_schedule)
    doc["variants"] = [
        {"name": "sf-base"},
        {"name": "sf-constant", "train.schedule": "constant"},
        {"name": "adamw", "train.optimizer": "adamw"},
    ]
    return doc


def test_a_decaying_schedule_with_schedule_free_is_a_warning_naming_the_variants(tiny_doc):
    assert PLUGINS.registry.get("optimizer", "schedule-free").facts["schedules"] == ("constant",)
    warnings = parse_spec(pairing_doc(tiny_doc, "constant"), plugins=PLUGINS).warnings
    assert not [w for w in warnings if "is meant to run with" in w]  # (the twins warn apart)
    (warning,) = parse_spec(pairing_doc(tiny_doc, "wsd"), plugins=PLUGINS).warnings
    assert warning.startswith("train.optimizer 'schedule-free' is meant to run with")
    assert "variant sf-base runs it with 'wsd'" in warning and "adamw" not in warning
    doc = pairing_doc(tiny_doc, "cosine")
    doc["variants"].append({"name": "sf-linear", "train.schedule": "linear"})
    doc["variants"].append({"name": "sf-cosine", "train.lr": 1e-3})
    warnings = parse_spec(doc, plugins=PLUGINS).warnings
    assert len(warnings) == 2  # one per schedule, each naming its variants once over the seeds
    assert "variants sf-base, sf-cosine run it with 'cosine'" in warnings[0]
    assert "variant sf-linear runs it with 'linear'" in warnings[1]


def test_a_third_partys_optimizer_declares_its_schedules_the_same_way(tiny_doc):
    class Plugin:
        @hookimpl
        def register_components(self, register):
            def flat_sgd(model, config):
                """SGD meant for a constant or inverse-sqrt schedule"""
                return torch.optim.SGD(model.parameters(), lr=config.lr)

            register("optimizer", "flat-sgd", flat_sgd, schedules=("constant", "inverse-sqrt"))

    plugins = Plugins(autoload=False)
    plugins.add(Plugin(), name="flat")
    tiny_doc["train"]["optimizer"] = "flat-sgd"
    (warning,) = parse_spec(tiny_doc, plugins=plugins).warnings
    assert "with train.schedule 'constant' or 'inverse-sqrt', but variant" in warning
    tiny_doc["train"]["schedule"] = "inverse-sqrt"
    assert parse_spec(tiny_doc, plugins=plugins).warnings == []


def test_validate_and_run_print_the_warning_and_go_on(tmp_path, capsys):
    text = small_toml("sf", train='optimizer = "schedule-free"')
    spec = write_spec(tmp_path / "spec.toml", text)
    assert main(["validate", str(spec)]) == 0
    err = capsys.readouterr().err
    assert "warning: train.optimizer 'schedule-free' is meant to run with" in err
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "warning: train.optimizer 'schedule-free'" in capsys.readouterr().err
    assert (tmp_path / "out" / "results.csv").exists()


# -- the loop's evaluation-weights contract ------------------------------------------------
class Zeroing(torch.optim.SGD):
    """SGD whose evaluation weights are all zeros: a model that scores every token ln(V).
    Records each call, and refuses a step outside train mode."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.calls: list[str] = []
        self.kept: list[torch.Tensor] | None = None

    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def eval(self):
        self.calls.append("eval")
        if self.kept is None:
            self.kept = [p.clone() for p in self._params()]
            for p in self._params():
                p.zero_()

    @torch.no_grad()
    def train(self):
        self.calls.append("train")
        if self.kept is not None:
            for p, k in zip(self._params(), self.kept, strict=True):
                p.copy_(k)
            self.kept = None

    def step(self, closure=None):
        assert self.kept is None, "step() in eval mode"
        return super().step(closure)


MADE: list[Zeroing] = []


class ZeroingPlugin:
    @hookimpl
    def register_components(self, register):
        def zeroing(model, config):
            """SGD that evaluates an all-zero model"""
            optimizer = Zeroing([p for p in model.parameters() if p.requires_grad], config.lr)
            MADE.append(optimizer)
            return optimizer

        register("optimizer", "zeroing", zeroing)


def test_the_loop_evaluates_samples_and_saves_the_optimizers_evaluation_weights(tmp_path, tiny_doc):
    plugins = Plugins(autoload=False)
    plugins.add(ZeroingPlugin(), name="zeroing")
    MADE.clear()
    tiny_doc["train"].update(optimizer="zeroing", max_steps=6, eval_interval=3, lr=0.05)
    spec = parse_spec(tiny_doc, plugins=plugins)
    out = tmp_path / "out"
    table = run(spec, out, plugins=plugins, progress=False)
    assert table["status"].tolist() == ["ok"]
    (made,) = [o for o in MADE if o.calls]  # validation builds one it never steps
    assert made.calls == ["train", "eval", "train", "eval"]  # the last evaluation's stay
    folder = out / spec.runs[0].folder
    lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    vocab = json.loads((folder / "config.json").read_text())["model_resolved"]["vocab_size"]
    for line in lines:  # an all-zero model: uniform logits
        assert line["val_loss"] == pytest.approx(math.log(vocab), abs=1e-6)
        assert line["train_loss"] == pytest.approx(math.log(vocab), abs=1e-6)
    weights = torch.load(folder / CHECKPOINT_FILE, weights_only=True)["model"]
    assert all(not w.any() for w in weights.values())


def metrics(folder: Path) -> list[dict]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(x).items() if k not in ("elapsed_s", "train_s")} for x in lines
    ]


@pytest.mark.slow
def test_a_schedule_free_run_interrupted_resumes_to_the_same_metrics_and_weights(
    tmp_path, tiny_doc
):
    tiny_doc["model"]["drop_rate"] = 0.2
    tiny_doc["train"].update(
        optimizer="schedule-free", schedule="constant", max_steps=9, eval_interval=3,
        threads=1, warmup_steps=2, lr=3e-3,
    )  # fmt: skip
    spec = parse_spec(tiny_doc)
    whole = run(spec, tmp_path / "whole", plugins=PLUGINS, progress=False)
    with pytest.raises(KeyboardInterrupt):
        run(spec, tmp_path / "cut", plugins=interrupting_plugins(6), progress=False)
    folder = spec.runs[0].folder
    assert (tmp_path / "cut" / folder / "resume.pt").exists()
    resumed = run(spec, tmp_path / "cut", plugins=PLUGINS, progress=False)
    assert metrics(tmp_path / "cut" / folder) == metrics(tmp_path / "whole" / folder)
    assert resumed["val_loss"].tolist() == whole["val_loss"].tolist()
    saved = [
        torch.load(tmp_path / w / folder / CHECKPOINT_FILE, weights_only=True)["model"]
        for w in ("cut", "whole")
    ]
    assert all(torch.equal(saved[0][k], saved[1][k]) for k in saved[1])

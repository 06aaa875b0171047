"""The conformance checks of optimizers and schedules (toolkit/testing/optimization.py): every
built-in passes them (tests/testing/test_conformance.py runs them over every registered
component), and components broken on purpose, each in one way, fail the check they break with a
message naming the component, the check and the input."""

from __future__ import annotations

import pytest
import torch

from toolkit import hookimpl
from toolkit.api.manager import Plugins
from toolkit.testing import ConformanceError, check_component


def plugins_with(kind: str, name: str, factory) -> Plugins:
    class Throwaway:
        @hookimpl
        def register_components(self, register):
            register(kind, name, factory)

    plugins = Plugins(autoload=False)
    plugins.add(Throwaway(), name="throwaway")
    return plugins


def params(model):
    return [p for p in model.parameters() if p.requires_grad]


# -- optimizers, each broken in one way ----------------------------------------------------------
def still(model, config):
    """SGD at lr 0: never moves"""
    return torch.optim.SGD(config.decay_groups(params(model)), lr=0.0)


def matrices_only(model, config):
    """AdamW over the matrices; the biases and norms forgotten"""
    return torch.optim.AdamW([p for p in params(model) if p.dim() >= 2], lr=config.lr)


class Forgetful(torch.optim.SGD):
    """SGD whose step size halves every step, counted outside its state: a resumed copy
    starts counting again."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.steps = 0

    @torch.no_grad()
    def step(self, closure=None):
        self.steps += 1
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"] * 0.5**self.steps)


def forgetful(model, config):
    """SGD with a step counter it does not save"""
    return Forgetful(config.decay_groups(params(model)), lr=config.lr)


class OneWay(torch.optim.SGD):
    """SGD with evaluation weights (eval() halves every parameter) that train() never restores."""

    @torch.no_grad()
    def eval(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.mul_(0.5)

    def train(self):
        pass


def one_way(model, config):
    """eval() without a train() that undoes it"""
    return OneWay(config.decay_groups(params(model)), lr=config.lr)


def not_an_optimizer(model, config):
    """A list of parameters, not an optimizer"""
    return params(model)


# -- schedules, each broken in one way -----------------------------------------------------------
CALLS = [0]


def drifting(step, total_steps):
    """Changes a little every time it is called"""
    CALLS[0] += 1
    return 1.0 + 1e-6 * CALLS[0]


def negative(step, total_steps):
    """Below zero half-way through"""
    return 1.0 - 2 * step / max(1, total_steps)


def cold(step, total_steps, *, warmup_steps: int = 0):
    """Takes warmup_steps and ignores it"""
    return 1.0


def a_tensor(step, total_steps):
    """A tensor instead of a number"""
    return torch.tensor(1.0)


BROKEN = {
    "never moves": ("optimizer", still, "reduces a convex loss"),
    "forgets the vectors": ("optimizer", matrices_only, "parameter groups"),
    "state outside state_dict": ("optimizer", forgetful, "state round trip"),
    "not an optimizer": ("optimizer", not_an_optimizer, "build"),
    "eval() for good": ("optimizer", one_way, "evaluation weights"),
    "impure": ("schedule", drifting, "pure function"),
    "negative": ("schedule", negative, "multipliers"),
    "no warm-up": ("schedule", cold, "warm-up"),
    "a tensor": ("schedule", a_tensor, "multipliers"),
}


@pytest.mark.parametrize("flaw", list(BROKEN))
@pytest.mark.slow
def test_a_broken_optimizer_or_schedule_fails_the_check_it_breaks(flaw: str) -> None:
    kind, factory, check = BROKEN[flaw]
    with pytest.raises(ConformanceError) as info:
        check_component(kind, "broken", plugins_with(kind, "broken", factory), max_examples=3)
    message = str(info.value)
    assert message.startswith(f"{kind} 'broken' (plugin 'throwaway') fails check '{check}': ")
    assert "; input: " in message


@pytest.mark.slow
def test_the_messages_say_what_went_wrong() -> None:
    plugins = plugins_with("optimizer", "some", matrices_only)
    with pytest.raises(
        ConformanceError, match=r"puts parameter '\S+' in none of its parameter groups"
    ):
        check_component("optimizer", "some", plugins)
    with pytest.raises(ConformanceError, match=r"took a least-squares loss from .* to "):
        check_component("optimizer", "still", plugins_with("optimizer", "still", still))
    with pytest.raises(ConformanceError, match=r"returned -?[0-9.]+ at step \d+ of \d+, not fin"):
        check_component("schedule", "neg", plugins_with("schedule", "neg", negative))
    with pytest.raises(ConformanceError, match=r"asked for \d+ warm-up steps, it goes from 1.0"):
        check_component("schedule", "cold", plugins_with("schedule", "cold", cold))


def test_an_honest_third_party_schedule_without_warm_up_passes() -> None:
    def halving(step, total_steps):
        """Half the lr every 10 steps"""
        return 0.5 ** (step // 10)

    check_component("schedule", "halving", plugins_with("schedule", "halving", halving))

"""Conformance checks of the kinds that say how a run learns: `optimizer` and `schedule`.

- optimizer (factory(model, config: TrainConfig)), on drawn tiny GPTs (1 or 2 layers, tied or
  not, no dropout) and drawn train.weight_decay_on and weight decay: it returns a
  torch.optim.Optimizer; every trainable parameter is in exactly one parameter group and every
  group has an "lr"; a step leaves the parameters finite; with eval() and train() (evaluation
  weights), eval() is idempotent and finite and train() undoes it; it reduces the loss of a small
  convex problem (least squares with a linear layer, 50 steps at lr 1e-2, no weight decay);
  and its state survives state_dict() -> torch.save -> torch.load(weights_only=True) ->
  load_state_dict() on a fresh optimizer, under a LambdaLR restored the way a resumed run
  restores it, so that continuing gives bit-identical parameters.
- schedule (factory(step, total_steps)), for drawn run lengths: a finite number >= 0 at every
  step 0 .. total_steps; a pure function (the same values when asked again, in reverse order);
  and, when it takes a `warmup_steps` option, a drawn warm-up that rises: non-decreasing over
  its steps and higher at its last step than at its first.

Not checked: that an optimizer or a schedule trains a language model well (a sweep says that),
speed, memory, GPUs, and a schedule's values against any formula.
"""

from __future__ import annotations

import io
import math
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from toolkit.api import contracts
from toolkit.api.contracts import DECAY_TARGETS, TrainConfig
from toolkit.errors import ComponentError
from toolkit.model.gpt import build_model
from toolkit.testing.core import Case, Draw, draws, hypothesis_settings, raised

CONVEX_STEPS = 50
CONVEX_LR = 1e-2


def _changing(step: int) -> float:
    """A multiplier that changes every step, so a restored schedule must restore its step."""
    return 1.0 / (1.0 + 0.5 * step)


def check_optimizer(case: Case, max_examples: int) -> None:
    @hypothesis_settings(max_examples)
    @given(
        d=draws(max_context=8),
        n_layers=st.integers(1, 2),
        tie=st.booleans(),
        decay_on=st.sampled_from(DECAY_TARGETS),
        weight_decay=st.sampled_from((0.0, 0.1)),
        sizes=st.tuples(st.integers(2, 6), st.integers(1, 4)),
    )
    def run(
        d: Draw,
        n_layers: int,
        tie: bool,
        decay_on: str,
        weight_decay: float,
        sizes: tuple[int, int],
    ) -> None:
        config = TrainConfig(1e-3, (0.9, 0.95), weight_decay, decay_on, "cpu")
        model_config = replace(d.config, n_layers=n_layers, tie_embeddings=tie, drop_rate=0.0)
        case.inputs = (
            f"{d.describe()} n_layers={n_layers} tie={tie} weight_decay_on={decay_on!r} "
            f"weight_decay={weight_decay}"
        )
        torch.manual_seed(d.seed)
        model = build_model(model_config, case.plugins)
        optimizer = _build(case, model, config)
        _groups(case, model, optimizer)
        tokens = torch.randint(
            0, model_config.vocab_size, (d.batch, d.t + 1),
            generator=torch.Generator().manual_seed(d.seed),
        )  # fmt: skip
        _steps(case, model, optimizer, None, [tokens], "finite parameters")
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            case.fail("finite parameters", f"a step left parameter {bad[0]!r} non-finite")
        _evaluation_weights(case, model, optimizer)
        _round_trip(case, model_config, config, tokens, d.seed)
        case.inputs = f"least squares {sizes[0]} -> {sizes[1]}, seed={d.seed}"
        _convex(case, sizes, d.seed)

    run()


def _build(case: Case, model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    optimizer = case.build(model, config, model=False)
    if not isinstance(optimizer, torch.optim.Optimizer):
        case.fail("build", f"returned {type(optimizer).__name__}, not a torch.optim.Optimizer")
    return optimizer


def _groups(case: Case, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every trainable parameter in exactly one group, and every group with its own lr: the
    check validation and every run make (toolkit.api.contracts.check_optimizer)."""
    try:
        contracts.check_optimizer(optimizer, model, "the optimizer")
    except ComponentError as exc:
        case.fail("parameter groups", str(exc))


def _steps(
    case: Case,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler | None,
    batches: list[torch.Tensor],
    check: str,
) -> None:
    """One optimizer step (and schedule step) per batch of token ids, next-token loss."""
    for tokens in batches:
        with case.check(check):
            logits = model(tokens[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()


def _evaluation_weights(case: Case, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """An optimizer with eval() and train() (the evaluation-weights contract,
    toolkit.api.contracts.EvaluationWeights): eval() twice is eval() once, its weights are
    finite, and train() puts back what trains (to rounding)."""
    if not (
        callable(getattr(optimizer, "eval", None)) and callable(getattr(optimizer, "train", None))
    ):
        return
    training = {n: p.detach().clone() for n, p in model.named_parameters()}
    with case.check("evaluation weights"):
        optimizer.eval()
    evaluated = {n: p.detach().clone() for n, p in model.named_parameters()}
    with case.check("evaluation weights"):
        optimizer.eval()
    for name, p in model.named_parameters():
        if not torch.equal(p, evaluated[name]):
            case.fail("evaluation weights", f"a second eval() changed parameter {name!r}")
        if not torch.isfinite(p).all():
            case.fail("evaluation weights", f"eval() left parameter {name!r} non-finite")
    with case.check("evaluation weights"):
        optimizer.train()
    for name, p in model.named_parameters():
        if not torch.allclose(p, training[name], rtol=1e-5, atol=1e-6):
            gap = float((p - training[name]).detach().abs().max())
            case.fail(
                "evaluation weights",
                f"eval() then train() moved parameter {name!r} by {gap:.3g}, not back to where "
                f"it trained",
            )


def _saved(case: Case, state: Any) -> Any:
    """state through torch.save and torch.load(weights_only=True), as resume.pt is read."""
    buffer = io.BytesIO()
    with case.check("state round trip"):
        torch.save(state, buffer)
    buffer.seek(0)
    try:
        return torch.load(buffer, weights_only=True)
    except Exception as exc:
        case.fail(
            "state round trip",
            f"its state_dict() does not load with torch.load(weights_only=True), as a resumed "
            f"run reads it: {raised(exc)}",
        )


def _round_trip(
    case: Case, model_config: Any, config: TrainConfig, tokens: torch.Tensor, seed: int
) -> None:
    """Two steps, save, two more steps; a fresh model and optimizer loading what was saved
    (the schedule built first and restored last, as the training loop does) must end with
    the same parameters, bit for bit."""
    gen = torch.Generator().manual_seed(seed + 1)
    batches = [tokens] + [
        torch.randint(0, model_config.vocab_size, tokens.shape, generator=gen) for _ in range(3)
    ]
    torch.manual_seed(seed)
    model = build_model(model_config, case.plugins)
    optimizer = _build(case, model, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _changing)
    _steps(case, model, optimizer, schedule, batches[:2], "state round trip")
    saved = _saved(case, {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
    })  # fmt: skip
    _steps(case, model, optimizer, schedule, batches[2:], "state round trip")

    torch.manual_seed(seed + 2)  # other initial weights: the loaded state must replace them
    again = build_model(model_config, case.plugins)
    again.load_state_dict(saved["model"])
    resumed = _build(case, again, config)
    resumed_schedule = torch.optim.lr_scheduler.LambdaLR(resumed, _changing)
    with case.check("state round trip"):
        resumed.load_state_dict(saved["optimizer"])
        resumed_schedule.load_state_dict(saved["schedule"])
    _steps(case, again, resumed, resumed_schedule, batches[2:], "state round trip")
    mine = dict(again.named_parameters())
    for name, p in model.named_parameters():
        if not torch.equal(p, mine[name]):
            gap = float((p - mine[name]).detach().abs().max())
            case.fail(
                "state round trip",
                f"after state_dict() -> load_state_dict() and two more steps, parameter "
                f"{name!r} differs by {gap:.3g} from the optimizer never interrupted",
            )


def _convex(case: Case, sizes: tuple[int, int], seed: int) -> None:
    """Least squares with a linear layer (weights and bias): strictly convex; the optimizer at
    a constant lr must end below where it started."""
    d_in, d_out = sizes
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(32, d_in, generator=gen)
    y = x @ torch.randn(d_in, d_out, generator=gen) + torch.randn(d_out, generator=gen)
    torch.manual_seed(seed)
    model = nn.Linear(d_in, d_out)
    optimizer = _build(case, model, TrainConfig(CONVEX_LR, (0.9, 0.95), 0.0, "matrices", "cpu"))
    _groups(case, model, optimizer)

    def loss() -> torch.Tensor:
        return F.mse_loss(model(x), y)

    with torch.no_grad():
        first = loss().item()
    for _ in range(CONVEX_STEPS):
        with case.check("reduces a convex loss"):
            optimizer.zero_grad(set_to_none=True)
            loss().backward()
            optimizer.step()
    with torch.no_grad():
        last = loss().item()
    if not (math.isfinite(last) and last < first):
        case.fail(
            "reduces a convex loss",
            f"{CONVEX_STEPS} steps at lr {CONVEX_LR} took a least-squares loss from {first:.4g} "
            f"to {last:.4g}",
        )


def check_schedule(case: Case, max_examples: int) -> None:
    factory, warms = case.component.factory, "warmup_steps" in case.component.options

    def values(total: int, steps: range | list[int], options: dict[str, Any]) -> list[Any]:
        out = []
        for step in steps:
            with case.check("multipliers"):
                value = factory(step, total, **options)
            if isinstance(value, bool) or not isinstance(value, int | float):
                case.fail(
                    "multipliers",
                    f"returned {type(value).__name__} at step {step} of {total}, not a number",
                )
            if not (math.isfinite(value) and value >= 0):
                case.fail(
                    "multipliers", f"returned {value!r} at step {step} of {total}, not finite >= 0"
                )
            out.append(value)
        return out

    @hypothesis_settings(max_examples)
    @given(total=st.integers(1, 400), warmup=st.integers(2, 400))
    def run(total: int, warmup: int) -> None:
        case.inputs = f"total_steps={total}"
        steps = range(total + 1)  # the loop asks for step total_steps too, after the last update
        first = values(total, steps, case.options)
        again = values(total, list(reversed(steps)), case.options)[::-1]
        if first != again:
            at = next(s for s in steps if first[s] != again[s])
            case.fail(
                "pure function",
                f"step {at} gave {first[at]!r}, then {again[at]!r} when asked again",
            )
        if not warms:
            return
        warmup = min(warmup, total)
        if warmup < 2:
            return
        case.inputs = f"total_steps={total} warmup_steps={warmup}"
        rise = values(total, range(warmup), {**case.options, "warmup_steps": warmup})
        falls = [s for s in range(1, warmup) if rise[s] < rise[s - 1]]
        if falls or not rise[-1] > rise[0]:
            at = falls[0] if falls else warmup - 1
            case.fail(
                "warm-up",
                f"asked for {warmup} warm-up steps, it goes from {rise[0]!r} at step 0 to "
                f"{rise[at]!r} at step {at}" + (" (down from the step before)" if falls else ""),
            )

    run()

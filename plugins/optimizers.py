"""Built-in optimizers: `adamw` (the default), `sgd`, `lion`, `adafactor` and `muon`.

Each factory takes the model and the run's training settings (toolkit.api.contracts.TrainConfig:
train.lr, betas, weight_decay, weight_decay_on, the device) and returns one
torch.optim.Optimizer owning its parameter groups; the schedule then scales every group's lr.
`adamw`, `sgd` and `adafactor` are torch's own; `lion` is written here (its update rule is in
`Lion`'s docstring); `muon` is torch's Muon for the matrices inside the transformer blocks and
AdamW for everything else, as one optimizer object (`Combined`), so the loop, the schedule and
resuming treat it like any other.

Not here: the schedule (plugins/schedules.py), gradient clipping and the loop
(toolkit/training/).
"""

from __future__ import annotations

import math
from collections import ChainMap
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from toolkit.api.contracts import TrainConfig
from toolkit.api.hookspecs import hookimpl
from toolkit.errors import ComponentError


def closure_loss(closure: Callable[[], torch.Tensor] | None) -> torch.Tensor | None:
    """What step(closure) returns: the closure's loss, computed with gradients on (a step runs
    under no_grad), or None without one. The optimizers written here share it."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def fused_on(device: str) -> dict[str, bool]:
    """{"fused": True} where torch has a fused AdamW kernel (CUDA and CPU): every parameter
    updated in one pass, the same maths; 3x faster than the default on a 2-core CPU
    (benchmarks/run.py's optimizer row)."""
    return {"fused": True} if device.split(":")[0] in ("cuda", "cpu") else {}


def adamw(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW at train.lr with train.betas; weight decay where train.weight_decay_on says (the default)"""
    groups = config.decay_groups(trainable(model))
    fused = fused_on(config.device)
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), **fused)


def sgd(
    model: nn.Module, config: TrainConfig, *, momentum: float = 0.9, nesterov: bool = False
) -> torch.optim.Optimizer:
    """SGD with momentum at train.lr; weight decay as an L2 term in the gradient (betas unused)"""
    groups = config.decay_groups(trainable(model))
    return torch.optim.SGD(groups, lr=config.lr, momentum=momentum, nesterov=nesterov)


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): the sign of an
    interpolation of the momentum and the gradient, with decoupled weight decay.

    For each parameter p with gradient g and momentum m (zeros at first), one step is

        c = beta1 * m + (1 - beta1) * g       the interpolation
        p = p - lr * weight_decay * p         decoupled weight decay
        p = p - lr * sign(c)                  every coordinate moves by exactly lr (or 0)
        m = beta2 * m + (1 - beta2) * g       the momentum, updated after it was used

    Every coordinate of the update has size lr, so Lion takes a smaller lr than AdamW.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not all(0 <= b < 1 for b in betas) or len(betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = closure_loss(closure)
        for group in self.param_groups:
            lr, (beta1, beta2), decay = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Lion does not take sparse gradients")
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m = state["exp_avg"]
                c = m.mul(beta1).add_(p.grad, alpha=1 - beta1)
                p.mul_(1 - lr * decay)
                p.add_(c.sign_(), alpha=-lr)
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss


def lion(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Lion at train.lr with train.betas (the paper's are 0.9, 0.99), decoupled weight decay"""
    groups = config.decay_groups(trainable(model))
    return Lion(groups, lr=config.lr, betas=tuple(config.betas))


def adafactor(
    model: nn.Module, config: TrainConfig, *, beta2_decay: float = -0.8, d: float = 1.0
) -> torch.optim.Optimizer:
    """torch's Adafactor: factored second moments, train.lr a relative step size (betas unused)"""
    groups = config.decay_groups(trainable(model))
    return torch.optim.Adafactor(groups, lr=config.lr, beta2_decay=beta2_decay, d=d)


class _States(ChainMap):
    """The combined optimizers' states as one mapping. A plain ChainMap looks a key up in each
    map in turn, and the first (a defaultdict, as every optimizer's state is) would answer a
    parameter of another optimizer by inserting an empty state for it, which then breaks that
    optimizer's state_dict(); this one asks each map whether it holds the key first."""

    def __getitem__(self, key: Any) -> Any:
        for mapping in self.maps:
            if key in mapping:
                return mapping[key]
        raise KeyError(key)


class Combined(torch.optim.Optimizer):
    """Several optimizers over disjoint parameters, as one: step() steps each in turn.

    param_groups is the list of their own group dicts (not copies), so a scheduler setting
    group["lr"] sets theirs; state_dict() holds each one's state_dict, and load_state_dict()
    gives each its own back, so a resumed run continues exactly. Groups cannot be added later.
    """

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers
        params = [p for o in optimizers for g in o.param_groups for p in g["params"]]
        super().__init__(params, {})
        self._link()

    def _link(self) -> None:
        """Point param_groups and state at the inner optimizers' (after they replace theirs)."""
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]
        self.state = _States(*(o.state for o in self.optimizers))  # type: ignore[assignment]

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = closure_loss(closure)
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("optimizers")
        if not isinstance(saved, list) or len(saved) != len(self.optimizers):
            raise ValueError(
                f"the saved state holds {len(saved) if isinstance(saved, list) else 'no'} "
                f"optimizers' states, this one combines {len(self.optimizers)}"
            )
        for optimizer, state in zip(self.optimizers, saved, strict=True):
            optimizer.load_state_dict(state)
        self._link()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if hasattr(self, "optimizers") and self.param_groups:  # after __init__: refused
            raise NotImplementedError("add the group to one of the combined optimizers instead")
        super().add_param_group(param_group)


def hidden_matrices(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon's, AdamW's) trainable parameters: the 2-D ones inside the transformer blocks
    (`model.trf_blocks`; the whole module for a model without it), and everything else: the
    token and positional embeddings, the head (tied or not), norms, biases, and any tensor of
    another rank."""
    params = trainable(model)
    outside = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.Embedding)
        or any(m is getattr(model, name, None) for name in ("tok_emb", "pos_emb", "out_head"))
        for p in m.parameters()
    }
    blocks = getattr(model, "trf_blocks", model)
    inside = {id(p) for p in blocks.parameters()} - outside
    hidden = [p for p in params if p.dim() == 2 and id(p) in inside]
    taken = {id(p) for p in hidden}
    return hidden, [p for p in params if id(p) not in taken]


def orthogonalized(
    g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float, dtype
) -> torch.Tensor:
    """Newton-Schulz iterations towards the orthogonal factor of g (rows x cols), computed in
    `dtype`: scaled to spectral norm at most 1 (by its Frobenius norm), then `steps` times
    X <- a X + (b A + c A A) X with A = X X^T, on the wide orientation (X^T when g is tall)."""
    a, b, c = coefficients
    x = g.to(dtype)
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class FloatMuon(torch.optim.Muon):
    """torch's Muon with its Newton-Schulz iterations in float32 instead of bfloat16: the same
    update rule (momentum, Nesterov, the orthogonalized update at the adjusted lr, decoupled
    weight decay) and the same state, for CPUs without native bfloat16, where torch's bfloat16
    products run at about 1% of float32's speed (benchmarks/optimizers.py)."""

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = closure_loss(closure)
        for group in self.param_groups:
            lr, decay, momentum = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = orthogonalized(
                    update, group["ns_coefficients"], group["ns_steps"], group["eps"],
                    torch.float32,
                )  # fmt: skip
                rows, cols = p.shape[:2]
                scale = {
                    "original": math.sqrt(max(1, rows / cols)),
                    "match_rms_adamw": 0.2 * math.sqrt(max(rows, cols)),
                }[group["adjust_lr_fn"] or "original"]
                p.mul_(1 - lr * decay)
                p.add_(update.to(p.dtype), alpha=-lr * scale)
        return loss


NS_DTYPES = ("bfloat16", "float32")


def muon(
    model: nn.Module,
    config: TrainConfig,
    *,
    muon_lr: float = 0.02,
    adamw_lr: float | None = None,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_steps: int = 5,
    adjust_lr: str = "original",
    ns_dtype: str = "bfloat16",
) -> torch.optim.Optimizer:
    """torch's Muon for the blocks' matrices (muon_lr), AdamW for the rest (adamw_lr; None: train.lr)"""
    # muon_lr's default is the lr of torch's Muon example; adjust_lr is torch's adjust_lr_fn:
    # "original" scales by sqrt(max(1, rows / cols)), "match_rms_adamw" by 0.2 sqrt(max(rows,
    # cols)). Both parts take train.weight_decay (decoupled); the matrices are always decayed,
    # the rest as train.weight_decay_on says. ns_dtype "float32" runs the Newton-Schulz
    # iterations in float32 (FloatMuon), for CPUs without native bfloat16.
    if not hasattr(torch.optim, "Muon"):
        raise ComponentError(
            f"muon needs torch.optim.Muon, which torch {torch.__version__} does not have; "
            "upgrade torch"
        )
    if ns_dtype not in NS_DTYPES:
        raise ComponentError(
            f"muon: ns_dtype must be one of {', '.join(NS_DTYPES)}, got {ns_dtype!r}"
        )
    hidden, rest = hidden_matrices(model)
    fused = fused_on(config.device)
    parts: list[torch.optim.Optimizer] = []
    if rest:
        lr = config.lr if adamw_lr is None else adamw_lr
        groups = config.decay_groups(rest)
        parts.append(torch.optim.AdamW(groups, lr=lr, betas=tuple(config.betas), **fused))
    if hidden:
        parts.append(
            (FloatMuon if ns_dtype == "float32" else torch.optim.Muon)(
                hidden,
                lr=muon_lr,
                weight_decay=config.weight_decay,
                momentum=momentum,
                nesterov=nesterov,
                ns_steps=ns_steps,
                adjust_lr_fn=adjust_lr,
            )
        )
    if not parts:
        raise ComponentError("muon: the model has no trainable parameters")
    return parts[0] if len(parts) == 1 else Combined(*parts)


@hookimpl
def register_components(register) -> None:
    register("optimizer", "adamw", adamw)
    register("optimizer", "sgd", sgd)
    register("optimizer", "lion", lion)
    register("optimizer", "adafactor", adafactor)
    register("optimizer", "muon", muon)

"""A mixture-of-experts feed-forward: `moe`, registered as an activation (the whole block).

A router, Linear(d, n_experts) without a bias, scores the experts for each token; the token
goes to its top_k experts (softmax over all of them, the chosen k renormalized to sum to 1),
and the block's output is their outputs weighted so. Every token reaches its k experts: no
capacity, nothing dropped, so each position's output depends on that position alone. Each
expert is one of the dense feed-forwards of plugins/activations.py, chosen by name (`expert`)
and built exactly as that activation is, at the config's ffn_hidden or its default width; so
a spec's match_params can resize the experts like any feed-forward.

Two contracts of toolkit.model.gpt: the experts' container has `active_fraction = top_k /
n_experts` (a token uses that share of them; the router is always used), so the active
parameter counts and FLOPs per token count what one token computes; and in training the block
leaves `aux_losses = {"moe_balance": aux_weight * load-balancing loss}` (Switch Transformer,
Fedus et al. 2021: n_experts * sum_i f_i * P_i, f_i the share of token-slots sent to expert i,
P_i its mean router probability; 1 when routing is uniform, n_experts when one expert takes
everything), which keeps the router from sending every token to one expert.

With top_k = 1 the renormalized weight is always 1, so the language-model loss gives the router
no gradient and only the balance loss trains it (Switch weights by the raw probability instead);
top_k >= 2 learns the routing from both.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from plugins import activations
from toolkit.api.hookspecs import hookimpl
from toolkit.api.registry import suggest
from toolkit.errors import ComponentError


def _dense_feed_forwards() -> dict[str, Callable[..., nn.Module]]:
    """name -> factory of every feed-forward plugins/activations.py registers, read from its own
    registration so that a feed-forward added there is an expert here too."""
    found: dict[str, Callable[..., nn.Module]] = {}
    activations.register_components(
        lambda kind, name, factory, **facts: found.update({name: factory})
    )
    return found


EXPERTS = _dense_feed_forwards()


class MixtureOfExperts(nn.Module):
    """Each token through its top_k experts, weighted by the renormalized router softmax."""

    def __init__(
        self, config, *, n_experts: int, top_k: int, expert: str, aux_weight: float
    ) -> None:
        super().__init__()
        # The router first: the conformance kit takes the block's last nn.Linear for its
        # residual projection, and that is an expert's.
        self.router = nn.Linear(config.emb_dim, n_experts, bias=False)
        # Built as that activation is, model.bias included.
        self.experts = nn.ModuleList(EXPERTS[expert](config) for _ in range(n_experts))
        # A token uses top_k of them: the parameter and FLOP counts read this
        # (toolkit.model.gpt.active_shares); the router is always used.
        self.experts.active_fraction = top_k / n_experts
        self.top_k = top_k
        self.aux_weight = aux_weight
        self.aux_losses: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        tokens = x.reshape(-1, x.shape[-1])  # (N, d)
        probs = torch.softmax(self.router(tokens).float(), dim=-1)  # (N, E)
        top_p, chosen = probs.topk(self.top_k, dim=-1)  # (N, k)
        gates = top_p / top_p.sum(dim=-1, keepdim=True)
        ys = self._through_experts(tokens, chosen)  # (N, k, d)
        if self.training:
            self.aux_losses = {"moe_balance": self.aux_weight * balance_loss(probs, chosen)}
        else:
            self.aux_losses = {}
        return (ys * gates.to(ys.dtype)[..., None]).sum(dim=1).view(x.shape)

    def _through_experts(self, tokens: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """(N, k, d): token n through its expert chosen[n, j] at [n, j]. The N * k token-slots
        are sorted by expert, so each expert runs once, on one contiguous block of its tokens
        (no loop over tokens); an expert with no tokens runs on none, so that its parameters
        still get a (zero) gradient."""
        n, d, k = *tokens.shape, self.top_k
        slots = chosen.flatten()  # slot n * k + j: token n's j-th expert
        order = slots.argsort(stable=True)
        inverse = order.argsort()
        counts = torch.bincount(slots, minlength=len(self.experts)).tolist()
        copies = tokens[:, None].expand(n, k, d).reshape(n * k, d)  # one row per slot
        blocks = Permute.apply(copies, order, inverse).split(counts)
        out = torch.cat([expert(b) for expert, b in zip(self.experts, blocks, strict=True)])
        return Permute.apply(out, inverse, order).view(n, k, -1)

    def __getstate__(self) -> dict:
        """A copy (copy.deepcopy, pickle) leaves the latest auxiliary losses behind: tensors in
        one step's graph, which torch cannot copy and which belong to that step alone."""
        return {**super().__getstate__(), "aux_losses": {}}

    def residual_projections(self) -> list[nn.Linear]:
        """Each expert's output Linear: what writes into the residual stream (the gpt2 init
        scales them; the router only mixes)."""
        return [_last_linear(e) for e in self.experts]


class Permute(torch.autograd.Function):
    """x.index_select(0, perm) for a permutation perm, whose gradient is the gather by the
    inverse permutation: index_select's own backward scatters with additions, which are
    several times slower on a CPU (and nondeterministic on a GPU)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, perm: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(0, perm)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def balance_loss(probs: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Switch Transformer's load-balancing loss, unweighted: E * sum_i f_i * P_i over the N
    tokens' router probabilities probs (N, E) and chosen experts (N, k); f_i, the share of the
    N * k token-slots that went to expert i, is counted (no gradient) and P_i, the mean
    probability of expert i, trains the router. 1 for uniform routing."""
    n_experts = probs.shape[-1]
    f = torch.bincount(chosen.flatten(), minlength=n_experts).to(probs.dtype) / chosen.numel()
    return n_experts * (f * probs.mean(dim=0)).sum()


def _last_linear(module: nn.Module) -> nn.Linear:
    return [m for m in module.modules() if isinstance(m, nn.Linear)][-1]


def moe_feed_forward(
    config, *, n_experts: int = 8, top_k: int = 2, expert: str = "gelu", aux_weight: float = 0.01
) -> MixtureOfExperts:
    """Mixture of experts: each token through top_k of n_experts feed-forwards, load-balanced (Shazeer 2017; Fedus 2021)"""
    what = "activation 'moe'"
    if n_experts < 1:
        raise ComponentError(f"{what}: n_experts must be at least 1, got {n_experts}")
    if top_k < 1:
        raise ComponentError(f"{what}: top_k must be at least 1, got {top_k}")
    if top_k > n_experts:
        raise ComponentError(
            f"{what}: top_k ({top_k}) is larger than n_experts ({n_experts}); a token goes to "
            f"top_k different experts, so choose top_k <= n_experts"
        )
    if not aux_weight >= 0:  # NaN too
        raise ComponentError(f"{what}: aux_weight must be a number >= 0, got {aux_weight!r}")
    if expert not in EXPERTS:
        raise ComponentError(
            f"{what}: unknown expert {expert!r}{suggest(str(expert), EXPERTS)}; choose one of: "
            f"{', '.join(sorted(EXPERTS))}"
        )
    return MixtureOfExperts(
        config, n_experts=n_experts, top_k=top_k, expert=expert, aux_weight=aux_weight
    )


@hookimpl
def register_components(register) -> None:
    register("activation", "moe", moe_feed_forward)

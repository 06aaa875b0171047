"""Built-in samplers: `greedy`, `temperature`, `top-k` (the book's generate()), `top-p` (nucleus),
`min-p`, `typical`, and `chain`, which applies any of the filters in an order you choose.

A sampler maps the last position's logits (B, V) and a torch.Generator to token ids (B, 1),
int64. Every sampler here is a `Chain` of filters on logits followed by one multinomial draw
(or an argmax when the temperature is 0); `probs(logits)` returns the (B, V) distribution the
draw uses, for tests and inspection. Each filter is one small function used both by its own
sampler and by `chain`:

- `top_k`: keep the k largest logits (the book's filter; ties with the k-th are kept);
- `temperature`: divide by t; t = 0 keeps only the argmax (greedy);
- `top_p`: keep the smallest set of most likely tokens whose probability reaches p (Holtzman
  et al. 2020);
- `min_p`: keep tokens whose probability is at least p x the largest one (Nguyen et al. 2024);
- `typical_p`: keep the tokens whose surprisal is closest to the entropy, up to mass p
  (locally typical sampling, Meister et al. 2023).

Single samplers are chains in the default order top_k, temperature, top_p, min_p, typical_p:
`top-k` filters then applies the temperature (the book's order), while `top-p`, `min-p` and
`typical` apply the temperature first and filter the tempered distribution. Filters never
change the logits they are given, and keep at least one token (the most likely, except
typical). Option ranges are checked when a sampler is built, so a bad spec fails before training.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from toolkit.api.hookspecs import hookimpl
from toolkit.errors import ComponentError

NEG_INF = float("-inf")


# -- filters: logits (B, V) float -> new logits (B, V), removed tokens at -inf ------------------
def top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits in each row (and any tied with the k-th)."""
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def temperature(logits: torch.Tensor, t: float) -> torch.Tensor:
    """Divide by t; t = 0 keeps only each row's argmax (greedy).

    Each row's largest logit is subtracted before dividing (the softmax is the same): the
    tempered logits are then <= 0, with the largest at 0, so a small t can only send the others
    to -inf (probability 0, the t -> 0 limit) and never to +inf, whose inf - inf in the softmax
    is NaN. t itself is refused outside TEMPERATURE_RANGE (see `_check`)."""
    if t == 0:
        keep = torch.zeros_like(logits, dtype=torch.bool)
        keep.scatter_(-1, logits.argmax(dim=-1, keepdim=True), True)
        return logits.masked_fill(~keep, NEG_INF)
    if t == 1:
        return logits
    return (logits - logits.max(dim=-1, keepdim=True).values) / t


def _keep_sorted(logits: torch.Tensor, order: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mask the tokens not kept, where keep (B, V) is given in the order `order` sorts them."""
    kept = torch.zeros_like(keep).scatter(-1, order, keep)
    return logits.masked_fill(~kept, NEG_INF)


def top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities add up to at least p."""
    probs, order = torch.sort(torch.softmax(logits, dim=-1), dim=-1, descending=True, stable=True)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # probability of the tokens ranked above
    keep = mass_before < p
    keep[:, 0] = True
    return _keep_sorted(logits, order, keep)


def min_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep tokens with probability >= p x the most likely one's (in log space: no underflow)."""
    top = logits.max(dim=-1, keepdim=True).values
    return logits.masked_fill(logits - top < math.log(p), NEG_INF)


def typical_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Locally typical set: tokens sorted by |surprisal - entropy|, kept until their mass
    reaches p (at least one)."""
    logp = torch.log_softmax(logits, dim=-1)
    probs = logp.exp()
    entropy = torch.special.entr(probs).sum(dim=-1, keepdim=True)  # 0 log 0 = 0
    deviation = (-logp - entropy).abs()  # removed tokens: inf, sorted last
    dev_sorted, order = torch.sort(deviation, dim=-1, stable=True)
    mass_before = torch.cumsum(probs.gather(-1, order), dim=-1) - probs.gather(-1, order)
    keep = (mass_before < p) & torch.isfinite(dev_sorted)
    keep[:, 0] = True
    return _keep_sorted(logits, order, keep)


FILTERS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "top_k": top_k,
    "temperature": temperature,
    "top_p": top_p,
    "min_p": min_p,
    "typical_p": typical_p,
}
DEFAULT_ORDER = ["top_k", "temperature", "top_p", "min_p", "typical_p"]
# Temperatures other than 0 (greedy): float32's normal numbers, as the logits are divided in
# float32 (`Chain.filter`). Below the smallest, t loses precision and under about 1.4e-45
# rounds to 0, so the division gives 0 / 0 = NaN; above the largest, t rounds to inf and
# -inf / inf (a filtered token) is NaN. Within it, `temperature` keeps every division finite
# or -inf.
TEMPERATURE_RANGE = (torch.finfo(torch.float32).tiny, torch.finfo(torch.float32).max)


def _check(name: str, value: float | None, where: str) -> None:
    """One-line errors for out-of-range filter values; `where` names the sampler's option.
    NaN fails every range test, so it is refused too."""
    if value is None:
        return
    if name == "top_k" and value < 1:
        raise ComponentError(f"{where} must be at least 1, got {value}")
    low, high = TEMPERATURE_RANGE
    if name == "temperature" and not (value == 0 or low <= value <= high):
        raise ComponentError(
            f"{where} must be 0 (greedy) or a number from {low:.2g} to {high:.2g} (float32's "
            f"range, where the logits are divided), got {value}"
        )
    if name in ("top_p", "min_p", "typical_p") and not 0 < value <= 1:
        raise ComponentError(f"{where} must be in (0, 1], got {value}")


class Chain:
    """Filters applied to the logits in order, then one draw from the softmax (argmax when the
    temperature is 0). steps: (filter name, value) pairs, names from FILTERS; `sampler` and
    `options` (filter name -> option name) only word the errors."""

    def __init__(
        self,
        steps: list[tuple[str, float]],
        sampler: str = "chain",
        options: dict[str, str] | None = None,
    ) -> None:
        for name, value in steps:
            _check(name, value, f"sampler {sampler!r} option {(options or {}).get(name, name)}")
        self.steps = [(FILTERS[name], value) for name, value in steps]
        self.greedy = any(name == "temperature" and value == 0 for name, value in steps)

    def filter(self, logits: torch.Tensor) -> torch.Tensor:
        """The filtered logits (B, V) in float32; the input is left alone."""
        logits = logits.float()
        for apply, value in self.steps:
            logits = apply(logits, value)
        return logits

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution (B, V) the draw uses; each row sums to one."""
        return torch.softmax(self.filter(logits), dim=-1)

    def __call__(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        filtered = self.filter(logits)
        if self.greedy:
            return filtered.argmax(dim=-1, keepdim=True)
        return torch.multinomial(torch.softmax(filtered, dim=-1), 1, generator=generator)


class Greedy(Chain):
    """Always the most likely token (argmax)."""

    def __init__(self) -> None:
        super().__init__([("temperature", 0.0)])

    def __call__(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return logits.argmax(dim=-1, keepdim=True)


def temperature_sampler(*, temperature: float = 1.0) -> Chain:
    """Divide logits by temperature and draw from the softmax; 0 is greedy."""
    return Chain([("temperature", temperature)], "temperature")


def top_k_sampler(*, k: int = 50, temperature: float = 1.0) -> Chain:
    """Keep the k most likely tokens, then temperature, then draw (the book's order)."""
    return Chain([("top_k", k), ("temperature", temperature)], "top-k", {"top_k": "k"})


def top_p_sampler(*, p: float = 0.9, temperature: float = 1.0) -> Chain:
    """Temperature, then keep the smallest most-likely set with mass >= p, then draw (nucleus)."""
    return Chain([("temperature", temperature), ("top_p", p)], "top-p", {"top_p": "p"})


def min_p_sampler(*, p: float = 0.1, temperature: float = 1.0) -> Chain:
    """Temperature, then keep tokens with probability >= p x the largest, then draw."""
    return Chain([("temperature", temperature), ("min_p", p)], "min-p", {"min_p": "p"})


def typical_sampler(*, p: float = 0.9, temperature: float = 1.0) -> Chain:
    """Temperature, then the locally typical set of mass p (Meister et al. 2023), then draw."""
    return Chain([("temperature", temperature), ("typical_p", p)], "typical", {"typical_p": "p"})


def chain_sampler(
    *,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    typical_p: float | None = None,
    temperature: float = 1.0,
    order: list[str] = DEFAULT_ORDER,  # read, never mutated
) -> Chain:
    """Any of top_k, temperature, top_p, min_p, typical_p, applied in `order`, then a draw."""
    values = {
        "top_k": top_k,
        "temperature": temperature,
        "top_p": top_p,
        "min_p": min_p,
        "typical_p": typical_p,
    }
    for name in order:
        if name not in FILTERS:
            raise ComponentError(
                f"sampler 'chain': unknown filter {name!r} in order; use {', '.join(FILTERS)}"
            )
    if len(set(order)) != len(order):
        dup = next(n for n in order if order.count(n) > 1)
        raise ComponentError(f"sampler 'chain': filter {dup!r} appears twice in order")
    for name, value in values.items():
        _check(name, value, f"sampler 'chain' option {name}")
        unused = value is None or (name == "temperature" and value == 1)
        if not unused and name not in order:
            raise ComponentError(
                f"sampler 'chain': option {name} is set but {name!r} is not in order {order}"
            )
    return Chain([(name, values[name]) for name in order if values[name] is not None])


@hookimpl
def register_components(register) -> None:
    register("sampler", "greedy", Greedy)
    register("sampler", "temperature", temperature_sampler)
    register("sampler", "top-k", top_k_sampler)
    register("sampler", "top-p", top_p_sampler)
    register("sampler", "min-p", min_p_sampler)
    register("sampler", "typical", typical_sampler)
    register("sampler", "chain", chain_sampler)

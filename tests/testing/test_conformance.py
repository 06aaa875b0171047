"""The conformance suite: every registered component passes its kind's checks, and components
broken on purpose (each in one way) fail them with a message naming the component, the check
and the input."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from plugins.attention import SDPAttention
from toolkit import hookimpl
from toolkit.api.manager import Plugins
from toolkit.api.registry import KINDS
from toolkit.sweep.jobs import run_job
from toolkit.testing import (
    CHECKS,
    ConformanceError,
    check_all,
    check_component,
    conformance_cases,
)

PLUGINS = Plugins(autoload=False)
CASES = conformance_cases(PLUGINS)


@pytest.mark.parametrize(("kind", "name"), CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_registered_component_conforms(kind: str, name: str) -> None:
    check_component(kind, name, PLUGINS, max_examples=20)


def test_every_kind_has_checks_and_every_buildable_component_is_a_case() -> None:
    assert set(KINDS) <= set(CHECKS)
    registered = {(c.kind, c.name) for c in PLUGINS.registry}
    # These corpora need a `path` (or `train`) option: cases only when it is given.
    needs = {"files": "path", "jsonl": "path", "parquet": "path", "hf": "path", "tokens": "train"}
    assert set(CASES) == registered - {("corpus", name) for name in needs}
    with_path = conformance_cases(PLUGINS, {("corpus", n): {o: "x"} for n, o in needs.items()})
    assert set(with_path) == registered
    mine = plugins_with("sampler", "mine", out_of_range_sampler)
    assert conformance_cases(mine, plugin="throwaway") == [("sampler", "mine")]


def test_a_component_with_required_options_is_checked_with_them(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("some text\n", encoding="utf-8")
    check_component("corpus", "files", PLUGINS, options={"path": str(tmp_path)})


def test_the_global_rng_and_threads_are_left_alone() -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_component("normalization", "rmsnorm", PLUGINS, max_examples=2)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


# -- throwaway components, each right or wrong in one way ---------------------------------------
class SingleHead(nn.Module):
    """One attention head with an output projection; `mask` decides whether it is causal."""

    def __init__(self, config, *, mask: bool = True) -> None:
        super().__init__()
        self.qkv = nn.Linear(config.emb_dim, 3 * config.emb_dim, bias=config.bias)
        self.out = nn.Linear(config.emb_dim, config.emb_dim, bias=config.bias)
        self.masked = mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.out(F.scaled_dot_product_attention(q, k, v, is_causal=self.masked))


def bidirectional(config) -> SingleHead:
    return SingleHead(config, mask=False)


class WrongShape(SingleHead):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[:, :, :-1]


class DropoutInEval(SingleHead):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(super().forward(x), p=0.1, training=True)


class Float32Always(SingleHead):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).float()


class DeadParameter(SingleHead):
    def __init__(self, config) -> None:
        super().__init__(config)
        self.unused = nn.Parameter(torch.zeros(3))


class BiasedHead(SingleHead):
    """Keeps its output projection's bias whatever model.bias says."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.out = nn.Linear(config.emb_dim, config.emb_dim)


def biased_feed_forward(config) -> nn.Sequential:
    """Linear, GELU, Linear, biased whatever model.bias says (as nn.Linear is by default)."""
    d = config.emb_dim
    return nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))


class StubbornShift(nn.Module):
    """The book's LayerNorm with a `bias` option that keeps the shift anyway."""

    def __init__(self, dim: int, *, bias: bool = True) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift)


def ignored_bias_option(dim: int, *, bias: bool = True) -> nn.LayerNorm:
    return nn.LayerNorm(dim)


def layernorm_with_bias_option(dim: int, *, bias: bool = True) -> nn.LayerNorm:
    return nn.LayerNorm(dim, bias=bias)


def plain_layernorm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim)


class MixingNorm(nn.Module):
    """LayerNorm plus the mean over positions: one position's output depends on the others."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) + x.mean(dim=1, keepdim=True)


def out_of_range_sampler():
    def sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.full((logits.shape[0], 1), logits.shape[-1], dtype=torch.int64)

    return sample


class LossyTokenizer:
    """UTF-8 bytes, but drops every byte outside ASCII."""

    name, vocab_size, eot_id, fingerprint = "lossy", 257, 256, "lossy-1"

    def encode(self, text: str) -> list[int]:
        return [b for b in text.encode("utf-8") if b < 128]

    def decode(self, ids) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def token_byte_lengths(self) -> np.ndarray:
        lengths = np.ones(self.vocab_size, dtype=np.int64)
        lengths[self.eot_id] = 0
        return lengths


class StartlessRotation(nn.Module):
    """Scales queries and keys by cos(position) but ignores `start`: wrong past position 0."""

    def __init__(self, config) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, start: int = 0):
        factor = torch.cos(torch.arange(q.shape[-2], dtype=q.dtype))[:, None]
        return q * factor, k * factor

    def score_bias(self, t_q: int, t_k: int, start: int = 0) -> None:
        return None


def plugins_with(kind: str, name: str, factory, **facts) -> Plugins:
    class Throwaway:
        @hookimpl
        def register_components(self, register):
            register(kind, name, factory, **facts)

    plugins = Plugins(autoload=False)
    plugins.add(Throwaway(), name="throwaway")
    return plugins


BROKEN = {
    "peeks at the future": ("attention", bidirectional, {"causal": True}, "causal"),
    "causal, declared not": ("attention", SingleHead, {"causal": False}, "causal"),
    "wrong output shape": ("attention", WrongShape, {"causal": True}, "output shape and dtype"),
    "parameter without gradient": ("attention", DeadParameter, {"causal": True}, "gradients"),
    "dropout in eval mode": ("attention", DropoutInEval, {"causal": True}, "eval determinism"),
    "float32 from bfloat16": ("attention", Float32Always, {"causal": True}, "bfloat16"),
    "norm mixing positions": ("normalization", MixingNorm, {}, "position independence"),
    "attention ignoring model.bias": ("attention", BiasedHead, {"causal": True}, "model.bias"),
    "feed-forward ignoring model.bias": ("activation", biased_feed_forward, {}, "model.bias"),
    "norm keeping a shift named shift": ("normalization", StubbornShift, {}, "model.bias"),
    "norm keeping a bias": ("normalization", ignored_bias_option, {}, "model.bias"),
    "ids out of range": ("sampler", out_of_range_sampler, {}, "ids in range"),
    "lossy round trip": ("tokenizer", LossyTokenizer, {}, "round trip"),
    "a table declared any_length": (
        "positional",
        lambda config: PLUGINS.registry.get("positional", "learned").build(config),
        {"any_length": True},
        "any_length",
    ),
    "rotation ignoring start": (
        "positional",
        StartlessRotation,
        {"inside_attention": True},
        "start offset",
    ),
}


@pytest.mark.parametrize("flaw", list(BROKEN))
@pytest.mark.slow
def test_a_broken_component_fails_the_check_it_breaks(flaw: str) -> None:
    kind, factory, facts, check = BROKEN[flaw]
    plugins = plugins_with(kind, "broken", factory, **facts)
    with pytest.raises(ConformanceError) as info:
        check_component(kind, "broken", plugins)
    message = str(info.value)
    assert message.startswith(f"{kind} 'broken' (plugin 'throwaway') fails check '{check}': ")
    assert "; input: " in message


def test_failures_name_the_culprit_and_the_input() -> None:
    plugins = plugins_with("attention", "dead", DeadParameter, causal=True)
    with pytest.raises(ConformanceError, match=r"parameter 'unused' gets no gradient; input: emb"):
        check_component("attention", "dead", plugins)
    plugins = plugins_with("sampler", "wild", out_of_range_sampler)
    with pytest.raises(
        ConformanceError, match=r"outside the range \[0, 1\); input: logits \(1, 1\)"
    ):
        check_component("sampler", "wild", plugins)
    plugins = plugins_with("tokenizer", "lossy", LossyTokenizer)
    with pytest.raises(ConformanceError, match=r"decode\(encode\(text\)\) gave .*; input: text "):
        check_component("tokenizer", "lossy", plugins)


def test_a_component_ignoring_model_bias_is_told_how_to_honour_it() -> None:
    plugins = plugins_with("attention", "biased", BiasedHead, causal=True)
    with pytest.raises(ConformanceError) as info:
        check_component("attention", "biased", plugins)
    message = str(info.value)
    assert message.startswith(
        "attention 'biased' (plugin 'throwaway') fails check 'model.bias': built with "
        "bias=False it still has parameter 'out.bias', so it does not honour model.bias: read "
        "config.bias and build every bias with it: nn.Linear(..., bias=config.bias); input: "
    )
    assert message.endswith(" bias=False") and "\n" not in message
    plugins = plugins_with("normalization", "stubborn", StubbornShift)
    with pytest.raises(ConformanceError, match=r"bias=False leaves as many parameters as"):
        check_component("normalization", "stubborn", plugins)


@pytest.mark.parametrize(
    ("kind", "factory", "facts"),
    [
        ("attention", bidirectional, {"causal": False}),
        ("attention", SingleHead, {"causal": True}),
        ("normalization", layernorm_with_bias_option, {}),
        ("normalization", plain_layernorm, {}),  # no `bias` option: model.bias cannot reach it
    ],
    ids=["non-causal", "causal", "norm-with-bias-option", "norm-without"],
)
def test_honest_third_party_components_pass(kind: str, factory, facts) -> None:
    check_component(kind, "honest", plugins_with(kind, "honest", factory, **facts))


def test_check_all_lists_every_failing_component_and_only_those() -> None:
    class Throwaway:
        @hookimpl
        def register_components(self, register):
            register("normalization", "mixing", MixingNorm)
            register("normalization", "plain", lambda dim: nn.LayerNorm(dim))  # conforms
            register("attention", "bidirectional", bidirectional, causal=True)

    plugins = Plugins(autoload=False)
    plugins.add(Throwaway(), name="throwaway")
    with pytest.raises(ConformanceError) as info:
        check_all(plugins, max_examples=2, plugin="throwaway")  # not the built-ins
    first, *rest = str(info.value).splitlines()
    assert first == "2 component(s) fail:"
    assert sorted(line.split(" (plugin 'throwaway')")[0] for line in rest) == [
        "attention 'bidirectional'",
        "normalization 'mixing'",
    ]
    with pytest.raises(ValueError, match="no plugin named 'throwaways' registered a component; "):
        check_all(plugins, plugin="throwaways")  # misspelt: an error, not a pass over nothing


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("sliding-window", {"window": 3}),
        ("gqa", {"n_kv_heads": 1}),
        ("multihead", {"qk_norm": True}),
    ],
)
@pytest.mark.slow
def test_non_default_options_conform(name: str, options: dict) -> None:
    # The defaults do not exercise everything: a window of 64 is wider than any drawn context.
    check_component("attention", name, PLUGINS, options=options)


@pytest.mark.slow
def test_a_kv_cache_that_forgets_earlier_chunks_fails() -> None:
    class Forgetful(SDPAttention):
        def forward_cached(self, x, cache, start):
            return self.forward(x)  # ignores what came before: wrong for every chunk but the first

    class Plugin:
        @hookimpl
        def register_components(self, register):
            register(
                "attention",
                "forgetful",
                Forgetful,
                causal=True,
                positional_inside=True,
                kv_cache=True,
            )

    plugins = Plugins(autoload=False)
    plugins.add(Plugin(), name="forgetful-plugin")
    with pytest.raises(ConformanceError, match="fails check 'kv_cache'"):
        check_component("attention", "forgetful", plugins)


class _SeedShiftingExecutor:
    """Trains every run with the next seed: a subtly wrong executor."""

    def prepare(self, jobs, plugins):
        pass

    def execute(self, jobs, sweep):
        for job in jobs:
            shifted = replace(job, run=replace(job.run, seed=job.run.seed + 1))
            yield job, run_job(shifted, sweep)


def test_an_executor_that_trains_something_else_fails_same_losses() -> None:
    broken = plugins_with("executor", "shifty", lambda: _SeedShiftingExecutor())
    with pytest.raises(ConformanceError, match=r"executor 'shifty' .* fails check 'same losses'"):
        check_component("executor", "shifty", broken)


# -- a factory that raises: its own error and line come first ----------------------------------
class NeedsPositiveAlpha(nn.Module):
    def __init__(self, config, *, alpha: float = -1.0) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError("alpha must be positive")  # raises: line A


def negative_width(config):
    return nn.Linear(config.emb_dim, -1)  # raises inside torch: line B


def sampler_needing_alpha(*, alpha: float = -1.0):
    raise ValueError("alpha must be positive")  # raises: line C


def init_needing_alpha(model, config, *, alpha: float = -1.0):
    raise ValueError("alpha must be positive")  # raises: line D


def line_of(mark: str) -> str:
    """'test_conformance.py:123': the line of this file holding `mark`."""
    lines = Path(__file__).read_text(encoding="utf-8").splitlines()
    (number,) = [i + 1 for i, line in enumerate(lines) if line.endswith(mark)]
    return f"test_conformance.py:{number}"


@pytest.mark.parametrize(
    ("kind", "factory", "error", "mark"),
    [
        ("activation", NeedsPositiveAlpha, "ValueError: alpha must be positive", "line A"),
        # hypothesis tries some 450 configs before it gives up: seconds each
        pytest.param(
            "positional", negative_width, "RuntimeError: ", "line B", marks=pytest.mark.slow
        ),
        pytest.param(
            "init",
            init_needing_alpha,
            "ValueError: alpha must be positive",
            "line D",
            marks=pytest.mark.slow,
        ),
    ],
    ids=["raises", "raises-in-torch", "init-raises"],
)
@pytest.mark.slow
def test_a_factory_rejecting_every_config_shows_its_first_error_and_line(
    kind: str, factory, error: str, mark: str
) -> None:
    plugins = plugins_with(kind, "picky", factory)
    with pytest.raises(ConformanceError) as info:
        check_component(kind, "picky", plugins, max_examples=3)
    message = str(info.value)
    prefix = f"{kind} 'picky' (plugin 'throwaway') fails check 'build': raised {error}"
    assert message.startswith(prefix), message
    at = message.index(f"{line_of(mark)} (the first of ")
    assert message[at - 1] in "/ " and message.endswith(
        "configurations tried; it rejected every one)"
    )
    assert "\n" not in message and "filter" not in message
    # Chained to the plugin's exception, so its traceback, not hypothesis' advice, is printed.
    assert isinstance(info.value.__cause__, ValueError | RuntimeError)
    assert info.value.__suppress_context__


def test_a_factory_that_raises_outside_the_model_kinds_shows_its_error_and_line() -> None:
    plugins = plugins_with("sampler", "picky", sampler_needing_alpha)
    with pytest.raises(ConformanceError) as info:
        check_component("sampler", "picky", plugins)
    message = str(info.value)
    assert message.startswith(
        "sampler 'picky' (plugin 'throwaway') fails check 'build': raised ValueError: alpha must "
        "be positive at "
    )
    assert message.endswith(line_of("line C"))

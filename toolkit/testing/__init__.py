"""Conformance checks: one call tells whether a registered component honours its kind's contract.

`check_component(kind, name, plugins)` builds the component the way the engine does and lets
hypothesis draw small sizes and inputs (deterministically: the same examples on every run;
emb_dim/n_heads 16/2, 16/4, 24/3 or 32/4, context 1..16, batch 1..3, dropout 0 or 0.1). A failure
raises `ConformanceError` (an AssertionError) naming the component, the check and the smallest
input hypothesis found that shows it. A factory that raises is reported with its exception and
the plugin's line that raised it, first; when it rejects every config drawn, that is the first
one's error. What each kind must do (`toolkit.api.registry.KINDS`):

- attention: (B, T, emb_dim) float32 out for T = 1, a drawn T and the context length; the same
  output twice in eval mode; `causal` honoured both ways (True: changing tokens after t never
  moves outputs <= t; False: some such change does); batch elements independent; a gradient for
  every parameter; finite bfloat16 out of bfloat16 in. With `positional_inside`, all of it again
  with each registered inside-attention positional bound. Built from a config with bias=False
  (model.bias = false): no parameter whose name ends in "bias".
- normalization, activation: shape and dtype kept, determinism, every position and batch element
  computed alone, gradients, bfloat16; an activation's last nn.Linear maps to emb_dim. An
  activation built from a config with bias=False, and a norm with a `bias` option built with
  bias=False, have no parameter whose name ends in "bias" (the norm: fewer than with bias=True).
- positional: the same, and forward(x[:, s:], start=s) == forward(x)[:, s:]; an inside-attention
  scheme returns x unchanged, and rotate() / score_bias() have the right shapes and offsets.
- init: tiny models with it, over the registered components: finite parameters and loss, and the
  same parameters from the same seed.
- optimizer: a torch.optim.Optimizer with every trainable parameter of tiny GPTs in exactly one
  group; finite parameters after a step; a least-squares loss reduced; its state through
  state_dict(), torch.save/load and load_state_dict() (under a LambdaLR restored as a resumed run
  restores it) continuing bit for bit.
- schedule: a finite multiplier >= 0 at every step 0 .. total_steps, the same when asked again
  (a pure function), and a rising warm-up when it takes `warmup_steps`.
- sampler: (B, 1) int64 ids in [0, V), logits left alone, the same ids from the same generator
  seed, bfloat16 logits accepted.
- tokenizer (trained first when `needs_training`): ids in [0, vocab_size) and never eot_id,
  decode(encode(text)) == text, token_byte_lengths() adding up to the UTF-8 length; training
  twice gives the same tokenizer, and so does load_state(state()) where it has them.
- corpus: documents() yields (name, text) string pairs, some text, the same each time.

The toolkit's own test suite runs these checks over every registered component, so a new built-in
is covered as soon as it is registered. To check your plugin, put this in a pytest file
(it needs hypothesis: `pip install hypothesis`):

    from toolkit.api.manager import Plugins
    from toolkit.testing import check_component

    def test_my_attention_conforms():
        check_component("attention", "my-attention", Plugins(["my_pkg.components"]))

Or everything your plugin registers, with `conformance_cases(plugins, plugin="my_pkg.components")`
in `@pytest.mark.parametrize(("kind", "name"), ...)`. A component whose
factory has required options (the `files` corpus needs `path`) is checked only when you pass them:
`check_component("corpus", "files", plugins, options={"path": "notes/"})`.

Not here: checks of the training loop, the data pipeline or quality (loss after training); the
checks say whether a component fits the engine, not whether it is a good idea.

The checks live one module per family of kinds, each saying what it checks and what it leaves
out: core.py (what they share: the case, the drawn inputs, the hypothesis settings, common
assertions), attention.py, modules.py (normalization, activation, positional, init),
optimization.py (optimizer, schedule), sampling.py, text.py (tokenizer, corpus) and
executor.py. `CHECKS` below maps a kind to its check.
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401  (checked first, so every module of the kit gets this message)
except ImportError as exc:  # a dev dependency: only plugin authors' tests need this module
    raise ImportError(
        "toolkit.testing needs hypothesis: pip install hypothesis (or gpt-ablate[dev])"
    ) from exc

from collections.abc import Callable
from typing import Any

import torch
from hypothesis.errors import Flaky, Unsatisfiable

from toolkit.api.manager import Plugins, load_plugins
from toolkit.testing.attention import check_attention
from toolkit.testing.core import (
    HEAD_SHAPES,
    MAX_CONTEXT,
    TOL,
    Case,
    ConformanceError,
    Draw,
    draws,
    raised,
    required,
    unwrapped,
)
from toolkit.testing.executor import check_executor
from toolkit.testing.modules import (
    check_init,
    check_positional,
    check_positionwise,
)
from toolkit.testing.optimization import check_optimizer, check_schedule
from toolkit.testing.sampling import check_sampler
from toolkit.testing.text import TRAINING_TEXT, check_corpus, check_tokenizer

CHECKS: dict[str, Callable[[Case, int], None]] = {
    "attention": check_attention,
    "normalization": check_positionwise,
    "activation": check_positionwise,
    "positional": check_positional,
    "init": check_init,
    "optimizer": check_optimizer,
    "schedule": check_schedule,
    "sampler": check_sampler,
    "tokenizer": check_tokenizer,
    "corpus": check_corpus,
    "executor": check_executor,
}


# -- the public API ------------------------------------------------------------------------------
def check_component(
    kind: str,
    name: str,
    plugins: Plugins | None = None,
    *,
    max_examples: int = 10,
    options: dict[str, Any] | None = None,
) -> None:
    """Check one registered component against its kind's contract; raise ConformanceError
    naming the check and the input when it breaks it. `options` are the component's options
    (needed when it has required ones). The global torch RNG is left as it was."""
    plugins = plugins or load_plugins()
    component = plugins.registry.get(kind, name)
    if kind not in CHECKS:
        raise ConformanceError(
            f"no conformance checks for kind {kind!r} yet: add them to a module of "
            "toolkit/testing/ and to CHECKS in toolkit/testing/__init__.py"
        )
    case = Case(component, component.check_options(dict(options or {})), plugins)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster, and immune to busy cores
    try:
        with torch.random.fork_rng(devices=[]):
            CHECKS[kind](case, max_examples)
    except Unsatisfiable as exc:
        case.inputs = ""
        first = case.first_rejection
        if first is None:
            raise case.error("build", "it rejected every configuration tried") from exc
        # The component's own error first, chained to it (not to hypothesis' advice on filters).
        tried = f"the first of {case.rejections} configurations tried; it rejected every one"
        detail = f"{raised(first)} ({tried})"
        raise case.error("build", detail) from unwrapped(first)
    except Flaky as exc:  # failed once, passed on the replay of the same input
        found = [e for e in getattr(exc, "exceptions", ()) if isinstance(e, ConformanceError)]
        if not found:
            raise
        detail = "; it is not reproducible: the same input gave another result when repeated"
        raise ConformanceError(str(found[0]) + detail) from exc
    finally:
        torch.set_num_threads(threads)


def conformance_cases(
    plugins: Plugins | None = None,
    options: dict[tuple[str, str], dict[str, Any]] | None = None,
    *,
    plugin: str | None = None,
) -> list[tuple[str, str]]:
    """(kind, name) of every registered component the checks can build (only those the plugin
    named `plugin` registered, when given): those with required options only when `options`,
    keyed by (kind, name), gives them. A `plugin` that registered nothing is a ValueError (a
    misspelt name would otherwise check nothing and pass)."""
    plugins = plugins or load_plugins()
    options = options or {}
    registering = sorted({c.plugin for c in plugins.registry})
    if plugin is not None and plugin not in registering:
        raise ValueError(
            f"no plugin named {plugin!r} registered a component; plugins that did: "
            f"{', '.join(registering)}"
        )
    return [
        (c.kind, c.name)
        for c in plugins.registry
        if (not required(c) or (c.kind, c.name) in options) and plugin in (None, c.plugin)
    ]


def check_all(
    plugins: Plugins | None = None,
    *,
    max_examples: int = 10,
    options: dict[tuple[str, str], dict[str, Any]] | None = None,
    plugin: str | None = None,
) -> None:
    """check_component for every case of conformance_cases() (those of the plugin named
    `plugin`, when given); one ConformanceError lists all the components that fail."""
    plugins = plugins or load_plugins()
    options = options or {}
    failures = []
    for kind, name in conformance_cases(plugins, options, plugin=plugin):
        try:
            check_component(
                kind, name, plugins, max_examples=max_examples, options=options.get((kind, name))
            )
        except ConformanceError as exc:
            failures.append(str(exc))
    if failures:
        raise ConformanceError(f"{len(failures)} component(s) fail:\n" + "\n".join(failures))


__all__ = [
    "CHECKS",
    "HEAD_SHAPES",
    "MAX_CONTEXT",
    "TOL",
    "TRAINING_TEXT",
    "ConformanceError",
    "Draw",
    "check_all",
    "check_component",
    "conformance_cases",
    "draws",
]

"""The component registry: kind -> name -> factory + metadata.

Plugins fill it through the `register_components(register)` hook; the model builder, data
pipeline and sampler look components up here by the names a spec gives. The registry knows
*kinds* of component and what each kind must provide, never a concrete component.

A component's options are the keyword-only parameters of its factory, with their defaults and
annotations: `def make_rmsnorm(dim, *, eps: float = 1e-5)` takes one option, `eps`, a float.
Registering a factory that has no `*` but positional parameters beyond its kind's contract
(`def make_rmsnorm(dim, eps=1e-5)`) warns: they are not options.
It does not build anything or validate shapes; that is toolkit.model's and toolkit.testing's job.

`kinds_markdown()` renders KINDS (each kind's call, what it returns, a minimal plugin) for the
README; `python -m toolkit.api.registry --readme README.md` refreshes the README's copy.
"""

from __future__ import annotations

import difflib
import inspect
import os
import sys
import textwrap
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import ComponentError, ToolkitError, one_line

# A component choice, as specs and configs write it: a registered name, or
# {name = "...", option = value, ...}.
Choice = str | dict[str, Any]


def split_choice(choice: Choice) -> tuple[str, dict[str, Any]]:
    """'rmsnorm' -> ('rmsnorm', {});  {'name': 'rmsnorm', 'eps': 1e-6} -> ('rmsnorm', {'eps': 1e-6})."""
    if isinstance(choice, str):
        return choice, {}
    options = dict(choice)
    return options.pop("name"), options


@dataclass(frozen=True)
class Kind:
    """A family of interchangeable components and the contract its members honour."""

    name: str
    args: tuple[str, ...]  # what the engine passes a factory positionally, as "name: type"
    returns: str  # what the factory must return, and what that must do
    example: str  # a whole plugin module registering one minimal component of this kind
    required_facts: tuple[str, ...] = ()

    @property
    def call(self) -> str:
        """'factory(dim: int, **options)': how the engine calls a factory of this kind."""
        return f"factory({', '.join([*self.args, '**options'])})"

    @property
    def contract(self) -> str:
        """How the engine calls a factory and what it must return, in one sentence."""
        return f"{self.call} -> {self.returns}"

    @property
    def arg_names(self) -> tuple[str, ...]:
        """('model', 'config') for init: the names of the positional arguments."""
        return tuple(a.split(":")[0] for a in self.args)


# Each example is a whole plugin module, run by tests/api/test_readme_kinds.py through the
# conformance kit, so what README.md shows (kinds_markdown()) is known to work.
KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind(
            "attention",
            ("config: ModelConfig",),
            "nn.Module mapping x (B, T, emb_dim) to "
            "(B, T, emb_dim). Facts: `causal` (required) says whether position t only sees "
            "positions <= t; `positional_inside=True` says the module has "
            "bind_positional(module) and applies that module's rotate(q, k, start) and "
            "score_bias(t_q, t_k, start) (needed for RoPE and ALiBi); `kv_cache=True` says it "
            "has forward_cached(x, cache: dict, start) for generation: x holds positions "
            "start..start+T-1, the dict (the module's own between calls; start=0 refills it) "
            "keeps its keys and values, and the output equals forward() over all positions, "
            "last T rows",
            '''\
import torch.nn.functional as F
from torch import nn

from toolkit import hookimpl


class OneHeadAttention(nn.Module):
    """Causal attention with a single head as wide as the model"""

    def __init__(self, config, *, bias: bool = False):
        super().__init__()
        self.qkv = nn.Linear(config.emb_dim, 3 * config.emb_dim, bias=bias)
        self.out = nn.Linear(config.emb_dim, config.emb_dim)

    def forward(self, x):  # (B, T, emb_dim)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.out(F.scaled_dot_product_attention(q, k, v, is_causal=True))


@hookimpl
def register_components(register):
    register("attention", "one-head", OneHeadAttention, causal=True)
''',
            required_facts=("causal",),
        ),
        Kind(
            "normalization",
            ("dim: int",),
            "nn.Module normalizing the last dimension of size dim",
            '''\
from torch import nn

from toolkit import hookimpl


def my_layernorm(dim, *, eps: float = 1e-5):
    """torch's LayerNorm over the last dimension"""
    return nn.LayerNorm(dim, eps=eps)


@hookimpl
def register_components(register):
    register("normalization", "my-layernorm", my_layernorm)
''',
        ),
        Kind(
            "activation",
            ("config: ModelConfig",),
            "nn.Module, the position-wise "
            "feed-forward block mapping (B, T, emb_dim) to (B, T, emb_dim); its last nn.Linear "
            "is the residual output projection (the gpt2 init scales it) unless it defines "
            "residual_projections() returning the Linear layers that are",
            '''\
from torch import nn

from toolkit import hookimpl


def relu_feed_forward(config, *, hidden_mult: int = 4):
    """Linear, ReLU, Linear: the whole feed-forward block, not just its activation"""
    hidden = hidden_mult * config.emb_dim
    return nn.Sequential(
        nn.Linear(config.emb_dim, hidden), nn.ReLU(), nn.Linear(hidden, config.emb_dim)
    )


@hookimpl
def register_components(register):
    register("activation", "my-relu", relu_feed_forward)
''',
        ),
        Kind(
            "positional",
            ("config: ModelConfig",),
            "nn.Module with forward(x, start=0) adding "
            "position information to token embeddings x (B, T, emb_dim) for positions start.. "
            "start+T-1; its parameters count as embedding parameters. With the fact "
            "`inside_attention=True` forward returns x unchanged and the module provides "
            "rotate(q, k, start=0) -> (q, k) on (B, heads, T, head_dim) tensors and "
            "score_bias(t_q, t_k, start=0) -> (heads, t_q, t_k) tensor or None",
            '''\
import torch
from torch import nn

from toolkit import hookimpl


class LearnedPositions(nn.Module):
    """One learned vector per position, added to the token embeddings"""

    def __init__(self, config):
        super().__init__()
        self.table = nn.Embedding(config.context_length, config.emb_dim)

    def forward(self, x, start=0):  # x: (B, T, emb_dim), positions start..start+T-1
        positions = torch.arange(start, start + x.shape[1], device=x.device)
        return x + self.table(positions)


@hookimpl
def register_components(register):
    register("positional", "my-learned", LearnedPositions)
''',
        ),
        Kind(
            "init",
            ("model: nn.Module", "config: ModelConfig"),
            "None, initialising the "
            "freshly built model's parameters in place (under the run's seed)",
            '''\
from torch import nn

from toolkit import hookimpl


def normal_init(model, config, *, std: float = 0.02):
    """Every matrix and embedding from N(0, std); vectors (biases, norms) as built"""
    for p in model.parameters():
        if p.dim() >= 2:
            nn.init.normal_(p, std=std)


@hookimpl
def register_components(register):
    register("init", "my-normal", normal_init)
''',
        ),
        Kind(
            "sampler",
            (),
            "callable(logits (B, V), generator) -> next token ids (B, 1), "
            "never changing the logits; optionally probs(logits) -> the (B, V) distribution it "
            "draws from",
            '''\
import torch

from toolkit import hookimpl


def my_temperature(*, temperature: float = 1.0):
    """Sample from softmax(logits / temperature)"""

    def sample(logits, generator):  # (B, V) -> (B, 1)
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator)

    return sample


@hookimpl
def register_components(register):
    register("sampler", "my-temperature", my_temperature)
''',
        ),
        Kind(
            "tokenizer",
            (),
            "Tokenizer with name, vocab_size, eot_id, encode(text), "
            "decode(ids), token_byte_lengths() and fingerprint. One learned from data sets "
            "needs_training = True and provides train(texts), training_config, state() and "
            "load_state(state); the data pipeline trains it on the training split only. "
            "newline_splits = True lets the pipeline cut long documents after a newline "
            "between two non-space characters and encode the parts in parallel (say it "
            "only if such a cut never changes the ids)",
            '''\
import numpy as np

from toolkit import hookimpl


class MyBytes:
    """UTF-8 bytes, plus one end-of-text id"""

    name, vocab_size, eot_id, fingerprint = "my-bytes", 257, 256, "my-bytes-v1"

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def token_byte_lengths(self):  # bytes each id stands for
        return np.array([1] * 256 + [0])


@hookimpl
def register_components(register):
    register("tokenizer", "my-bytes", MyBytes)
''',
        ),
        Kind(
            "corpus",
            (),
            "Corpus with documents() yielding (name, text) pairs and a description; "
            "or, for token ids already made, pretokenized = True with train, val (paths or "
            "globs of uint16 shards) and layout, as the built-in `tokens` corpus",
            '''\
from toolkit import hookimpl


class Repeated:
    """One text, repeated as `copies` documents"""

    def __init__(self, *, text: str = "Hello, world.", copies: int = 3):
        self.description = f"{copies} copies of {text!r}"
        self.texts = [text] * copies

    def documents(self):
        for i, text in enumerate(self.texts):
            yield f"copy-{i}", text


@hookimpl
def register_components(register):
    register("corpus", "repeated", Repeated)
''',
        ),
        Kind(
            "executor",
            (),
            "Executor with prepare(jobs, plugins), checking before any "
            "write (raise ToolkitError), and execute(jobs, sweep) yielding (job, summary) once "
            "per toolkit.sweep.jobs.RunJob as runs finish, training each with "
            "toolkit.sweep.jobs.run_job(job) (see toolkit/sweep/jobs.py)",
            '''\
from toolkit import hookimpl
from toolkit.sweep.jobs import run_job


class OneByOne:
    """Every run in this process, one after another"""

    def prepare(self, jobs, plugins):
        pass  # nothing to check before the sweep writes anything

    def execute(self, jobs, sweep):
        for job in jobs:
            yield job, run_job(job, sweep)


@hookimpl
def register_components(register):
    register("executor", "one-by-one", OneByOne)
''',
        ),
    ]
}


@dataclass(frozen=True)
class Option:
    """One keyword-only parameter of a factory: the spec may set it."""

    name: str
    type: Any  # a type, or a typing construct such as `int | None`; Any when not annotated
    default: Any  # inspect.Parameter.empty when the option is required

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    def describe(self) -> str:
        type_name = getattr(self.type, "__name__", None) or str(self.type).replace("typing.", "")
        return f"{self.name}: {type_name}" + ("" if self.required else f" = {self.default!r}")


@dataclass(frozen=True)
class Component:
    """A registered component: what the engine needs to build it and describe it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    description: str
    plugin: str  # the plugin that registered it, for listings and error messages
    options: dict[str, Option] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def build(self, *args: Any, **options: Any) -> Any:
        """Call the factory with the engine's positional arguments and validated options.
        A factory that raises becomes a ComponentError naming the component and its plugin."""
        options = self.check_options(options)
        try:
            return self.factory(*args, **options)
        except ToolkitError:
            raise
        except Exception as exc:
            raise ComponentError(
                f"{self.kind} {self.name!r} (plugin {self.plugin!r}) failed to build: "
                f"{one_line(exc)}"
            ) from exc

    def check_options(self, options: dict[str, Any], where: str = "") -> dict[str, Any]:
        """Return options with defaults filled in; raise ComponentError on unknown or mistyped
        options, naming the allowed ones."""
        where = where or f"{self.kind} {self.name!r}"
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            allowed = ", ".join(o.describe() for o in self.options.values()) or "none"
            hint = suggest(unknown[0], self.options)
            if unknown[0] in extra_positional(self.factory, KINDS[self.kind]):
                hint += (
                    f" ({unknown[0]!r} is a positional parameter of its factory: did you mean "
                    "to make it keyword-only with `*`?)"
                )
            raise ComponentError(
                f"{where} takes no option {unknown[0]!r}{hint}; its options: {allowed}"
            )
        resolved = {}
        for opt in self.options.values():
            if opt.name in options:
                resolved[opt.name] = check_type(
                    options[opt.name], opt.type, f"{where} option {opt.name!r}"
                )
            elif opt.required:
                raise ComponentError(f"{where} needs option {opt.name!r} ({opt.describe()})")
            else:
                resolved[opt.name] = opt.default
        return resolved


def suggest(name: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean 'rmsnorm'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_type(
    value: Any, expected: Any, where: str, error: type[Exception] = ComponentError
) -> Any:
    """Check a TOML value against a simple annotation (bool, int, float, str, list[...], X | None,
    Any). Ints are accepted where floats are expected and converted. Returns the value.
    `check_type(3, float, "lr") -> 3.0`; `check_type("3", int, "n")` raises `error`."""
    _Err = error
    if expected is Any or expected is inspect.Parameter.empty:
        return value
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(expected):
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return check_type(value, arm, where, error)
            except _Err:
                continue
        raise _Err(f"{where} must be {_type_name(expected)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise _Err(f"{where} must be a list, got {value!r}")
        (arm, *_) = typing.get_args(expected) or (Any,)
        items = [check_type(v, arm, where, error) for v in value]
        return tuple(items) if origin is tuple else items
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Err(f"{where} must be a number, got {value!r}")
        return float(value)
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Err(f"{where} must be an integer, got {value!r}")
        return value
    if expected in (bool, str) and not isinstance(value, expected):
        raise _Err(f"{where} must be {_type_name(expected)}, got {value!r}")
    return value


def _type_name(t: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if t in names:
        return names[t]
    args = typing.get_args(t)
    if args:
        return " or ".join("none" if a is type(None) else _type_name(a) for a in args)
    return getattr(t, "__name__", str(t))


def options_of(factory: Callable[..., Any]) -> dict[str, Option]:
    """The keyword-only parameters of a factory (or a class's __init__) as options."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: fall back to no type checking
        hints = {}
    params = inspect.signature(factory).parameters.values()
    return {
        p.name: Option(p.name, hints.get(p.name, Any), p.default)
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def extra_positional(factory: Callable[..., Any], kind: Kind) -> list[str]:
    """The factory's positional parameters beyond those the kind's contract passes: the engine
    never fills them and a spec cannot set them. `def ff(config, alpha=1.0)` -> ['alpha']."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: nothing to say
        return []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in positional][len(kind.args) :]


_API_DIR = os.path.dirname(__file__) + os.sep  # toolkit/api/, as code objects name its files


def _warn_from_plugin(message: str) -> None:
    """A UserWarning attributed to the first caller outside toolkit/api: the plugin's
    register(...) line when it comes through Plugins."""
    level, frame = 1, inspect.currentframe()
    while frame is not None and frame.f_code.co_filename.startswith(_API_DIR):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, UserWarning, stacklevel=level)


class Registry:
    """kind -> name -> Component. Filled once when plugins load; read when models are built."""

    def __init__(self) -> None:
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}

    def register(
        self,
        kind: str,
        name: str,
        factory: Callable[..., Any],
        *,
        plugin: str,
        description: str | None = None,
        **facts: Any,
    ) -> Component:
        if kind not in KINDS:
            raise ComponentError(
                f"plugin {plugin!r} registers {name!r} under unknown kind {kind!r}{suggest(kind, KINDS)}; "
                f"kinds: {', '.join(KINDS)}"
            )
        if not isinstance(name, str) or not name or name != name.strip():
            raise ComponentError(
                f"plugin {plugin!r} registers a {kind} with an invalid name {name!r}"
            )
        if not callable(factory):
            raise ComponentError(
                f"plugin {plugin!r} registers {kind} {name!r} with a factory that is not callable"
            )
        existing = self._components[kind].get(name)
        if existing is not None:
            raise ComponentError(
                f"{kind} {name!r} is registered twice: by plugin {existing.plugin!r} and by plugin "
                f"{plugin!r}; rename one of them"
            )
        missing = [f for f in KINDS[kind].required_facts if f not in facts]
        if missing:
            raise ComponentError(
                f"plugin {plugin!r} registers {kind} {name!r} without {missing[0]!r}; "
                f"pass it to register(), e.g. register({kind!r}, {name!r}, factory, {missing[0]}=True)"
            )
        options = options_of(factory)
        extra = extra_positional(factory, KINDS[kind])
        if extra:
            passed = ", ".join(KINDS[kind].arg_names) or "no positional arguments"
            names = ", ".join(repr(p) for p in extra)
            _warn_from_plugin(
                f"plugin {plugin!r} registers {kind} {name!r} with positional parameter(s) "
                f"{names} beyond what the engine passes ({passed}), so a spec cannot set them; "
                f"did you mean to make them keyword-only with `*`, as in "
                f"factory({', '.join([*KINDS[kind].arg_names, '*', extra[0]])}=...)?"
            )
        doc = description or (inspect.getdoc(factory) or "").split("\n", 1)[0] or "(no description)"
        doc = doc.rstrip(".")  # listings read as one consistent column
        component = Component(kind, name, factory, doc, plugin, options, dict(facts))
        self._components[kind][name] = component
        return component

    def get(self, kind: str, name: str) -> Component:
        if kind not in KINDS:
            raise ComponentError(
                f"unknown component kind {kind!r}{suggest(kind, KINDS)}; kinds: {', '.join(KINDS)}"
            )
        try:
            return self._components[kind][name]
        except (KeyError, TypeError):
            choices = ", ".join(sorted(self._components[kind])) or "none registered"
            raise ComponentError(
                f"unknown {kind} {name!r}{suggest(str(name), self._components[kind])}; choose one of: {choices}"
            ) from None

    def build(self, kind: str, choice: Choice, *args: Any) -> Any:
        """The component a choice names, built with the engine's positional arguments:
        `registry.build("normalization", {"name": "rmsnorm", "eps": 1e-6}, 64)`."""
        name, options = split_choice(choice)
        return self.get(kind, name).build(*args, **options)

    def names(self, kind: str) -> list[str]:
        return sorted(self._components[kind])

    def __iter__(self) -> Iterator[Component]:
        for kind in KINDS:
            yield from (self._components[kind][n] for n in sorted(self._components[kind]))

    def __contains__(self, kind_name: tuple[str, str]) -> bool:
        kind, name = kind_name
        return name in self._components.get(kind, {})


# -- the kinds in README.md ----------------------------------------------------------------------
README_START = "<!-- kinds:start: generated from KINDS (toolkit/api/registry.py) by `python -m toolkit.api.registry --readme` -->"
README_END = "<!-- kinds:end -->"


def kinds_markdown() -> str:
    """Every kind as Markdown: what the engine calls its factory with, what it must return,
    and a whole plugin module registering a minimal one."""
    parts = []
    for kind in KINDS.values():
        text = f"**{kind.name}**: `{kind.call}` returns {kind.returns}."
        parts.append(textwrap.fill(text, 100, break_long_words=False, break_on_hyphens=False))
        parts.append(f"```python\n{kind.example.strip()}\n```")
    return "\n\n".join(parts) + "\n"


def with_kinds(readme: str) -> str:
    """The README text with its block between README_START and README_END (markers included)
    replaced by kinds_markdown(); ValueError when it has no such block."""
    start, end = readme.find("<!-- kinds:start"), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"no {README_START!r} ... {README_END!r} block to fill")
    block = f"{README_START}\n\n{kinds_markdown()}\n{README_END}"
    return readme[:start] + block + readme[end + len(README_END) :]


def _main(argv: list[str]) -> int:
    """python -m toolkit.api.registry --readme [README.md]: refresh the README's kinds."""
    if not argv or argv[0] != "--readme" or len(argv) > 2:
        print("usage: python -m toolkit.api.registry --readme [README.md]", file=sys.stderr)
        return 2
    path = Path(argv[1] if len(argv) > 1 else "README.md")
    text = path.read_text(encoding="utf-8")
    updated = with_kinds(text)
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    print(f"{path}: the kinds {'updated' if updated != text else 'were up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

"""The component registry: kind -> name -> factory + metadata.

Plugins fill it through the `register_components(register)` hook; the model builder, data
pipeline and sampler look components up here by the names a spec gives. The registry knows
*kinds* of component and what each kind must provide, never a concrete component.

A component's options are the keyword-only parameters of its factory, with their defaults and
annotations: `def make_rmsnorm(dim, *, eps: float = 1e-5)` takes one option, `eps`, a float.
It does not build anything or validate shapes; that is toolkit.model's and toolkit.testing's job.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
    contract: str  # how the engine calls a factory and what it must return
    required_facts: tuple[str, ...] = ()


KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind(
            "attention",
            "factory(config: ModelConfig, **options) -> nn.Module mapping x (B, T, emb_dim) to "
            "(B, T, emb_dim). Facts: `causal` (required) says whether position t only sees "
            "positions <= t; `positional_inside=True` says the module has "
            "bind_positional(module) and applies that module's rotate(q, k, start) and "
            "score_bias(t_q, t_k, start) (needed for RoPE and ALiBi); `kv_cache=True` says it "
            "has forward_cached(x, cache: dict, start) for generation: x holds positions "
            "start..start+T-1, the dict (the module's own between calls; start=0 refills it) "
            "keeps its keys and values, and the output equals forward() over all positions, "
            "last T rows",
            required_facts=("causal",),
        ),
        Kind(
            "normalization",
            "factory(dim: int, **options) -> nn.Module normalizing the last dimension of size dim",
        ),
        Kind(
            "activation",
            "factory(config: ModelConfig, **options) -> nn.Module, the position-wise "
            "feed-forward block mapping (B, T, emb_dim) to (B, T, emb_dim); its last nn.Linear "
            "is the residual output projection (the gpt2 init scales it) unless it defines "
            "residual_projections() returning the Linear layers that are",
        ),
        Kind(
            "positional",
            "factory(config: ModelConfig, **options) -> nn.Module with forward(x, start=0) adding "
            "position information to token embeddings x (B, T, emb_dim) for positions start.. "
            "start+T-1; its parameters count as embedding parameters. With the fact "
            "`inside_attention=True` forward returns x unchanged and the module provides "
            "rotate(q, k, start=0) -> (q, k) on (B, heads, T, head_dim) tensors and "
            "score_bias(t_q, t_k, start=0) -> (heads, t_q, t_k) tensor or None",
        ),
        Kind(
            "init",
            "factory(model: nn.Module, config: ModelConfig, **options) -> None, initialising the "
            "freshly built model's parameters in place (under the run's seed)",
        ),
        Kind(
            "sampler",
            "factory(**options) -> callable(logits (B, V), generator) -> next token ids (B, 1), "
            "never changing the logits; optionally probs(logits) -> the (B, V) distribution it "
            "draws from",
        ),
        Kind(
            "tokenizer",
            "factory(**options) -> Tokenizer with name, vocab_size, eot_id, encode(text), "
            "decode(ids), token_byte_lengths() and fingerprint. One learned from data sets "
            "needs_training = True and provides train(texts), training_config, state() and "
            "load_state(state); the data pipeline trains it on the training split only",
        ),
        Kind(
            "corpus",
            "factory(**options) -> Corpus with documents() yielding (name, text) pairs and "
            "a description",
        ),
        Kind(
            "executor",
            "factory(**options) -> Executor with prepare(jobs, plugins), checking before any "
            "write (raise ToolkitError), and execute(jobs, sweep) yielding (job, summary) once "
            "per toolkit.sweep.jobs.RunJob as runs finish, training each with "
            "toolkit.sweep.jobs.run_job(job) (see toolkit/sweep/jobs.py)",
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
        doc = description or (inspect.getdoc(factory) or "").split("\n", 1)[0] or "(no description)"
        doc = doc.rstrip(".")  # listings read as one consistent column
        component = Component(kind, name, factory, doc, plugin, options_of(factory), dict(facts))
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

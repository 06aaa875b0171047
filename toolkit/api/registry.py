"""The component registry: kind -> name -> factory + metadata.

Plugins fill it through the `register_components(register)` hook; the model builder, data
pipeline, training loop (optimizer, schedule) and sampler look components up here by the names
a spec gives. The registry knows
*kinds* of component and what each kind must provide, never a concrete component.

A component's options are the keyword-only parameters of its factory, with their defaults and
annotations: `def make_rmsnorm(dim, *, eps: float = 1e-5)` takes one option, `eps`, a float.
Registering a factory that has no `*` but positional parameters beyond its kind's contract
(`def make_rmsnorm(dim, eps=1e-5)`) warns: they are not options.
It does not build anything or validate shapes; that is toolkit.model's and toolkit.testing's job.

The kinds themselves (KINDS: each kind's contract and a minimal plugin, rendered into the
README) are in kinds.py.
"""

from __future__ import annotations

import difflib
import inspect
import os
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from toolkit.api.kinds import KINDS, Kind
from toolkit.errors import ComponentError, ToolkitError, one_line

# A component choice, as specs and configs write it: a registered name, or
# {name = "...", option = value, ...}.
Choice = str | dict[str, Any]

# The facts the engine reads, per kind, and the type each must have (KINDS says in words what
# each means). A fact of the wrong type is an error: causal="no" is truthy, and the model it
# names would be recorded and treated as causal. Any other fact is kept for `ablate list`, but
# warns, because nothing reads it: kv_cahce=True is a misspelling, not a KV cache.
FACTS: dict[str, dict[str, Any]] = {
    "attention": {"causal": bool, "positional_inside": bool, "kv_cache": bool},
    "positional": {"inside_attention": bool, "any_length": bool},
    "tokenizer": {"needs_training": bool},
    "optimizer": {"schedules": tuple[str, ...]},
}


def split_choice(choice: Choice) -> tuple[str, dict[str, Any]]:
    """'rmsnorm' -> ('rmsnorm', {});  {'name': 'rmsnorm', 'eps': 1e-6} -> ('rmsnorm', {'eps': 1e-6})."""
    if isinstance(choice, str):
        return choice, {}
    options = dict(choice)
    return options.pop("name"), options


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
        """'eps: float = 1e-05'; a Literal shows its values: "mode: 'a' | 'b' = 'a'"."""
        default = "" if self.required else f" = {self.default!r}"
        return f"{self.name}: {annotation_text(self.type)}{default}"


def annotation_text(t: Any) -> str:
    """An option's annotation as a listing shows it: float -> 'float', Literal['a', 'b'] ->
    "'a' | 'b'", dict | None -> 'dict | None', list[int] -> 'list[int]'."""
    args = typing.get_args(t)
    if typing.get_origin(t) is typing.Literal:
        return " | ".join(map(repr, args))
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else annotation_text(a) for a in args)
    if args or not hasattr(t, "__name__"):  # list[int], or a construct without a name
        return str(t).replace("typing.", "")
    return t.__name__


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
    """Check a TOML value against a simple annotation (bool, int, float, str, list[...],
    dict[...], Literal[...], X | None, Any). Ints are accepted where floats are expected and
    converted. Returns the value. `check_type(3, float, "lr") -> 3.0`; `check_type("3", int,
    "n")` and `check_type("c", Literal["a", "b"], "mode")` raise `error`."""
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
        words = [a for arm in typing.get_args(expected) for a in _literal_words(arm)]
        hint = suggest(value, words) if isinstance(value, str) else ""
        raise _Err(f"{where} must be {_type_name(expected)}, got {value!r}{hint}")
    if origin is typing.Literal:
        allowed = typing.get_args(expected)
        # By type too: True == 1, but a TOML true is no 1.
        if not any(type(value) is type(a) and value == a for a in allowed):
            hint = suggest(value, _literal_words(expected)) if isinstance(value, str) else ""
            raise _Err(f"{where} must be {_type_name(expected)}, got {value!r}{hint}")
        return value
    if expected in (list, tuple):  # bare: items of any type
        origin = expected
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise _Err(f"{where} must be a list, got {value!r}")
        (arm, *_) = typing.get_args(expected) or (Any,)
        items = [check_type(v, arm, where, error) for v in value]
        return tuple(items) if origin is tuple else items
    if expected is dict or origin is dict:
        if not isinstance(value, dict):
            raise _Err(f"{where} must be a table ({{key = value, ...}}), got {value!r}")
        _, arm = typing.get_args(expected) or (str, Any)
        return {k: check_type(v, arm, f"{where} key {k!r}", error) for k, v in value.items()}
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
    """An annotation in words, for errors: int | None -> 'an integer or none'."""
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if t in names:
        return names[t]
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is typing.Literal:
        return f"one of {', '.join(map(repr, args))}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _type_name(a) for a in args)
    if t in (list, tuple) or origin in (list, tuple):
        return "a list"
    if t is dict or origin is dict:
        return "a table"
    return getattr(t, "__name__", str(t))


def _literal_words(t: Any) -> list[str]:
    """The strings a Literal annotation allows (for a did-you-mean); [] for any other."""
    if typing.get_origin(t) is not typing.Literal:
        return []
    return [a for a in typing.get_args(t) if isinstance(a, str)]


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


def _checked_facts(kind: str, name: str, plugin: str, facts: dict[str, Any]) -> dict[str, Any]:
    """The facts with those the engine reads checked against FACTS (a list of schedules becomes
    a tuple); ComponentError on a wrong type, a warning for a fact nothing reads.
    `causal=True` passes; `causal="no"` raises; `kv_cahce=True` warns (did you mean 'kv_cache'?)."""
    known = FACTS.get(kind, {})
    checked = {}
    for fact, value in facts.items():
        if fact not in known:
            listed = ", ".join(known) or "none"
            _warn_from_plugin(
                f"plugin {plugin!r} registers {kind} {name!r} with fact {fact!r}"
                f"{suggest(fact, known)}, which nothing reads; the {kind} facts the engine "
                f"reads: {listed}"
            )
            checked[fact] = value
            continue
        expected = known[fact]
        try:
            checked[fact] = check_type(value, expected, fact)
        except ComponentError:
            wanted = "True or False" if expected is bool else "a tuple of names"
            raise ComponentError(
                f"plugin {plugin!r} registers {kind} {name!r} with {fact}={value!r}; {fact} "
                f"must be {wanted}"
            ) from None
    return checked


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
        if existing is not None and existing.plugin == plugin:
            raise ComponentError(
                f"plugin {plugin!r} registers {kind} {name!r} twice; give each its own name, "
                f"or register it once"
            )
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
        facts = _checked_facts(kind, name, plugin, facts)
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
        # The factory's own docstring: inspect.getdoc would give a class without one its base
        # class's ("Base class for all neural network modules").
        own = inspect.cleandoc(factory.__doc__) if isinstance(factory.__doc__, str) else ""
        doc = description or own.split("\n", 1)[0] or "(no description)"
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

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import pytest
from torch import nn

from toolkit import hookimpl
from toolkit.api.manager import Plugins
from toolkit.api.registry import FACTS, KINDS, Registry, check_type, options_of
from toolkit.errors import ComponentError


def make_norm(dim, *, eps: float = 1e-5, learnable: bool = True):
    """A test norm."""


def test_options_come_from_keyword_only_parameters():
    options = options_of(make_norm)
    assert list(options) == ["eps", "learnable"]
    assert options["eps"].type is float and options["eps"].default == 1e-5


def test_register_and_get_with_description_from_docstring():
    reg = Registry()
    reg.register("normalization", "mine", make_norm, plugin="p")
    component = reg.get("normalization", "mine")
    assert component.description == "A test norm"
    assert component.plugin == "p"
    assert ("normalization", "mine") in reg


def test_unknown_name_lists_choices_and_suggests():
    reg = Registry()
    reg.register("normalization", "rmsnorm", make_norm, plugin="p")
    reg.register("normalization", "layernorm", make_norm, plugin="p")
    with pytest.raises(ComponentError, match=r"did you mean 'rmsnorm'.*layernorm, rmsnorm"):
        reg.get("normalization", "rmsnrom")


def test_duplicate_name_names_both_plugins():
    reg = Registry()
    reg.register("normalization", "mine", make_norm, plugin="first")
    with pytest.raises(ComponentError, match="'first' and by plugin 'second'"):
        reg.register("normalization", "mine", make_norm, plugin="second")


def test_one_plugin_registering_a_name_twice_is_named_once():
    reg = Registry()
    reg.register("normalization", "mine", make_norm, plugin="p")
    with pytest.raises(ComponentError) as info:
        reg.register("normalization", "mine", make_norm, plugin="p")
    assert str(info.value) == (
        "plugin 'p' registers normalization 'mine' twice; give each its own name, or register "
        "it once"
    )


@pytest.mark.parametrize(
    "kind, fact, value",
    [
        ("attention", "causal", "no"),  # truthy: the run would be recorded as causal
        ("attention", "kv_cache", 1),
        ("positional", "any_length", "yes"),
        ("tokenizer", "needs_training", None),
        ("optimizer", "schedules", "constant"),  # a string, not a tuple of names
    ],
)
def test_a_fact_the_engine_reads_must_have_its_type(kind, fact, value):
    facts = {"causal": True} if kind == "attention" else {}
    with pytest.raises(ComponentError) as info:
        Registry().register(kind, "x", make_norm, plugin="p", **{**facts, fact: value})
    assert str(info.value).startswith(f"plugin 'p' registers {kind} 'x' with {fact}={value!r}; ")
    assert "must be" in str(info.value)


def test_facts_of_the_right_type_register_as_given():
    reg = Registry()
    c = reg.register("attention", "x", make_norm, plugin="p", causal=False, kv_cache=True)
    assert c.facts == {"causal": False, "kv_cache": True}
    o = reg.register("optimizer", "o", lambda model, config: None, plugin="p", schedules=["a"])
    assert o.facts == {"schedules": ("a",)}
    assert all(f in FACTS[k.name] for k in KINDS.values() for f in k.required_facts)


def test_a_fact_nothing_reads_warns_with_the_one_it_may_mean():
    with pytest.warns(UserWarning) as caught:
        c = Registry().register("attention", "x", make_norm, plugin="p", causal=True, kv_cahce=True)
    assert str(caught[0].message) == (
        "plugin 'p' registers attention 'x' with fact 'kv_cahce' (did you mean 'kv_cache'?), "
        "which nothing reads; the attention facts the engine reads: causal, "
        "positional_inside, kv_cache"
    )
    assert c.facts["kv_cahce"] is True  # still listed by `ablate list`


def test_unknown_kind_and_missing_required_fact():
    reg = Registry()
    with pytest.raises(
        ComponentError, match=r"unknown kind 'normalisation'.*did you mean 'normalization'"
    ):
        reg.register("normalisation", "x", make_norm, plugin="p")
    assert "causal" in KINDS["attention"].required_facts
    with pytest.raises(ComponentError, match="without 'causal'"):
        reg.register("attention", "x", make_norm, plugin="p")


def test_check_options_fills_defaults_and_rejects_bad_ones():
    reg = Registry()
    c = reg.register("normalization", "mine", make_norm, plugin="p")
    assert c.check_options({"eps": 1}) == {"eps": 1.0, "learnable": True}
    with pytest.raises(ComponentError, match="takes no option 'esp' \\(did you mean 'eps'\\?\\)"):
        c.check_options({"esp": 1e-6})
    with pytest.raises(ComponentError, match="must be a number"):
        c.check_options({"eps": "small"})
    with pytest.raises(ComponentError, match="must be true or false"):
        c.check_options({"learnable": 1})


@pytest.mark.parametrize(
    ("value", "annotation", "ok"),
    [
        (3, int, True),
        (True, int, False),
        (3, float, True),
        ("x", float, False),
        (None, int | None, True),
        (3, int | None, True),
        ("3", float | None, False),
        ([1, 2], list[int], True),
        ([1, "a"], list[int], False),
        ("s", str, True),
        (1, str, False),
    ],
)
def test_check_type(value, annotation, ok):
    if ok:
        check_type(value, annotation, "x")
    else:
        with pytest.raises(ComponentError):
            check_type(value, annotation, "x")


# -- Literal and dict options -------------------------------------------------------------------
def make_mixer(dim, *, mode: Literal["fast", "exact"] = "fast", table: dict | None = None):
    """A test component with a Literal and a dict option."""


def make_gate(dim, *, kind: Literal["sigmoid", "tanh"] | None = None, levels: Literal[1, 2] = 1):
    """A test component with an optional Literal and one of ints."""


def test_a_literal_option_takes_only_its_values_and_suggests_the_close_one():
    c = Registry().register("normalization", "mixer", make_mixer, plugin="p")
    assert c.check_options({"mode": "exact"})["mode"] == "exact"
    with pytest.raises(ComponentError) as info:
        c.check_options({"mode": "exakt"})
    assert str(info.value) == (
        "normalization 'mixer' option 'mode' must be one of 'fast', 'exact', got 'exakt' "
        "(did you mean 'exact'?)"
    )
    with pytest.raises(ComponentError, match=r"must be one of 'fast', 'exact', got 'c'$"):
        c.check_options({"mode": "c"})


def test_an_optional_literal_and_one_of_ints():
    c = Registry().register("normalization", "gate", make_gate, plugin="p")
    assert c.check_options({"kind": None, "levels": 2}) == {"kind": None, "levels": 2}
    with pytest.raises(ComponentError) as info:
        c.check_options({"kind": "sigmod"})
    assert str(info.value) == (
        "normalization 'gate' option 'kind' must be one of 'sigmoid', 'tanh' or none, got "
        "'sigmod' (did you mean 'sigmoid'?)"
    )
    for wrong in (3, True, "1"):  # true == 1 in Python, but a TOML true is no 1
        with pytest.raises(ComponentError, match="must be one of 1, 2, got"):
            c.check_options({"levels": wrong})


def test_a_dict_option_takes_a_table_only():
    c = Registry().register("normalization", "mixer", make_mixer, plugin="p")
    assert c.check_options({"table": {"a": 1}})["table"] == {"a": 1}
    with pytest.raises(ComponentError, match=r"option 'table' must be a table or none, got 5$"):
        c.check_options({"table": 5})
    assert check_type({"a": 1}, dict[str, float], "x") == {"a": 1.0}
    with pytest.raises(ComponentError, match=r"x key 'a' must be a number, got 'big'"):
        check_type({"a": "big"}, dict[str, float], "x")
    with pytest.raises(ComponentError, match=r"x must be a list or none, got 3"):
        check_type(3, list[int] | None, "x")


def test_the_listing_shows_a_literal_option_s_values():
    c = Registry().register("normalization", "mixer", make_mixer, plugin="p")
    assert [o.describe() for o in c.options.values()] == [
        "mode: 'fast' | 'exact' = 'fast'",
        "table: dict | None = None",
    ]
    g = Registry().register("normalization", "gate", make_gate, plugin="p")
    assert g.options["kind"].describe() == "kind: 'sigmoid' | 'tanh' | None = None"
    assert g.options["levels"].describe() == "levels: 1 | 2 = 1"
    assert options_of(make_norm)["eps"].describe() == "eps: float = 1e-05"


# -- factory parameters before `*` beyond what the kind's contract passes -----------------------
def feed_forward_without_star(config, alpha_init: float = 1.0):
    """A feed-forward whose option was meant to be keyword-only."""


def feed_forward_with_star(config, width=None, *, gain: float = 1.0):
    """Has a `*`, but width before it stays positional: a spec cannot set it (a warning)."""


def sampler_without_star(temperature: float = 1.0):
    """A sampler factory is called with no positional arguments."""


def plugins_registering(kind: str, factory) -> Plugins:
    class Throwaway:
        @hookimpl
        def register_components(self, register):
            register(kind, "mine", factory)  # the line the warning points at

    plugins = Plugins(autoload=False)
    plugins.add(Throwaway(), name="throwaway")
    return plugins


def test_positional_parameters_beyond_the_contract_warn_and_point_at_the_register_call():
    with pytest.warns(UserWarning) as record:
        plugins_registering("activation", feed_forward_without_star)
    (warning,) = record
    message = str(warning.message)
    assert message == (
        "plugin 'throwaway' registers activation 'mine' with positional parameter(s) "
        "'alpha_init' beyond what the engine passes (config), so a spec cannot set them; did "
        "you mean to make them keyword-only with `*`, as in factory(config, *, alpha_init=...)?"
    )
    assert "\n" not in message
    source = Path(__file__).read_text(encoding="utf-8").splitlines()
    assert warning.filename == __file__
    assert source[warning.lineno - 1].endswith("# the line the warning points at")
    with pytest.warns(UserWarning, match=r"'temperature' beyond what the engine passes \(no pos"):
        Registry().register("sampler", "mine", sampler_without_star, plugin="p")


def test_keyword_only_options_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Registry().register("normalization", "mine", make_norm, plugin="p")
        Registry().register("init", "mine", lambda model, config: None, plugin="p")
        Plugins(autoload=False)  # every built-in


def test_a_positional_parameter_beside_keyword_only_options_still_warns():
    with pytest.warns(UserWarning, match=r"positional parameter\(s\) 'width'"):
        Registry().register("activation", "mine", feed_forward_with_star, plugin="p")


def test_setting_a_positional_parameter_as_an_option_says_to_use_star():
    with pytest.warns(UserWarning):
        component = Registry().register("activation", "mine", feed_forward_without_star, plugin="p")
    with pytest.raises(ComponentError) as info:
        component.check_options({"alpha_init": 0.5})
    assert str(info.value) == (
        "activation 'mine' takes no option 'alpha_init' ('alpha_init' is a positional parameter "
        "of its factory: did you mean to make it keyword-only with `*`?); its options: none"
    )
    with pytest.raises(ComponentError) as info:
        component.check_options({"config": 1})  # the engine's own argument: no such hint
    assert "keyword-only" not in str(info.value)
    with pytest.warns(UserWarning):
        option = Registry().register("activation", "star", feed_forward_with_star, plugin="p")
    with pytest.raises(ComponentError, match=r"'width' is a positional parameter of its factory"):
        option.check_options({"width": 3})


def test_a_class_without_a_docstring_is_not_described_by_its_base_class() -> None:
    class Bare(nn.Module):
        pass

    class Documented(nn.Module):
        """Scales nothing.

        More words."""

    registry = Registry()
    bare = registry.register("normalization", "bare", Bare, plugin="p")
    documented = registry.register("normalization", "documented", Documented, plugin="p")
    assert bare.description == "(no description)"
    assert documented.description == "Scales nothing"

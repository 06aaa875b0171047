from __future__ import annotations

import pytest

from toolkit.api.registry import KINDS, Registry, check_type, options_of
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

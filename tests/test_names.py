"""How names are written: labels of values, slugs of folder names (capped, still distinct) and
run folders; a variant with any name, however long, trains into a folder of its own."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from toolkit.names import MAX_SLUG, label, run_folder, slug
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run


def test_examples():
    assert label({"name": "top-k", "k": 5}) == "top-k(k=5)"
    assert label([True, 1.5]) == "[true,1.5]"
    assert slug("lr=1e-3,norm=rms/x") == "lr=1e-3,norm=rms_x"
    assert run_folder("a b", 3) == "a_b/seed-3"


@given(st.text(min_size=1, max_size=400))
def test_any_name_makes_a_short_safe_folder_name(name):
    s = slug(name)
    assert 1 <= len(s) <= MAX_SLUG and s not in (".", "..")
    assert all(c.isascii() and (c.isalnum() or c in "._=,+-") for c in s)
    assert slug(name) == s  # the same name, the same folder


def test_long_names_that_share_a_start_stay_apart():
    a, b = "x" * 300 + "a", "x" * 300 + "b"
    assert slug(a) != slug(b) and len(slug(a)) == len(slug(b)) == MAX_SLUG
    assert slug("y" * MAX_SLUG) == "y" * MAX_SLUG  # short enough names are kept whole


def test_a_variant_with_a_very_long_name_trains(tmp_path, tiny_doc, plugins):
    name = "a-very-long-variant-name-" * 20  # 500 characters: over any file system's limit
    tiny_doc["variants"] = [{"name": name, "train": {"max_steps": 2}}]
    table = run(parse_spec(tiny_doc), tmp_path, plugins=plugins, progress=False)
    assert table["status"].tolist() == ["ok"] and table["variant"].tolist() == [name]
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folder.name) == MAX_SLUG and (folder / "seed-0" / "summary.json").is_file()

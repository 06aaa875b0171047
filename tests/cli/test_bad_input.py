"""The bad-input catalogue: every mistake a user can make in a spec, on the command line or in
their data gives one line naming the problem and where it is, exit status 2, no traceback, and
leaves everything already written as it was. Plus a fuzzer: any document is either a valid
spec or a SpecError, never another exception."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest
from conftest import small_toml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import toolkit.api.manager
from toolkit.cli import main
from toolkit.errors import PluginError, SpecError
from toolkit.spec.parse import parse_spec
from toolkit.spec.schema import SECTIONS

GOOD = small_toml("cat")


def with_lines(*lines: str, drop: str = "") -> str:
    """GOOD with extra TOML lines added to the right sections ('[model] x = 1')."""
    text = GOOD.replace(drop, "") if drop else GOOD
    for line in lines:
        if line.startswith("["):
            section, _, rest = line.partition("] ")
            text = text.replace(section + "]\n", section + "]\n" + rest + "\n", 1)
        else:
            text = line + "\n" + text
    return text


DUP_PLUGIN = """
from torch import nn
from toolkit import hookimpl

@hookimpl
def register_components(register):
    register("normalization", "rmsnorm", lambda dim: nn.Identity())
"""

CASES = [
    # (id, spec text or None, extra args, expected words in the error)
    ("toml-syntax", "[model\nemb_dim = 3\n", [], "TOML syntax error"),
    ("toml-syntax-line", GOOD + "\nbroken = = 1\n", [], f"(at line {GOOD.count(chr(10)) + 2}"),
    ("unknown-top-key", with_lines("sedes = [1]"), [], "did you mean 'seeds'"),
    ("unknown-model-key", with_lines("[model] emb_dmi = 8"), [], "did you mean 'emb_dim'"),
    (
        "unknown-train-key",
        with_lines("[train] learning_rate = 1e-3"),
        [],
        "[train] unknown key 'learning_rate'",
    ),
    ("unknown-section", GOOD + "[optimizer]\nlr = 1\n", [], "unknown top-level key 'optimizer'"),
    ("unknown-norm", with_lines('[model] norm = "batchnorm"'), [], "choose one of"),
    (
        "plugin-not-a-module",
        with_lines('plugins = ["my plugins"]'),
        [],
        "is not a Python module name",
    ),
    ("plugin-empty-name", with_lines('plugins = [""]'), [], "'' is not a Python module name"),
    (
        "unknown-attention",
        with_lines('[model] attention = "flash"'),
        [],
        "unknown attention 'flash'",
    ),
    (
        "unknown-option",
        with_lines('[model] norm = { name = "rmsnorm", epsilon = 1e-6 }'),
        [],
        "takes no option 'epsilon'",
    ),
    (
        "option-type",
        with_lines('[model] norm = { name = "rmsnorm", eps = "tiny" }'),
        [],
        "must be a number",
    ),
    (
        "wrong-type-int",
        with_lines('[model] n_layers = "four"', drop="n_layers = 1\n"),
        [],
        "model.n_layers must be an integer",
    ),
    (
        "wrong-type-bool",
        with_lines('[model] qkv_bias = "yes"'),
        [],
        "model.qkv_bias must be true or false",
    ),
    (
        "zero-size",
        with_lines("[model] n_layers = 0", drop="n_layers = 1\n"),
        [],
        "model.n_layers must be at least 1",
    ),
    (
        "negative-size",
        with_lines("[model] emb_dim = -16", drop="emb_dim = 16\n"),
        [],
        "model.emb_dim must be at least 1",
    ),
    (
        "absurd-size",
        with_lines("[model] n_layers = 1200000", drop="n_layers = 1\n"),
        [],
        "beyond what this toolkit builds",
    ),
    (
        "heads-divide",
        with_lines("[model] n_heads = 3", drop="n_heads = 2\n"),
        [],
        "must be divisible by model.n_heads",
    ),
    (
        "kv-heads-divide",
        with_lines(
            '[model] attention = { name = "gqa", n_kv_heads = 3 }',
            "[model] n_heads = 4",
            drop="n_heads = 2\n",
        ),
        [],
        "n_kv_heads",
    ),
    (
        "rope-with-simplified",
        with_lines('[model] attention = "simplified"', '[model] positional = "rope"'),
        [],
        "acts inside attention",
    ),
    ("dropout-range", with_lines("[model] drop_rate = 1.0"), [], "drop_rate must be in [0, 1)"),
    ("two-budgets", with_lines("[train] epochs = 1"), [], "give one budget"),
    ("bad-lr", with_lines("[train] lr = -1.0"), [], "train.lr must be positive"),
    ("bad-device", with_lines('[train] device = "gpu"'), [], "train.device must be"),
    (
        "bad-placement",
        with_lines('[model] norm_placement = "middle"'),
        [],
        "norm_placement must be one of",
    ),
    (
        "bad-sampler-option",
        GOOD + '[sampling]\nsampler = { name = "top-k", k = 0 }\n',
        [],
        "k must be at least 1",
    ),
    ("empty-seeds", with_lines("seeds = []", drop="seeds = [0]\n"), [], "seeds is empty"),
    ("duplicate-seeds", with_lines("seeds = [1, 1]", drop="seeds = [0]\n"), [], "has duplicates"),
    (
        "duplicate-variants",
        GOOD + '[[variants]]\nname = "a"\n[[variants]]\nname = "a"\n',
        [],
        "two variants are named 'a'",
    ),
    ("variant-without-name", GOOD + '[[variants]]\n"model.norm" = "rmsnorm"\n', [], "needs a name"),
    ("grid-unknown-key", GOOD + '[grid]\n"model.nrom" = ["a"]\n', [], "did you mean 'norm'"),
    (
        "grid-not-a-list",
        GOOD + '[grid]\n"model.norm" = "rmsnorm"\n',
        [],
        "must be a non-empty list",
    ),
    (
        "grid-unknown-value",
        GOOD + '[grid]\n"model.norm" = ["layernorm", "bogus"]\n',
        [],
        "variant 'norm=bogus'",
    ),
    ("unknown-baseline", with_lines('baseline = "nope"'), [], "baseline 'nope' is not a variant"),
    ("bad-name", with_lines('name = "../up"', drop='name = "cat"\n'), [], "may hold only"),
    (
        "context-longer-than-data",
        with_lines(
            '[data] path = "{tmp}/small.txt"',
            "[model] context_length = 5000",
            drop="context_length = 16\n",
        ),
        [],
        "fewer than one window of model.context_length + 1 = 5001",
    ),
    (
        "test-split-smaller-than-a-window",
        with_lines("[data] test_fraction = 0.00001"),
        [],
        "the test split holds",
    ),
    ("empty-data-path", GOOD, ["--set", "data.path="], "path is empty"),
    # The corpus's and the tokenizer's own errors name the spec they came from.
    (
        "missing-data-file",
        with_lines('[data] path = "{tmp}/nowhere.txt"'),
        [],
        "spec.toml: corpus 'files': path '{tmp}/nowhere.txt' does not exist",
    ),
    ("empty-corpus", with_lines('[data] path = "{tmp}/empty.txt"'), [], "spec.toml: corpus"),
    (
        "grid-corpus-missing",  # the data differ by variant: the error names the variant too
        GOOD + '[grid]\n"data.path" = ["{tmp}/nowhere.txt", "{tmp}/small.txt"]\n',
        [],
        "spec.toml: variant 'path={tmp}/nowhere.txt': corpus 'files'",
    ),
    (
        "bpe-vocab-too-small",
        with_lines(
            '[data] tokenizer = {name = "bpe", vocab_size = 10}', drop='tokenizer = "bytes"'
        ),
        [],
        "spec.toml: tokenizer 'bpe' option vocab_size must be at least 257",
    ),
    ("non-utf8", with_lines('[data] path = "{tmp}/latin1.txt"'), [], "UTF-8"),
    (
        "both-path-and-corpus",
        with_lines('[data] path = "{tmp}/small.txt"', '[data] corpus = "pydoc"'),
        [],
        "not both",
    ),
    (
        "vocab-smaller-than-tokenizer",
        with_lines("[model] vocab_size = 100"),
        [],
        "257 ids but the model only 100",
    ),
    ("missing-spec", None, [], "spec file not found"),
    ("spec-is-folder", "{tmp}", [], "is a folder"),
    ("bad-set-syntax", GOOD, ["--set", "train.lr"], "expected KEY=VALUE"),
    ("bad-set-key", GOOD, ["--set", "trian.lr=1"], "unknown key 'trian'"),
    (
        "bad-set-value",
        GOOD,
        ["--set", "train.max_steps=many"],
        "train.max_steps must be an integer",
    ),
    ("out-is-a-file", GOOD, ["--out", "{tmp}/keep.txt"], "is a file"),
    (
        "out-unwritable",
        GOOD,
        ["--out", "/proc/ablate-cannot-write-here"],
        "cannot write to output folder",
    ),
    ("plugin-missing", GOOD, ["--plugin", "no_such_plugin_module"], "not found"),
    ("unknown-executor", GOOD, ["--executor", "rey"], "did you mean 'ray'"),
    (
        "jobs-zero",
        GOOD,
        ["--executor", "processes", "--jobs", "0"],
        "--jobs must be at least 1",
    ),
    ("jobs-with-local", GOOD, ["--jobs", "2"], "--jobs does not apply to the local executor"),
    (
        "address-with-processes",
        GOOD,
        ["--executor", "processes", "--address", "auto"],
        "--address does not apply to the processes executor; it is for --executor ray",
    ),
    (
        "plugin-raises",
        GOOD,
        ["--plugin", "raising_plugin"],
        "failed to import: RuntimeError: import-time bug",
    ),
    (
        "plugin-duplicate-name",
        with_lines('plugins = ["dup_plugin"]'),
        [],
        "registered twice: by plugin 'plugins.normalization' (builtin) and by plugin "
        "'dup_plugin' (spec ",
    ),
    ("spec-not-utf8", "latin1-spec", [], "not UTF-8"),
    # Bounds: refused before the TOML parser or the variants' expansion sees them.
    ("spec-too-large", "huge-spec", [], "a spec is at most 1,048,576"),
    ("nested-arrays", GOOD + "x = " + "[" * 5000 + "]" * 5000 + "\n", [], "nested more than 32"),
    ("nested-set", GOOD, ["--set", "train.lr=" + "{a=" * 100 + "1" + "}" * 100], "nested more"),
    ("long-dotted-key", GOOD + ".".join(["a"] * 100_000) + " = 1\n", [], "more than 8 dots"),
    ("long-dotted-set", GOOD, ["--set", ".".join(["a"] * 50) + "=1"], "more than 8 dots"),
    (
        "too-many-runs",
        GOOD + '[grid]\n"train.lr" = [' + ", ".join(["1e-3"] * 1001) + "]\n",
        [],
        "1,001 runs (variants x 1 seed(s)) is more than the limit of 1,000; pass --max-runs 1001",
    ),
    (
        "million-runs",
        GOOD.replace("seeds = [0]", "seeds = [0, 1]")
        + '[grid]\n"train.lr" = ['
        + ", ".join(["1e-3"] * 1000)
        + "]\n"
        + '"train.warmup_steps" = ['
        + ", ".join(["0"] * 1000)
        + "]\n",
        [],
        "2,000,000 runs",
    ),
    ("seed-too-large", GOOD.replace("seeds = [0]", f"seeds = [{2**63}]"), [], "out of range"),
    ("seed-negative", GOOD.replace("seeds = [0]", "seeds = [-1]"), [], "seed -1 is out of range"),
    ("name-too-long", GOOD.replace('name = "cat"', f'name = "{"c" * 101}"'), [], "at most 100"),
    # Checked before training, though the spec itself is valid.
    ("set-under-a-value", GOOD, ["--set", "train.max_steps.x=1"], "is 2, not a table"),
    ("lr-infinite", GOOD, ["--set", "train.lr=inf"], "train.lr must be positive and finite"),
    (
        "norm-eps-negative",
        GOOD,
        ["--set", 'model.norm={name="rmsnorm", eps=-1.0}'],
        "'rmsnorm': eps must be a finite number > 0",
    ),
    ("device-not-here", GOOD, ["--set", 'train.device="cuda:99"'], "this machine has"),
    ("device-mps-not-here", GOOD, ["--set", 'train.device="mps"'], "no MPS device"),
    ("spec-a-device", "/dev/zero", [], "not a regular file (a device or a pipe)"),
    ("max-runs-negative", GOOD, ["--max-runs", "-1"], "--max-runs must be at least 1"),
    ("out-empty", GOOD, ["--out", ""], "--out is empty"),
    ("restart-and-rerun", GOOD, ["--restart", "--rerun", "base/seed-0"], "give one of them"),
    (
        "another-experiment",
        GOOD.replace('name = "cat"', 'name = "dog"'),
        ["--out", "runs/cat"],
        "runs/cat holds experiment 'cat' (1 run(s)), not 'dog'",
    ),
]


@pytest.fixture(autouse=True)
def _fresh_plugins(monkeypatch):
    # A plugin loaded by one case must not linger in the process-wide plugin cache.
    monkeypatch.setattr(toolkit.api.manager, "_DEFAULT", {})


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize(("case", "text", "args", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, text, args, expected, tmp_path, monkeypatch, capsys):
    assert len(CASES) >= 30
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "small.txt").write_text("just a few words of text\n")
    (tmp_path / "empty.txt").write_text("   \n")
    (tmp_path / "latin1.txt").write_bytes("café au lait, naïve".encode("latin-1"))
    (tmp_path / "keep.txt").write_text("precious")
    (tmp_path / "raising_plugin.py").write_text("raise RuntimeError('import-time bug')\n")
    (tmp_path / "dup_plugin.py").write_text(textwrap.dedent(DUP_PLUGIN))
    earlier = tmp_path / "runs/cat"  # an earlier sweep's results must survive any bad input
    earlier.mkdir(parents=True)
    (earlier / "results.csv").write_text("experiment,variant\ncat,base\n")
    (earlier / "experiment.json").write_text('{"name": "cat", "runs": [{"variant": "base"}]}')
    spec = tmp_path / "spec.toml"
    if text == "{tmp}":
        spec = tmp_path
    elif text == "huge-spec":
        spec.write_text(GOOD + "#" * (1 << 20) + "\n")
    elif text == "/dev/zero":
        spec = Path(text)
    elif text == "latin1-spec":
        spec.write_bytes('name = "café"\n'.encode("latin-1"))
    elif text is not None:
        spec.write_text(text.replace("{tmp}", str(tmp_path)))
    before = snapshot(tmp_path)

    code = main(["run", str(spec), *[a.replace("{tmp}", str(tmp_path)) for a in args]])

    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("ablate: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert expected.replace("{tmp}", str(tmp_path)) in err, err
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_a_rerun_with_changed_settings_discards_nothing(tmp_path, capsys):
    """Re-running a spec whose settings changed into the folder of its finished runs stops
    before training, names what changed and how to go on, and leaves the runs as they were."""
    spec = tmp_path / "spec.toml"
    spec.write_text(GOOD)
    out = tmp_path / "runs/cat"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    before = snapshot(tmp_path)
    code = main(["run", str(spec), "--out", str(out), "--set", "train.max_steps=3"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "trained with other settings (train.max_steps: 2 -> 3)" in err
    assert "--restart" in err and "another --out" in err
    assert snapshot(tmp_path) == before
    assert main(["run", str(spec), "--out", str(out), "--set", "train.max_steps=3", "--restart",
                 "--quiet"]) == 0  # fmt: skip


atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["rmsnorm", "gelu", "sdpa", "rope", "bytes", "top-k", "pre", "bpe", "cpu"]),
)
keys = st.one_of(
    st.sampled_from(
        sorted({f.name for cls in SECTIONS.values() for f in cls.__dataclass_fields__.values()})
    ),
    st.sampled_from(["name", "seeds", "baseline", "plugins", "grid", "variants", *SECTIONS]),
    st.sampled_from(
        ["model.norm", "model.norm.eps", "model.attention.n_kv_heads", "train.lr", "x.y"]
    ),
    st.text(max_size=8),
)
values = st.recursive(
    atoms,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
documents = st.dictionaries(keys, values, max_size=6)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_document_is_a_spec_or_a_spec_error(doc):
    try:
        parse_spec(doc)
    except (SpecError, PluginError) as exc:  # PluginError: a plugin module it names is missing
        assert "\n" not in str(exc)

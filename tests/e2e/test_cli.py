"""End to end through the console entry point: a real two-variant sweep in seconds, and the
bad-input contract (one line on stderr, exit status 2, no traceback, nothing written)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import TINY_TOML, write_spec
from toolkit.cli import main

ROOT = Path(__file__).resolve().parents[2]


def ablate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=300,
    )


def test_run_validate_report_end_to_end(tmp_path):
    spec = write_spec(tmp_path / "tiny.toml", TINY_TOML)
    out = tmp_path / "out"
    result = ablate("run", str(spec), "--out", str(out), "--set", "seeds=[0, 1]")
    assert result.returncode == 0, result.stderr
    assert "norm=rmsnorm" in result.stdout and "* norm=layernorm" in result.stdout.replace(
        "  ", " "
    )
    assert "[4/4]" in result.stderr  # progress: run i of n
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 4 and set(table["status"]) == {"ok"}
    for column in [
        "experiment",
        "variant",
        "seed",
        "status",
        "attention",
        "norm",
        "activation",
        "positional",
        "params",
        "params_non_embedding",
        "train_loss",
        "val_loss",
        "val_perplexity",
        "val_bpb",
        "tokens_per_s",
        "wall_s",
        "model.norm",
    ]:
        assert column in table.columns, column

    again = ablate("run", str(spec), "--out", str(out))
    assert again.returncode == 0 and again.stderr.count("already finished, skipped") == 4

    report = ablate("report", str(out))
    assert report.returncode == 0 and "4 of 4 runs recorded" in report.stdout
    assert "± " in report.stdout

    validate = ablate("validate", str(spec))
    assert validate.returncode == 0, validate.stderr
    assert "2 variants x 2 seeds = 4 runs" in validate.stdout and "norm=rmsnorm" in validate.stdout


def test_list_and_plugins_commands(capsys):
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    for name in [
        "multihead",
        "sdpa",
        "layernorm",
        "rmsnorm",
        "gelu",
        "relu",
        "learned",
        "greedy",
        "temperature",
        "top-k",
        "gpt2",
        "bytes",
        "pydoc",
        "files",
    ]:
        assert f"  {name} " in listing, name
    assert "[causal=True]" in listing and "options: k: int = 50" in listing
    assert main(["plugins"]) == 0
    assert "plugins.attention  (builtin; hooks: register_components)" in capsys.readouterr().out


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """`ablate list | head`: the pipe closes before the listing is written. The command stops
    with SIGPIPE's status and no traceback, rather than BrokenPipeError's."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    proc.stdout.close()  # long before the listing: start-up takes a second or more
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, stderr
    assert stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "{dir}/missing.toml"], "spec file not found"),
        (["run", "{dir}/bad.toml"], "TOML syntax error"),
        (["run", "{dir}/tiny.toml", "--set", "model.nrom=rmsnorm"], "unknown key 'nrom'"),
        (["run", "{dir}/tiny.toml", "--set", "model.emb_dim=31"], "must be divisible"),
        (
            ["run", "{dir}/tiny.toml", "--set", "model.context_length=100000"],
            "the validation split holds",
        ),
        (["run", "{dir}/tiny.toml", "--out", "{dir}/a-file"], "is a file"),
        (["run", "{dir}/tiny.toml", "--plugin", "no_such_module_q"], "not found"),
        (["validate", "{dir}/tiny.toml", "--set", "data.path={dir}/nothing-here"], "nothing-here"),
        (["list", "atention"], "did you mean 'attention'"),
        (["report", "{dir}/empty"], "holds no experiment"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path, capsys, monkeypatch, args, message
):
    monkeypatch.chdir(tmp_path)  # runs/ would land here if a bad input were accepted
    write_spec(tmp_path / "tiny.toml", TINY_TOML)
    write_spec(tmp_path / "bad.toml", "[model\n")
    (tmp_path / "a-file").write_text("keep me")
    (tmp_path / "empty").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = main([a.format(dir=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("ablate: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "a-file").read_text() == "keep me"


def test_generate_streams_text_from_a_trained_run(tmp_path):
    spec = write_spec(tmp_path / "tiny.toml", TINY_TOML)
    assert ablate("run", str(spec), "--out", str(tmp_path / "out"), "--quiet").returncode == 0
    run_dir = tmp_path / "out/norm=rmsnorm/seed-0"
    args = ["generate", str(run_dir), "--prompt", "The ", "--sampler", "top-p",
            "--set", "sampling.p=0.9", "--max-new-tokens", "12", "--seed", "3"]  # fmt: skip
    result = ablate(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("The ") and len(result.stdout) > len("The ")
    again = ablate(*args, "--no-cache")
    assert again.stdout == result.stdout  # same seed, same text, cache or not
    bad = ablate("generate", str(run_dir), "--sampler", "top-q")
    assert (
        bad.returncode == 2 and bad.stderr.count("\n") == 1 and "did you mean 'top-p'" in bad.stderr
    )

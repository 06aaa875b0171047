"""`ablate import`'s book-only options: --drop-rate in [0, 1) as the spec's model.drop_rate
(nan and inf too), --n-heads at least 1, and both refused with --format hf-gpt2, which reads
them from its config.json; each one line, status 2, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.api.manager import Plugins
from toolkit.cli import main as cli_main
from toolkit.model.book import export_book
from toolkit.model.checkpoint import read_checkpoint, save_checkpoint
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model
from toolkit.model.hf_gpt2 import export_hf_gpt2


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model as the book's state dict and as a Hugging Face GPT-2 folder."""
    folder = tmp_path_factory.mktemp("sources")
    config = ModelConfig(vocab_size=60, context_length=16, emb_dim=16, n_heads=2, n_layers=1)
    checkpoint = save_checkpoint(
        config, build_model(config, Plugins(autoload=False)).state_dict(), folder / "tiny.pt"
    )
    export_book(checkpoint, folder / "book.pth")
    export_hf_gpt2(checkpoint, folder / "hf")
    return {"book": folder / "book.pth", "hf-gpt2": folder / "hf"}


def refused(capsys, argv: list[str]) -> str:
    code = cli_main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (code, out, err)
    assert err.startswith("ablate: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("rate", ["2", "1", "-1", "nan", "inf"])
def test_a_drop_rate_outside_0_to_1_is_refused(capsys, tmp_path, sources, rate) -> None:
    out = tmp_path / "new" / "x.pt"
    argv = ["import", "--format", "book", str(sources["book"]), "--out", str(out)]
    err = refused(capsys, [*argv, "--n-heads", "2", "--drop-rate", rate])
    assert f"--drop-rate must be in [0, 1), got {float(rate):g}" in err
    assert not out.parent.exists()  # not even the folder


def test_book_options_are_refused_for_hf_gpt2(capsys, tmp_path, sources) -> None:
    out = tmp_path / "new" / "x.pt"
    argv = ["import", "--format", "hf-gpt2", str(sources["hf-gpt2"]), "--out", str(out)]
    err = refused(capsys, [*argv, "--drop-rate", "0.2"])
    assert "--drop-rate is for --format book" in err and "resid_pdrop" in err
    err = refused(capsys, [*argv, "--n-heads", "2"])
    assert "--n-heads is for --format book" in err
    assert not out.parent.exists()
    assert cli_main(argv) == 0  # without them it imports
    assert read_checkpoint(out)["config"]["n_heads"] == 2


def test_n_heads_must_be_at_least_one(capsys, tmp_path, sources) -> None:
    out = tmp_path / "new" / "x.pt"
    argv = ["import", "--format", "book", str(sources["book"]), "--out", str(out)]
    err = refused(capsys, [*argv, "--n-heads", "0"])
    assert "--n-heads must be at least 1, got 0" in err
    assert not out.parent.exists()


def test_a_drop_rate_in_range_is_recorded_and_0_1_is_the_default(capsys, tmp_path, sources):
    argv = ["import", "--format", "book", str(sources["book"]), "--n-heads", "2", "--out"]
    assert cli_main([*argv, str(tmp_path / "a.pt"), "--drop-rate", "0"]) == 0
    assert read_checkpoint(tmp_path / "a.pt")["config"]["drop_rate"] == 0.0
    assert cli_main([*argv, str(tmp_path / "b.pt")]) == 0
    assert read_checkpoint(tmp_path / "b.pt")["config"]["drop_rate"] == 0.1

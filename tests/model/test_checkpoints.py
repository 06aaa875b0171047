"""Importing and exporting weights: Hugging Face GPT-2 folders (checked against transformers'
own GPT2LMHeadModel, built tiny and random, offline) and the book's state-dict layout; the
errors of bad inputs; frugal reading; and the `ablate import` / `ablate export` commands."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolkit.cli import main as cli_main
from toolkit.errors import ComponentError, DataError
from toolkit.model import hf_gpt2
from toolkit.model.book import export_book, import_book, infer_n_heads
from toolkit.model.checkpoint import load_model, model_from_state, read_checkpoint, save_checkpoint
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model
from toolkit.model.hf_gpt2 import export_hf_gpt2, import_hf_gpt2

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=100)


def hf_model(**overrides):
    """A tiny random GPT2LMHeadModel in eval mode, every parameter drawn at random (biases and
    norms too, so each one's mapping matters)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(**{**TINY, **overrides})
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            gain = name.endswith("weight") and ".ln_" in name
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if gain else 0.0))
    return model


def save_hf(model, folder: Path) -> Path:
    pytest.importorskip("safetensors")
    model.save_pretrained(folder)
    return folder


def hf_logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def our_logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(ids)


def ids(vocab: int = 100, t: int = 40):
    return torch.randint(0, vocab, (3, t), generator=torch.Generator().manual_seed(1))


def tiny_config(**overrides) -> ModelConfig:
    base = dict(vocab_size=60, context_length=16, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)
    return ModelConfig(**{**base, **overrides})


# -- Hugging Face GPT-2 ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"tie_word_embeddings": False},
        {"activation_function": "relu"},
        {"activation_function": "gelu", "layer_norm_epsilon": 1e-6},
        {"n_inner": 48},
    ],
    ids=["tied-gelu_new", "untied", "relu", "exact-gelu-eps", "n_inner"],
)
@pytest.mark.slow
def test_import_hf_gpt2_matches_transformers(tmp_path, overrides):
    hf = hf_model(**overrides)
    config, state = import_hf_gpt2(save_hf(hf, tmp_path / "hf"))
    assert config.tie_embeddings == overrides.get("tie_word_embeddings", True)
    assert config.ffn_hidden == overrides.get("n_inner")
    assert config.context_length == 64 and config.qkv_bias and config.attention == "sdpa"
    assert config.norm == {"name": "layernorm", "eps": overrides.get("layer_norm_epsilon", 1e-5)}
    assert (config.drop_rate, config.drop_rate_emb, config.drop_rate_attn) == (0.1, 0.1, 0.1)
    ours = model_from_state(config, state)
    assert (ours.out_head.weight is ours.tok_emb.weight) == config.tie_embeddings
    x = ids()
    assert (hf_logits(hf, x) - our_logits(ours, x)).abs().max() <= 1e-4


@pytest.mark.slow
def test_import_pytorch_model_bin_without_prefix_head_or_buffers(tmp_path):
    """An older folder: pytorch_model.bin, names without 'transformer.' (as the hub's gpt2),
    the attn.bias / masked_bias buffers, no lm_head (tied)."""
    hf = hf_model()
    folder = save_hf(hf, tmp_path / "hf")
    (folder / "model.safetensors").unlink()
    state = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items()}
    del state["lm_head.weight"]
    for i in range(2):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, folder / "pytorch_model.bin")
    config, ours_state = import_hf_gpt2(folder)
    x = ids()
    assert (
        hf_logits(hf, x) - our_logits(model_from_state(config, ours_state), x)
    ).abs().max() <= 1e-4


@pytest.mark.slow
def test_export_hf_gpt2_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf = hf_model(tie_word_embeddings=False)
    ours = model_from_state(*import_hf_gpt2(save_hf(hf, tmp_path / "hf")))
    export_hf_gpt2(ours, tmp_path / "out")
    back, info = transformers.GPT2LMHeadModel.from_pretrained(
        tmp_path / "out", output_loading_info=True
    )
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    x = ids()
    assert (hf_logits(back.eval(), x) - our_logits(ours, x)).abs().max() <= 1e-4


@pytest.mark.parametrize(
    "overrides",
    [
        {"qkv_bias": False, "activation": "gelu-exact", "attention": "multihead"},
        {"qkv_bias": True, "tie_embeddings": True, "norm": "torch-layernorm", "activation": "relu"},
        {"ffn_hidden": 24},
    ],
    ids=["no-qkv-bias-exact-gelu", "tied-torch-layernorm-relu", "ffn_hidden"],
)
@pytest.mark.slow
def test_toolkit_model_exports_exactly(tmp_path, overrides):
    """A model trained here (no qkv biases: exported as zeros) gives the same logits in
    transformers."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    torch.manual_seed(0)
    ours = build_model(tiny_config(**overrides))
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    export_hf_gpt2(ours, tmp_path / "out")
    saved = json.loads((tmp_path / "out/config.json").read_text())
    assert saved["model_type"] == "gpt2" and saved["architectures"] == ["GPT2LMHeadModel"]
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    x = ids(60, 16)
    assert (hf_logits(back, x) - our_logits(ours, x)).abs().max() <= 1e-4


def test_export_refuses_what_gpt2_cannot_represent(tmp_path):
    model = build_model(tiny_config(norm="rmsnorm", positional="rope"))
    with pytest.raises(ComponentError, match=r"norm rmsnorm.*positional rope") as err:
        export_hf_gpt2(model, tmp_path / "out")
    assert "\n" not in str(err.value)
    with pytest.raises(ComponentError, match="rmsnorm"):
        export_book(model, tmp_path / "book.pth")
    qk = build_model(tiny_config(attention={"name": "sdpa", "qk_norm": True}))
    with pytest.raises(ComponentError, match="qk_norm"):
        export_hf_gpt2(qk, tmp_path / "out")
    with pytest.raises(ComponentError, match="activation relu"):  # the book has GELU only
        export_book(build_model(tiny_config(activation="relu")), tmp_path / "book.pth")
    assert not (tmp_path / "out").exists() and not (tmp_path / "book.pth").exists()


# -- the book's layout --------------------------------------------------------------------------
def book_names(n_layers: int, qkv_bias: bool) -> set[str]:
    names = {"tok_emb.weight", "pos_emb.weight", "final_norm.scale", "final_norm.shift"}
    names.add("out_head.weight")
    for i in range(n_layers):
        b = f"trf_blocks.{i}."
        for part in ("W_query", "W_key", "W_value"):
            names.add(b + f"att.{part}.weight")
            if qkv_bias:
                names.add(b + f"att.{part}.bias")
        names |= {b + "att.out_proj.weight", b + "att.out_proj.bias", b + "att.mask"}
        names |= {b + f"ff.layers.{j}.{w}" for j in (0, 2) for w in ("weight", "bias")}
        names |= {b + f"norm{j}.{w}" for j in (1, 2) for w in ("scale", "shift")}
    return names


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_book_round_trip(tmp_path, qkv_bias):
    torch.manual_seed(0)
    ours = build_model(tiny_config(qkv_bias=qkv_bias))
    book = export_book(ours, tmp_path / "model.pth")
    assert book == {
        "vocab_size": 60,
        "context_length": 16,
        "emb_dim": 16,
        "n_heads": 2,
        "n_layers": 2,
        "drop_rate": 0.0,
        "qkv_bias": qkv_bias,
    }
    saved = torch.load(tmp_path / "model.pth", weights_only=True)
    assert set(saved) == book_names(2, qkv_bias)
    mask = saved["trf_blocks.1.att.mask"]
    assert torch.equal(mask, torch.triu(torch.ones(16, 16), diagonal=1))
    assert saved["trf_blocks.0.ff.layers.0.weight"].shape == (64, 16)
    assert saved["trf_blocks.0.ff.layers.2.weight"].shape == (16, 64)
    config, state = import_book(tmp_path / "model.pth", n_heads=2, drop_rate=0.0)
    assert config.qkv_bias == qkv_bias and not config.tie_embeddings
    back = model_from_state(config, state)
    x = ids(60, 16)
    assert torch.equal(our_logits(back, x), our_logits(ours, x))


def test_book_export_of_a_tied_model_writes_the_head_as_a_copy(tmp_path):
    ours = build_model(tiny_config(tie_embeddings=True, norm="torch-layernorm"))
    export_book(ours, tmp_path / "model.pth")
    saved = torch.load(tmp_path / "model.pth", weights_only=True)
    assert torch.equal(saved["out_head.weight"], saved["tok_emb.weight"])
    assert "trf_blocks.0.norm1.scale" in saved and "trf_blocks.0.norm1.weight" not in saved
    config, state = import_book(tmp_path / "model.pth", n_heads=2)
    x = ids(60, 16)
    assert torch.allclose(our_logits(model_from_state(config, state), x), our_logits(ours, x))


def test_book_n_heads_from_gpt2_widths_or_the_argument(tmp_path):
    assert [infer_n_heads(w) for w in (768, 1024, 1280, 1600, 100)] == [12, 16, 20, 25, None]
    # A gpt2-small-wide book state dict (tiny vocabulary, context and depth, zeros).
    wide = ModelConfig(vocab_size=3, context_length=2, emb_dim=768, n_heads=12, n_layers=1)
    with torch.device("meta"):
        shapes = {k: t.shape for k, t in build_model(wide).state_dict().items()}
    torch.save({k: torch.zeros(s) for k, s in shapes.items()}, tmp_path / "wide.pth")
    config, _ = import_book(tmp_path / "wide.pth")
    assert (config.n_heads, config.emb_dim, config.n_layers, config.qkv_bias) == (12, 768, 1, False)

    export_book(build_model(tiny_config()), tmp_path / "tiny.pth")
    with pytest.raises(DataError, match="--n-heads"):
        import_book(tmp_path / "tiny.pth")
    with pytest.raises(DataError, match="not divisible"):
        import_book(tmp_path / "tiny.pth", n_heads=3)
    assert import_book(tmp_path / "tiny.pth", n_heads=4)[0].n_heads == 4
    for rate in (float("nan"), 1.0, -0.1):  # what the CLI's --drop-rate refuses, from Python
        with pytest.raises(DataError, match=r"model.drop_rate must be in \[0, 1\)"):
            import_book(tmp_path / "tiny.pth", n_heads=4, drop_rate=rate)


def test_book_training_checkpoint_and_compiled_names(tmp_path):
    """The book's {"model_state_dict", "optimizer_state_dict"} file, names from torch.compile."""
    ours = build_model(tiny_config())
    export_book(ours, tmp_path / "model.pth")
    state = torch.load(tmp_path / "model.pth", weights_only=True)
    state = {f"_orig_mod.{k}": v for k, v in state.items()}
    torch.save({"model_state_dict": state, "optimizer_state_dict": {}}, tmp_path / "both.pth")
    _, imported = import_book(tmp_path / "both.pth", n_heads=2)
    assert torch.equal(imported["out_head.weight"], ours.out_head.weight)


# -- bad inputs ---------------------------------------------------------------------------------
def test_bad_hf_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        import_hf_gpt2(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"config\.json not found"):
        import_hf_gpt2(tmp_path / "empty")
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(DataError, match="not 'gpt2'"):
        import_hf_gpt2(other)
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2", **TINY}))
    with pytest.raises(DataError, match=r"no model\.safetensors or pytorch_model\.bin"):
        import_hf_gpt2(other)
    (other / "config.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read"):
        import_hf_gpt2(other)

    folder = save_hf(hf_model(), tmp_path / "hf")
    good = json.loads((folder / "config.json").read_text())
    for change, error, match in [
        ({"activation_function": "silu"}, ComponentError, "activation_function 'silu'"),
        ({"n_inner": 0}, ComponentError, "n_inner 0"),
        ({"n_positions": 32}, DataError, r"wpe.weight has shape \(64, 32\).*\(32, 32\)"),
        ({"n_layer": 3}, DataError, "holds 2 transformer blocks"),
        ({"n_embd": 30, "n_head": 4}, DataError, "not divisible"),
        ({"tie_word_embeddings": "yes"}, DataError, "tie_word_embeddings"),
    ]:
        (folder / "config.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(error, match=match) as err:
            import_hf_gpt2(folder)
        assert "\n" not in str(err.value)
    (folder / "config.json").write_text(json.dumps(good))
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a complete safetensors file"):
        import_hf_gpt2(folder)


def test_untied_hf_folder_without_head(tmp_path):
    hf = hf_model()
    folder = save_hf(hf, tmp_path / "hf")  # tied: the file has no lm_head.weight
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    with pytest.raises(DataError, match=r"lacks lm_head\.weight"):
        import_hf_gpt2(folder)


def test_bad_book_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        import_book(tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(DataError, match="cannot read"):
        import_book(tmp_path / "text.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(DataError, match="does not hold a state dict"):
        import_book(tmp_path / "list.pth")
    torch.save({"layer.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(DataError, match="not a state dict of the book's GPTModel"):
        import_book(tmp_path / "other.pth")
    export_book(build_model(tiny_config()), tmp_path / "model.pth")
    state = torch.load(tmp_path / "model.pth", weights_only=True)
    state["trf_blocks.0.ff.layers.0.weight"] = torch.zeros(63, 16)
    torch.save(state, tmp_path / "bad_shape.pth")
    with pytest.raises(DataError, match=r"ff.layers.0.weight has shape \(63, 16\)"):
        import_book(tmp_path / "bad_shape.pth", n_heads=2)
    del state["trf_blocks.1.norm2.shift"]
    torch.save(state, tmp_path / "missing_one.pth")
    with pytest.raises(DataError, match=r"lacks tensors.*norm2\.shift"):
        import_book(tmp_path / "missing_one.pth", n_heads=2)
    save_checkpoint(tiny_config(), build_model(tiny_config()).state_dict(), tmp_path / "t.pt")
    with pytest.raises(DataError, match="already a toolkit checkpoint"):
        import_book(tmp_path / "t.pt")


def test_load_imported_is_strict():
    config = tiny_config()
    state = build_model(config).state_dict()
    del state["final_norm.shift"]
    with pytest.raises(DataError, match=r"final_norm\.shift"):
        model_from_state(config, state)


# -- frugal reading -----------------------------------------------------------------------------
def test_safetensors_are_read_tensor_by_tensor_without_torch_load(tmp_path, monkeypatch):
    folder = save_hf(hf_model(), tmp_path / "hf")
    import safetensors

    opened = []
    real_open = safetensors.safe_open

    class Spy:
        def __init__(self, *args, **kwargs):
            self.inner = real_open(*args, **kwargs)
            self.read = []
            opened.append(self)

        def __enter__(self):
            self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def keys(self):
            return self.inner.keys()

        def get_tensor(self, name):
            self.read.append(name)
            return self.inner.get_tensor(name)

    def no_torch_load(*args, **kwargs):
        raise AssertionError("torch.load must not read a safetensors folder")

    monkeypatch.setattr(hf_gpt2, "safe_open", Spy)
    monkeypatch.setattr(torch, "load", no_torch_load)
    config, state = import_hf_gpt2(folder)
    (spy,) = opened
    assert len(spy.read) == len(set(spy.read)) == 2 + 2 + 12 * 2  # each tensor once
    assert len(state) == len(build_model(config).state_dict())


def test_pytorch_model_bin_is_memory_mapped(tmp_path, monkeypatch):
    hf = hf_model()
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", **TINY}))
    torch.save(hf.state_dict(), folder / "pytorch_model.bin")
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    import_hf_gpt2(folder)
    assert calls == [{"weights_only": True, "mmap": True, "map_location": "cpu"}]


# -- toolkit checkpoints and the commands -------------------------------------------------------
def test_saved_checkpoint_loads_with_the_toolkit(tmp_path, plugins):
    config, state = import_hf_gpt2(save_hf(hf_model(), tmp_path / "hf"))
    path = save_checkpoint(config, state, tmp_path / "sub" / "gpt2.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["gpt2.pt"]  # no temp file left
    assert read_checkpoint(path)["config"]["norm"] == {"name": "layernorm", "eps": 1e-5}
    x = ids()
    ours = model_from_state(config, state)
    assert torch.equal(our_logits(load_model(path, plugins), x), our_logits(ours, x))


def test_import_and_export_commands(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    hf = hf_model(vocab_size=257)
    folder = save_hf(hf, tmp_path / "hf")
    out = tmp_path / "new" / "gpt.pt"
    argv = ["import", "--format", "hf-gpt2", str(folder), "--out", str(out)]
    assert cli_main([*argv, "--tokenizer", "bytes"]) == 0
    assert "parameters" in capsys.readouterr().out
    assert read_checkpoint(out)["tokenizer"] == "bytes"
    assert cli_main(argv) == 2
    assert capsys.readouterr().err.strip().endswith("exists; pass --force to overwrite it")
    assert cli_main([*argv, "--force"]) == 0

    assert cli_main(["export", "--format", "hf-gpt2", str(out), "--out", str(tmp_path / "e")]) == 0
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "e").eval()
    x = ids(257)
    assert (hf_logits(back, x) - hf_logits(hf, x)).abs().max() <= 1e-4
    assert cli_main(["export", "--format", "hf-gpt2", str(out), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "already holds config.json, model.safetensors; pass --force" in err

    book = tmp_path / "book" / "model.pth"
    assert cli_main(["export", "--format", "book", str(out), "--out", str(book)]) == 0
    assert '"n_heads": 2' in capsys.readouterr().out
    argv = ["import", "--format", "book", str(book), "--out", str(tmp_path / "b.pt")]
    assert cli_main(argv) == 2
    assert "--n-heads" in capsys.readouterr().err
    assert cli_main([*argv, "--n-heads", "2"]) == 0


def test_command_errors_are_one_line(tmp_path, capsys):
    cases = [
        [
            "import",
            "--format",
            "hf-gpt2",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "x.pt"),
        ],
        ["import", "--format", "book", str(tmp_path), "--out", str(tmp_path / "x.pt")],
        ["import", "--format", "hf-gpt2", str(tmp_path), "--out", str(tmp_path)],
        ["export", "--format", "book", str(tmp_path / "missing"), "--out", str(tmp_path / "b.pth")],
        ["export", "--format", "book", str(tmp_path), "--out", str(tmp_path / "b.pth")],
    ]
    for argv in cases:
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("ablate: error: ") and err.count("\n") == 1, err
    rms = tmp_path / "rms.pt"
    save_checkpoint(
        tiny_config(norm="rmsnorm"), build_model(tiny_config(norm="rmsnorm")).state_dict(), rms
    )
    assert cli_main(["export", "--format", "hf-gpt2", str(rms), "--out", str(tmp_path / "o")]) == 2
    assert "cannot represent norm rmsnorm" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli_main(["import", "--format", "llama", str(tmp_path), "--out", "x.pt"])
    assert exit_.value.code == 2


def test_building_the_parser_imports_no_heavy_library():
    """Every `ablate` command builds the whole parser first: torch, pandas and lm-eval load
    only in the commands that use them."""
    code = (
        "import sys; from toolkit.cli import build_parser; build_parser(); "
        "print([m for m in ('torch', 'pandas', 'lm_eval') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_a_pickle_of_code_is_refused_in_one_line_without_a_warning(tmp_path, capsys, recwarn):
    evil = tmp_path / "evil.pt"
    with evil.open("wb") as f:
        pickle.dump(os.system, f, protocol=2)  # unpickled, it would be a way to run commands
    with pytest.raises(DataError, match=r"holds pickled Python objects .* never unpickles"):
        read_checkpoint(evil)
    assert cli_main(["import", "--format", "book", str(evil), "--out", str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "never unpickles" in err and "Warning" not in err
    assert not [w for w in recwarn if "pickle" in str(w.message)]
    with evil.open("wb") as f:
        pickle.dump(os.system, f, protocol=4)  # a protocol torch cannot even parse: refused too
    with pytest.raises(DataError, match="corrupt or not a toolkit checkpoint"):
        read_checkpoint(evil)

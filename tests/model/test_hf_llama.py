"""Export to transformers' Llama layout: modern variants load in LlamaForCausalLM (Qwen3ForCausalLM
with qk_norm) with the toolkit's logits, and what neither can represent is refused by name."""

from __future__ import annotations

import json

import pytest
import torch

from toolkit.api.manager import Plugins
from toolkit.cli import main
from toolkit.errors import ComponentError
from toolkit.model.checkpoint import save_checkpoint
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model
from toolkit.model.hf_llama import export_hf_llama, llama_problems, rope_pairs_halved

transformers = pytest.importorskip("transformers")

PLUGINS = Plugins(autoload=False)
LLAMA_LIKE = dict(
    vocab_size=61,
    context_length=24,
    emb_dim=32,
    n_heads=4,
    n_layers=2,
    drop_rate=0.0,
    norm="rmsnorm",
    activation="swiglu",
    positional="rope",
    bias=False,
)


def random_model(**overrides):
    torch.manual_seed(3)
    model = build_model(ModelConfig(**{**LLAMA_LIKE, **overrides}), PLUGINS).eval()
    with torch.no_grad():  # norms' gains away from 1, so a mixed-up norm would show
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or "final" in name:
                p.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize(
    "overrides",
    [
        {"attention": "sdpa", "tie_embeddings": True},
        {"attention": {"name": "gqa", "n_kv_heads": 2}, "tie_embeddings": False},
        {"attention": "mqa", "positional": {"name": "rope", "theta": 500.0}},
        {"attention": "multihead", "norm": {"name": "rmsnorm", "eps": 1e-6}, "ffn_hidden": 40},
    ],
    ids=["sdpa-tied", "gqa-untied", "mqa-theta", "multihead-eps-hidden"],
)
def test_a_modern_variant_loads_in_llama_with_the_same_logits(tmp_path, overrides):
    model = random_model(**overrides)
    export_hf_llama(model, tmp_path / "hf")
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    _same_logits(model, hf, tmp_path)


@pytest.mark.parametrize(
    "attention", [{"name": "sdpa", "qk_norm": True}, {"name": "gqa", "qk_norm": True}]
)
def test_the_modern_recipe_with_qk_norm_loads_as_qwen3_with_the_same_logits(tmp_path, attention):
    model = random_model(attention=attention, tie_embeddings=False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("q_norm.weight") or name.endswith("k_norm.weight"):
                p.uniform_(0.5, 1.5)  # a gain in the wrong order would show
    export_hf_llama(model, tmp_path / "hf")
    hf = transformers.Qwen3ForCausalLM.from_pretrained(tmp_path / "hf").eval()
    _same_logits(model, hf, tmp_path)


def _same_logits(model, hf, tmp_path) -> None:
    idx = torch.randint(0, model.config.vocab_size, (2, model.config.context_length))
    with torch.no_grad():
        ours, theirs = model(idx), hf(idx).logits
    assert (ours - theirs).abs().max() <= 1e-4
    config = json.loads((tmp_path / "hf/config.json").read_text())
    assert config["tie_word_embeddings"] is model.config.tie_embeddings


def test_rope_rows_are_reordered_within_each_head_only():
    w = torch.arange(2 * 4 * 3, dtype=torch.float32).view(8, 3)  # 2 heads of head_dim 4
    out = rope_pairs_halved(w, n_heads=2, head_dim=4)
    assert out[:, 0].tolist() == [0, 6, 3, 9, 12, 18, 15, 21]


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"activation": "gelu"}, "activation gelu"),
        ({"norm": "layernorm"}, "norm layernorm"),
        ({"positional": "learned"}, "positional learned"),
        ({"positional": {"name": "rope", "fraction": 0.5}}, "positional rope(fraction=0.5)"),
        ({"bias": True}, "biases"),
        ({"activation": "geglu"}, "activation geglu"),
        ({"attention": "sliding-window"}, "attention sliding-window"),
        ({"attention": {"name": "sdpa", "sinks": True}}, "attention sdpa(sinks=true)"),
        ({"norm_placement": "post"}, "norm_placement 'post'"),
        ({"logit_softcap": 30.0}, "logit_softcap 30"),
    ],
)
def test_what_llama_cannot_represent_is_named(tmp_path, overrides, named):
    config = ModelConfig(**{**LLAMA_LIKE, **overrides})
    assert any(named in p for p in llama_problems(config))
    with pytest.raises(ComponentError, match="Llama cannot represent") as info:
        export_hf_llama(build_model(config, PLUGINS), tmp_path / "hf")
    assert named in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "hf").exists()


def test_the_cli_exports_a_checkpoint_and_refuses_a_gpt2_variant(tmp_path, capsys):
    model = random_model(attention="sdpa")
    save_checkpoint(model.config, model.state_dict(), tmp_path / "model.pt")
    assert (
        main(
            [
                "export",
                str(tmp_path / "model.pt"),
                "--format",
                "hf-llama",
                "--out",
                str(tmp_path / "hf"),
            ]
        )
        == 0
    )
    assert "(LlamaForCausalLM.from_pretrained)" in capsys.readouterr().out
    assert (tmp_path / "hf/model.safetensors").is_file()
    qwen = random_model(attention={"name": "sdpa", "qk_norm": True})
    save_checkpoint(qwen.config, qwen.state_dict(), tmp_path / "qwen.pt")
    argv = ["export", str(tmp_path / "qwen.pt"), "--format", "hf-llama", "--out"]
    assert main([*argv, str(tmp_path / "hf3")]) == 0
    assert "(Qwen3ForCausalLM.from_pretrained)" in capsys.readouterr().out  # what it wrote
    gpt2 = build_model(
        ModelConfig(vocab_size=61, context_length=8, emb_dim=16, n_heads=2, n_layers=1), PLUGINS
    )
    save_checkpoint(gpt2.config, gpt2.state_dict(), tmp_path / "gpt2.pt")
    code = main(
        ["export", str(tmp_path / "gpt2.pt"), "--format", "hf-llama", "--out", str(tmp_path / "no")]
    )
    err = capsys.readouterr().err
    assert code != 0 and "Llama cannot represent" in err and "Traceback" not in err
    assert not (tmp_path / "no").exists()  # refused: no empty folder left
    # A run folder's config.json is the run's record: never exported over, even with --force.
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text("{}")
    argv = ["export", str(tmp_path / "model.pt"), "--format", "hf-llama", "--out", str(run)]
    assert main([*argv, "--force"]) == 2
    assert "is a run folder; export into a folder of its own" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["summary.json"]


def test_a_rope_turning_all_of_each_head_is_llamas_whatever_its_record_says():
    whole = ModelConfig(**{**LLAMA_LIKE, "positional": {"name": "rope", "fraction": 1.0}})
    assert llama_problems(whole) == []

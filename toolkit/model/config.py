"""What a GPT is made of, as plain data: ModelConfig (one field per size, dropout site and
component choice), the presets, and the component slots. torch-free, so specs and the command
line can describe models without importing torch; `gpt.py` builds them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from toolkit.api.registry import Choice, suggest
from toolkit.errors import ComponentError


@dataclass
class ModelConfig:
    vocab_size: int = 50257  # ids the embedding and head cover; at least the tokenizer's vocab
    context_length: int = 1024  # longest sequence the model sees (learned positions need it)
    emb_dim: int = 768  # width of the residual stream
    n_heads: int = 12  # attention heads; emb_dim must divide evenly among them
    n_layers: int = 12  # transformer blocks
    drop_rate: float = 0.1  # dropout at every site below that is not set on its own; 0 is off
    drop_rate_emb: float | None = None  # after the embeddings (None: drop_rate)
    drop_rate_attn: float | None = None  # on the attention weights (None: drop_rate)
    drop_rate_resid: float | None = None  # on each residual branch (None: drop_rate)
    qkv_bias: bool = False  # biases on the query/key/value projections (GPT-2 has them)
    # Biases anywhere: false removes every linear layer's bias and every norm's shift (Llama),
    # qkv_bias included; true leaves each where its component puts it.
    bias: bool = True
    tie_embeddings: bool = False  # head shares the token embedding matrix (GPT-2) or not (the book)
    # "pre" (GPT-2, the book), "post" (2017 original), "sandwich", "parallel" (GPT-J, PaLM)
    norm_placement: str = "pre"
    attention: Choice = "multihead"
    norm: Choice = "layernorm"
    activation: Choice = "gelu"
    positional: Choice = "learned"
    init: Choice = "default"  # "default": PyTorch's (as the book); "gpt2": normal(0.02), scaled
    # The feed-forward's hidden width; None: 4 x emb_dim (8 x emb_dim / 3 for gated units, which
    # then hold as many parameters). A spec's match_params sets it to match the baseline's size.
    ffn_hidden: int | None = None
    # The head's logits squashed to (-cap, cap) by cap * tanh(logits / cap) (Gemma 2); None: off.
    logit_softcap: float | None = None
    # PaLM's z-loss: this weight x mean(logsumexp(logits)^2) joins the training loss (an
    # auxiliary loss: validation loss stays the cross-entropy alone); 0: off.
    z_loss: float = 0.0

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    def dropout(self, site: str) -> float:
        """The dropout rate at a site ("emb", "attn" or "resid")."""
        rate = getattr(self, f"drop_rate_{site}")
        return self.drop_rate if rate is None else rate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """A config from plain data (a checkpoint's, or the Python API's): `preset` names a
        preset whose sizes come first; every other key must be a field.
        `ModelConfig.from_dict({"preset": "nano", "drop_rate": 0.0})`."""
        values = dict(values)
        name = values.pop("preset", None)
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ComponentError(
                f"a model config has no key {unknown[0]!r}{suggest(unknown[0], allowed)}; "
                f"its keys: preset, {', '.join(allowed)}"
            )
        return preset(name, **values) if name is not None else cls(**values)


# What this toolkit builds: the sizes' upper bounds (each at least 1) and the vocabulary's.
LIMITS = {"context_length": 1 << 20, "emb_dim": 1 << 16, "n_heads": 1 << 10, "n_layers": 1 << 10}
MAX_VOCAB = 1 << 24
DROP_KEYS = ("drop_rate", "drop_rate_emb", "drop_rate_attn", "drop_rate_resid")


def value_problem(m: Any) -> str | None:
    """The first size, vocabulary or dropout rate of a model config (a ModelConfig, or a
    spec's [model]) out of range, in words; None when every one is in range."""
    for key, most in LIMITS.items():
        value = getattr(m, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return f"model.{key} must be at least 1, got {value!r}"
        if value > most:
            return f"model.{key} = {value} is beyond what this toolkit builds (<= {most})"
    vocab = m.vocab_size
    if vocab is not None and not (isinstance(vocab, int) and 1 <= vocab <= MAX_VOCAB):
        return f"model.vocab_size must be between 1 and {MAX_VOCAB}, got {vocab!r}"
    for key in DROP_KEYS:
        rate = getattr(m, key)
        if rate is not None and not (isinstance(rate, int | float) and 0 <= rate < 1):
            return f"model.{key} must be in [0, 1), got {rate}"
    return None


COMPONENT_SLOTS = {
    "attention": "attention",
    "norm": "normalization",
    "activation": "activation",
    "positional": "positional",
    "init": "init",
}
NORM_PLACEMENTS = ("pre", "post", "sandwich", "parallel")

# Architecture presets. GPT-2's are exact (FACTS: 124,439,808 parameters for gpt2-small);
# the small ones train in minutes on a laptop CPU.
PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-small": dict(emb_dim=768, n_layers=12, n_heads=12),
    "gpt2-medium": dict(emb_dim=1024, n_layers=24, n_heads=16),
    "gpt2-large": dict(emb_dim=1280, n_layers=36, n_heads=20),
    "gpt2-xl": dict(emb_dim=1600, n_layers=48, n_heads=25),
    "nano": dict(emb_dim=64, n_layers=2, n_heads=2, context_length=64),
    "micro": dict(emb_dim=128, n_layers=4, n_heads=4, context_length=128),
    "mini": dict(emb_dim=256, n_layers=6, n_heads=8, context_length=256),
}
for _name in ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl"):
    PRESETS[_name].update(
        vocab_size=50257, context_length=1024, qkv_bias=True, tie_embeddings=True, drop_rate=0.1
    )


def preset(name: str, **overrides: Any) -> ModelConfig:
    """`preset("gpt2-small", drop_rate=0.0)` -> ModelConfig with GPT-2 small's sizes."""
    if name not in PRESETS:
        raise ComponentError(
            f"unknown preset {name!r}{suggest(name, PRESETS)}; choose one of: {', '.join(PRESETS)}"
        )
    return replace(ModelConfig(), **{**PRESETS[name], **overrides})

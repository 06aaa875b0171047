"""The GPT skeleton, assembled from registry components. Read it top to bottom.

Shape and wiring are fixed here (token + positional embedding, dropout, blocks of attention
and feed-forward with residual connections and norms placed pre, post, sandwich or parallel,
final norm, LM head with optional logit soft-capping, initialisation); every component
inside is looked up by kind and name once, at build time. There is no indirection in forward()
beyond the modules themselves. Names follow "Build a Large Language Model From Scratch"
(tok_emb, pos_emb, trf_blocks, att, ff, norm1, norm2, final_norm, out_head), so the book's
state dicts line up.

forward_cached() is the same network for generation with a KV cache: a separate method, so
the training forward() has no cache argument or branch. It needs an attention registered with
`kv_cache=True` (GPT.supports_kv_cache); generate.py falls back to forward() otherwise.

Two contracts any module inside the model may honour (toolkit.api.contracts says more):
- auxiliary losses: a module holding `aux_losses` (a dict of name -> scalar tensor, already
  weighted, set by its latest forward in training mode) adds them to the training loss
  (GPT.gather_aux_losses() gathers them; the z-loss is the GPT's own); validation loss never has them;
- active parameters: a module with `active_fraction` (a float) says a token uses that fraction
  of its parameters (a mixture of experts: top_k / n_experts); num_params(active=True) and the
  FLOPs per token count only those.

Not here: the config and presets (config.py), training (toolkit.training), generation
(toolkit.inference), and the components (plugins/).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from toolkit.api.manager import Plugins, load_plugins
from toolkit.api.registry import Choice, split_choice
from toolkit.errors import ComponentError
from toolkit.model.config import COMPONENT_SLOTS, ModelConfig, value_problem


class PreNormBlock(nn.Module):
    """x + drop(att(norm1(x))), then x + drop(ff(norm2(x))): GPT-2's and the book's block."""

    def __init__(self, config: ModelConfig, plugins: Plugins, positional: nn.Module) -> None:
        super().__init__()
        self.norm1 = _build_norm(plugins, config)
        self.att = _build_attention(plugins, config, positional)
        self.norm2 = _build_norm(plugins, config)
        self.ff = _build(plugins, "activation", config.activation, config)
        self.drop_shortcut = nn.Dropout(config.dropout("resid"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, emb_dim) -> same
        x = x + self.drop_shortcut(self.att(self.norm1(x)))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x

    def forward_cached(self, x: torch.Tensor, cache: dict, start: int) -> torch.Tensor:
        """forward() in eval mode for positions start.., the attention using and filling its
        KV cache. Generation only, so no dropout: a call less per branch and step."""
        x = x + self.att.forward_cached(self.norm1(x), cache, start)
        return x + self.ff(self.norm2(x))


class PostNormBlock(PreNormBlock):
    """norm1(x + drop(att(x))), then norm2(x + drop(ff(x))): the 2017 Transformer's block."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop_shortcut(self.att(x)))
        x = self.norm2(x + self.drop_shortcut(self.ff(x)))
        return x

    def forward_cached(self, x: torch.Tensor, cache: dict, start: int) -> torch.Tensor:
        x = self.norm1(x + self.att.forward_cached(x, cache, start))
        return self.norm2(x + self.ff(x))


class SandwichBlock(PreNormBlock):
    """Pre-norm plus a norm on each branch's output before it joins the residual stream
    (Ding et al. 2021, CogView)."""

    def __init__(self, config: ModelConfig, plugins: Plugins, positional: nn.Module) -> None:
        super().__init__(config, plugins, positional)
        self.norm1_out = _build_norm(plugins, config)
        self.norm2_out = _build_norm(plugins, config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_shortcut(self.norm1_out(self.att(self.norm1(x))))
        x = x + self.drop_shortcut(self.norm2_out(self.ff(self.norm2(x))))
        return x

    def forward_cached(self, x: torch.Tensor, cache: dict, start: int) -> torch.Tensor:
        x = x + self.norm1_out(self.att.forward_cached(self.norm1(x), cache, start))
        return x + self.norm2_out(self.ff(self.norm2(x)))


class ParallelBlock(nn.Module):
    """x + drop(att(norm1(x))) + drop(ff(norm1(x))): both branches read the same normalized
    input and join the residual stream together (GPT-J, PaLM); one norm per block."""

    def __init__(self, config: ModelConfig, plugins: Plugins, positional: nn.Module) -> None:
        super().__init__()
        self.norm1 = _build_norm(plugins, config)
        self.att = _build_attention(plugins, config, positional)
        self.ff = _build(plugins, "activation", config.activation, config)
        self.drop_shortcut = nn.Dropout(config.dropout("resid"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        return x + self.drop_shortcut(self.att(h)) + self.drop_shortcut(self.ff(h))

    def forward_cached(self, x: torch.Tensor, cache: dict, start: int) -> torch.Tensor:
        h = self.norm1(x)
        return x + self.att.forward_cached(h, cache, start) + self.ff(h)


BLOCKS = {
    "pre": PreNormBlock,
    "post": PostNormBlock,
    "sandwich": SandwichBlock,
    "parallel": ParallelBlock,
}


class KVCache:
    """What a KV cache holds between generation steps: one dict per block, which that block's
    attention fills with its keys and values (its own layout; the built-in attentions allocate
    buffers of context_length positions once and write them in place), and how many positions
    it holds. Made by GPT.new_cache(); used through GPT.forward_cached()."""

    def __init__(self, n_layers: int) -> None:
        self.layers: list[dict] = [{} for _ in range(n_layers)]
        self.length = 0  # positions 0 .. length-1 are cached


class GPT(nn.Module):
    def __init__(self, config: ModelConfig, plugins: Plugins) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.emb_dim)
        self.pos_emb = _build(plugins, "positional", config.positional, config)
        self.drop_emb = nn.Dropout(config.dropout("emb"))
        block = BLOCKS[config.norm_placement]
        self.trf_blocks = nn.Sequential(
            *[block(config, plugins, self.pos_emb) for _ in range(config.n_layers)]
        )
        # Post-norm blocks already end in a norm; a second one before the head adds nothing.
        self.final_norm = (
            nn.Identity() if config.norm_placement == "post" else _build_norm(plugins, config)
        )
        self.out_head = nn.Linear(config.emb_dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.out_head.weight = self.tok_emb.weight  # one matrix, counted once
        # The attention's registry fact: it has forward_cached(), so generation can cache.
        attention = plugins.registry.get("attention", split_choice(config.attention)[0])
        self.supports_kv_cache = bool(attention.facts.get("kv_cache"))
        self.aux_losses: dict[str, torch.Tensor] = {}  # the z-loss, when config.z_loss > 0

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, vocab_size)."""
        x = self.tok_emb(idx)  # (B, T, emb_dim)
        x = self.pos_emb(x)  # schemes acting inside attention return x unchanged
        x = self.drop_emb(x)
        x = self.trf_blocks(x)
        x = self.final_norm(x)
        logits = self.head(x)  # (B, T, vocab_size)
        if self.config.z_loss:  # training only; an evaluation forward leaves none behind
            self.aux_losses = {}
            if self.training:
                z = torch.logsumexp(logits.float(), dim=-1)
                self.aux_losses = {"z_loss": self.config.z_loss * z.square().mean()}
        return logits

    def __getstate__(self) -> dict:
        """A copy (copy.deepcopy, pickle) leaves the latest z-loss behind: a tensor in one
        step's graph, which torch cannot copy and which belongs to that step alone."""
        return {**super().__getstate__(), "aux_losses": {}}

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The LM head, its logits soft-capped to (-cap, cap) when config.logit_softcap says."""
        logits = self.out_head(x)
        cap = self.config.logit_softcap
        return cap * torch.tanh(logits / cap) if cap else logits

    def gather_aux_losses(self) -> dict[str, torch.Tensor]:
        """Every auxiliary loss the latest training forward left (this model's z-loss and its
        modules' `aux_losses`, those of one name summed over modules): each already weighted,
        to be added to the cross-entropy for training and recorded by name."""
        total: dict[str, torch.Tensor] = {}
        for module in self.modules():
            for name, value in getattr(module, "aux_losses", {}).items():
                total[name] = total[name] + value if name in total else value
        return total

    # -- generation with a KV cache: a separate path, so forward() above stays as it is -------
    def new_cache(self) -> KVCache:
        """An empty KV cache for forward_cached() (needs `supports_kv_cache`)."""
        return KVCache(len(self.trf_blocks))

    def forward_cached(
        self, idx: torch.Tensor, cache: KVCache, start: int, last_only: bool = False
    ) -> torch.Tensor:
        """Token ids (B, T) at positions start .. start+T-1 -> logits (B, T, vocab_size) (only
        the last position's, (B, 1, vocab_size), with last_only), attending also to the
        positions 0 .. start-1 held in `cache`, which then holds start+T. start = 0 refills the
        cache (the prompt, or the cropped window past context_length); otherwise start must be
        cache.length. Inference only: no autograd through the cache, and no dropout (what
        forward() computes in eval mode, where dropout is the identity). Equals
        forward(all ids)[:, start:] in eval mode up to float rounding."""
        if start not in (0, cache.length):
            raise ValueError(f"the cache holds {cache.length} positions; start is {start}")
        x = self.pos_emb(self.tok_emb(idx), start)
        for block, layer in zip(self.trf_blocks, cache.layers, strict=True):
            x = block.forward_cached(x, layer, start)
        cache.length = start + idx.shape[1]
        if last_only and idx.shape[1] > 1:
            x = x[:, -1:]
        x = self.final_norm(x)
        return self.head(x)

    def num_params(self, non_embedding: bool = False, active: bool = False) -> int:
        """Unique parameters (a tied head counted once). non_embedding leaves out the token
        embedding and the positional component's parameters; active counts what one token
        uses (each parameter times its module's `active_fraction`, rounded)."""
        share = active_shares(self) if active else {}
        total = sum(p.numel() * share.get(id(p), 1.0) for p in self.parameters())
        if non_embedding:
            total -= self.tok_emb.weight.numel()
            total -= sum(p.numel() for p in self.pos_emb.parameters())
        return round(total)


def active_shares(model: nn.Module) -> dict[int, float]:
    """id(parameter) -> the fraction of it one token uses, for the parameters of modules with
    an `active_fraction` (nested ones multiply); parameters not listed are used whole."""
    share: dict[int, float] = {}
    for module in model.modules():
        fraction = getattr(module, "active_fraction", None)
        if fraction is None:
            continue
        for p in module.parameters():
            share[id(p)] = share.get(id(p), 1.0) * float(fraction)
    return share


def _build_attention(plugins: Plugins, config: ModelConfig, positional: nn.Module) -> nn.Module:
    """Build the attention component; hand it the positional module when that scheme acts
    inside attention (RoPE rotates queries and keys, ALiBi biases the scores)."""
    att = _build(plugins, "attention", config.attention, config)
    pos_name = split_choice(config.positional)[0]
    if plugins.registry.get("positional", pos_name).facts.get("inside_attention"):
        att.bind_positional(positional)  # checked to exist by check_compatible()
    return att


def _build_norm(plugins: Plugins, config: ModelConfig) -> nn.Module:
    """A norm of the config's kind; with model.bias = false, one without a shift: norms with a
    `bias` option are told so unless the norm's own options say otherwise (those without one,
    RMSNorm's kind, have no shift to drop)."""
    name, options = split_choice(config.norm)
    if not config.bias and "bias" in plugins.registry.get(COMPONENT_SLOTS["norm"], name).options:
        options = {"bias": False, **options}
    return _build(plugins, "norm", {"name": name, **options}, config.emb_dim)


def _build(plugins: Plugins, slot: str, choice: Choice, *args: Any) -> nn.Module:
    name, options = split_choice(choice)
    component = plugins.registry.get(COMPONENT_SLOTS[slot], name)
    module = component.build(*args, **options)
    if not isinstance(module, nn.Module):
        raise ComponentError(
            f"{component.kind} {name!r} (plugin {component.plugin!r}) returned {type(module).__name__}, "
            f"not a torch.nn.Module"
        )
    return module


def build_model(config: ModelConfig | dict[str, Any], plugins: Plugins | None = None) -> GPT:
    """Assemble a GPT from registry components. Honours the current default device, so
    `with torch.device("meta"): build_model(preset("gpt2-xl"))` counts parameters for free."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    if not isinstance(config, ModelConfig):
        raise ComponentError(
            f"build_model takes a ModelConfig or a dict of its fields, got "
            f"{type(config).__name__}; for a preset: build_model({{'preset': 'nano', ...}})"
        )
    problem = value_problem(config)
    if problem is not None:
        raise ComponentError(problem)
    plugins = plugins or load_plugins()
    if config.emb_dim % config.n_heads:
        raise ComponentError(
            f"emb_dim ({config.emb_dim}) must be divisible by n_heads ({config.n_heads})"
        )
    if config.norm_placement not in BLOCKS:
        raise ComponentError(
            f"norm_placement {config.norm_placement!r} is not one of {', '.join(BLOCKS)}"
        )
    check_compatible(config, plugins)
    model = GPT(config, plugins)
    init_name, init_options = split_choice(config.init)
    plugins.registry.get("init", init_name).build(model, config, **init_options)
    return model


def check_compatible(config: ModelConfig, plugins: Plugins) -> None:
    """Reject component combinations that cannot work, naming the ones that would."""
    pos_name = split_choice(config.positional)[0]
    att_name = split_choice(config.attention)[0]
    if plugins.registry.get("positional", pos_name).facts.get("inside_attention"):
        attention = plugins.registry.get("attention", att_name)
        if not attention.facts.get("positional_inside"):
            able = [
                c.name
                for c in plugins.registry
                if c.kind == "attention" and c.facts.get("positional_inside")
            ]
            raise ComponentError(
                f"positional {pos_name!r} acts inside attention, which attention {att_name!r} "
                f"cannot apply; choose an attention that can ({', '.join(able) or 'none'}) or "
                f"a positional scheme acting on the embeddings"
            )


def count_params(
    config: ModelConfig, plugins: Plugins | None = None, active: bool = False
) -> tuple[int, int]:
    """(total, non-embedding) parameters of the model a config builds, without allocating;
    active: those one token uses (GPT.num_params(active=True): a mixture of experts counts
    its top_k experts)."""
    with torch.device("meta"):
        model = build_model(config, plugins)
    return model.num_params(active=active), model.num_params(non_embedding=True, active=active)

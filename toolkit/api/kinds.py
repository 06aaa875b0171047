"""The kinds of component and the contract each kind's members honour: how the engine calls a
factory (its positional arguments; the options are keyword-only), what it must return, the facts
it must register, and a minimal whole plugin module of each kind.

`kinds_markdown()` renders KINDS for the README; `python -m toolkit.api.kinds --readme README.md`
refreshes the README's copy, and tests/api/test_readme_kinds.py runs every example through the
conformance kit. Not here: the registry that holds components (registry.py).
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Kind:
    """A family of interchangeable components and the contract its members honour."""

    name: str
    args: tuple[str, ...]  # what the engine passes a factory positionally, as "name: type"
    returns: str  # what the factory must return, and what that must do
    example: str  # a whole plugin module registering one minimal component of this kind
    required_facts: tuple[str, ...] = ()

    @property
    def call(self) -> str:
        """'factory(dim: int, **options)': how the engine calls a factory of this kind."""
        return f"factory({', '.join([*self.args, '**options'])})"

    @property
    def contract(self) -> str:
        """How the engine calls a factory and what it must return, in one sentence."""
        return f"{self.call} -> {self.returns}"

    @property
    def arg_names(self) -> tuple[str, ...]:
        """('model', 'config') for init: the names of the positional arguments."""
        return tuple(a.split(":")[0] for a in self.args)


# Each example is a whole plugin module, run by tests/api/test_readme_kinds.py through the
# conformance kit, so what README.md shows (kinds_markdown()) is known to work.
KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind(
            "attention",
            ("config: ModelConfig",),
            "nn.Module mapping x (B, T, emb_dim) to "
            "(B, T, emb_dim). Facts: `causal` (required) says whether position t only sees "
            "positions <= t; `positional_inside=True` says the module has "
            "bind_positional(module) and applies that module's rotate(q, k, start) and "
            "score_bias(t_q, t_k, start) (needed for RoPE and ALiBi); `kv_cache=True` says it "
            "has forward_cached(x, cache: dict, start) for generation: x holds positions "
            "start..start+T-1, the dict (the module's own between calls; start=0 refills it) "
            "keeps its keys and values, and the output equals forward() over all positions, "
            "last T rows. With config.bias False (model.bias = false) it holds no bias "
            "parameter",
            '''\
import torch.nn.functional as F
from torch import nn

from toolkit import hookimpl


class OneHeadAttention(nn.Module):
    """Causal attention with a single head as wide as the model"""

    def __init__(self, config):
        super().__init__()
        d, bias = config.emb_dim, config.bias  # model.bias = false: no biases anywhere
        self.qkv = nn.Linear(d, 3 * d, bias=bias and config.qkv_bias)
        self.out = nn.Linear(d, d, bias=bias)

    def forward(self, x):  # (B, T, emb_dim)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.out(F.scaled_dot_product_attention(q, k, v, is_causal=True))


@hookimpl
def register_components(register):
    register("attention", "one-head", OneHeadAttention, causal=True)
''',
            required_facts=("causal",),
        ),
        Kind(
            "normalization",
            ("dim: int",),
            "nn.Module normalizing the last dimension of size dim; one with an additive "
            "shift takes the option `bias: bool = True`, and bias=False (which model.bias = "
            "false passes) builds it without the shift",
            '''\
from torch import nn

from toolkit import hookimpl


def my_layernorm(dim, *, eps: float = 1e-5, bias: bool = True):
    """torch's LayerNorm over the last dimension; bias=False (model.bias = false) drops the shift"""
    return nn.LayerNorm(dim, eps=eps, bias=bias)


@hookimpl
def register_components(register):
    register("normalization", "my-layernorm", my_layernorm)
''',
        ),
        Kind(
            "activation",
            ("config: ModelConfig",),
            "nn.Module, the position-wise "
            "feed-forward block mapping (B, T, emb_dim) to (B, T, emb_dim); its last nn.Linear "
            "is the residual output projection (the gpt2 init scales it) unless it defines "
            "residual_projections() returning the Linear layers that are; with config.bias "
            "False (model.bias = false) it holds no bias parameter",
            '''\
from torch import nn

from toolkit import hookimpl


def relu_feed_forward(config, *, hidden_mult: int = 4):
    """Linear, ReLU, Linear: the whole feed-forward block, not just its activation"""
    hidden = hidden_mult * config.emb_dim
    return nn.Sequential(
        nn.Linear(config.emb_dim, hidden, bias=config.bias),  # model.bias = false: none
        nn.ReLU(),
        nn.Linear(hidden, config.emb_dim, bias=config.bias),
    )


@hookimpl
def register_components(register):
    register("activation", "my-relu", relu_feed_forward)
''',
        ),
        Kind(
            "positional",
            ("config: ModelConfig",),
            "nn.Module with forward(x, start=0) adding "
            "position information to token embeddings x (B, T, emb_dim) for positions start.. "
            "start+T-1; its parameters count as embedding parameters. With the fact "
            "`inside_attention=True` forward returns x unchanged and the module provides "
            "rotate(q, k, start=0) -> (q, k) on (B, heads, T, head_dim) tensors and "
            "score_bias(t_q, t_k, start=0) -> (heads, t_q, t_k) tensor or None. With the fact "
            "`any_length=True` it also takes positions past context_length, so the model can "
            "be scored in longer windows than it trained on (`ablate eval --context`)",
            '''\
import torch
from torch import nn

from toolkit import hookimpl


class LearnedPositions(nn.Module):
    """One learned vector per position, added to the token embeddings"""

    def __init__(self, config):
        super().__init__()
        self.table = nn.Embedding(config.context_length, config.emb_dim)

    def forward(self, x, start=0):  # x: (B, T, emb_dim), positions start..start+T-1
        positions = torch.arange(start, start + x.shape[1], device=x.device)
        return x + self.table(positions)


@hookimpl
def register_components(register):
    register("positional", "my-learned", LearnedPositions)
''',
        ),
        Kind(
            "init",
            ("model: nn.Module", "config: ModelConfig"),
            "None, initialising the "
            "freshly built model's parameters in place (under the run's seed)",
            '''\
from torch import nn

from toolkit import hookimpl


def normal_init(model, config, *, std: float = 0.02):
    """Every matrix and embedding from N(0, std); vectors (biases, norms) as built"""
    for p in model.parameters():
        if p.dim() >= 2:
            nn.init.normal_(p, std=std)


@hookimpl
def register_components(register):
    register("init", "my-normal", normal_init)
''',
        ),
        Kind(
            "optimizer",
            ("model: nn.Module", "config: TrainConfig"),
            "torch.optim.Optimizer over the model's trainable parameters (the model is a GPT in "
            "a run; the conformance checks also pass a plain nn.Linear), each in exactly one "
            'parameter group, every group with its own "lr" (the schedule multiplies it at each '
            "step), and state_dict() / load_state_dict() restoring it exactly, so a resumed run "
            "continues bit for bit. config (toolkit.api.contracts.TrainConfig) holds train.lr "
            "(the peak), betas, weight_decay, weight_decay_on and the device; "
            "config.decay_groups(params) splits parameters as train.weight_decay_on says. An "
            "optimizer whose weights to evaluate differ from those it trains (schedule-free's "
            "average) adds eval() and train() methods, which put each set in the parameters "
            "(toolkit.api.contracts.EvaluationWeights): the run evaluates, samples from and "
            "saves the eval() weights. With the fact `schedules=(...)` (schedule names) it is "
            "meant to run with those schedules only, and a spec pairing it with another gets a "
            "warning at validation (schedule-free declares constant)",
            '''\
import torch

from toolkit import hookimpl


def my_sgd(model, config, *, momentum: float = 0.0):
    """SGD at train.lr, weight decay where train.weight_decay_on says"""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(config.decay_groups(params), lr=config.lr, momentum=momentum)


@hookimpl
def register_components(register):
    register("optimizer", "my-sgd", my_sgd)
''',
        ),
        Kind(
            "schedule",
            ("step: int", "total_steps: int"),
            "the multiplier (a finite float >= 0) of every parameter group's peak lr at the "
            "0-based optimizer step `step` of a run of total_steps, for step 0 .. total_steps "
            "(the last after the final update); a pure function: the same arguments, the same "
            "number. Options named warmup_steps and min_lr_ratio get train.warmup_steps and "
            "train.min_lr_ratio unless the schedule's table sets them",
            '''\
from toolkit import hookimpl


def my_exponential(step, total_steps, *, warmup_steps: int = 0, final: float = 0.01):
    """Linear warm-up, then exponential decay to `final` x the peak at the end"""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return final ** min(1.0, progress)


@hookimpl
def register_components(register):
    register("schedule", "my-exponential", my_exponential)
''',
        ),
        Kind(
            "sampler",
            (),
            "callable(logits (B, V), generator) -> next token ids (B, 1), "
            "never changing the logits; optionally probs(logits) -> the (B, V) distribution it "
            "draws from",
            '''\
import torch

from toolkit import hookimpl


def my_temperature(*, temperature: float = 1.0):
    """Sample from softmax(logits / temperature)"""

    def sample(logits, generator):  # (B, V) -> (B, 1)
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator)

    return sample


@hookimpl
def register_components(register):
    register("sampler", "my-temperature", my_temperature)
''',
        ),
        Kind(
            "tokenizer",
            (),
            "Tokenizer with name, vocab_size, eot_id, encode(text), "
            "decode(ids), token_byte_lengths() and fingerprint. One learned from data sets "
            "needs_training = True and provides train(texts), training_config, state() and "
            "load_state(state); the data pipeline trains it on the training split only. "
            "newline_splits = True lets the pipeline cut long documents after a newline "
            "between two non-space characters and encode the parts in parallel (say it "
            "only if such a cut never changes the ids)",
            '''\
import numpy as np

from toolkit import hookimpl


class MyBytes:
    """UTF-8 bytes, plus one end-of-text id"""

    name, vocab_size, eot_id, fingerprint = "my-bytes", 257, 256, "my-bytes-v1"

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def token_byte_lengths(self):  # bytes each id stands for
        return np.array([1] * 256 + [0])


@hookimpl
def register_components(register):
    register("tokenizer", "my-bytes", MyBytes)
''',
        ),
        Kind(
            "corpus",
            (),
            "Corpus with documents() yielding (name, text) pairs and a description; "
            "or, for token ids already made, pretokenized = True with train, val (paths or "
            "globs of uint16 shards) and layout, as the built-in `tokens` corpus",
            '''\
from toolkit import hookimpl


class Repeated:
    """One text, repeated as `copies` documents"""

    def __init__(self, *, text: str = "Hello, world.", copies: int = 3):
        self.description = f"{copies} copies of {text!r}"
        self.texts = [text] * copies

    def documents(self):
        for i, text in enumerate(self.texts):
            yield f"copy-{i}", text


@hookimpl
def register_components(register):
    register("corpus", "repeated", Repeated)
''',
        ),
        Kind(
            "executor",
            (),
            "Executor with prepare(jobs, plugins), checking before any "
            "write (raise ToolkitError), and execute(jobs, sweep) yielding (job, summary) once "
            "per toolkit.sweep.jobs.RunJob as runs finish, training each with "
            "toolkit.sweep.jobs.run_job(job) (see toolkit/sweep/jobs.py)",
            '''\
from toolkit import hookimpl
from toolkit.sweep.jobs import run_job


class OneByOne:
    """Every run in this process, one after another"""

    def prepare(self, jobs, plugins):
        pass  # nothing to check before the sweep writes anything

    def execute(self, jobs, sweep):
        for job in jobs:
            yield job, run_job(job, sweep)


@hookimpl
def register_components(register):
    register("executor", "one-by-one", OneByOne)
''',
        ),
    ]
}


# -- the kinds in README.md ----------------------------------------------------------------------
README_START = "<!-- kinds:start: generated from KINDS (toolkit/api/kinds.py) by `python -m toolkit.api.kinds --readme` -->"
README_END = "<!-- kinds:end -->"


def kinds_markdown() -> str:
    """Every kind as Markdown: what the engine calls its factory with, what it must return,
    and a whole plugin module registering a minimal one."""
    parts = []
    for kind in KINDS.values():
        text = f"**{kind.name}**: `{kind.call}` returns {kind.returns}."
        parts.append(textwrap.fill(text, 100, break_long_words=False, break_on_hyphens=False))
        parts.append(f"```python\n{kind.example.strip()}\n```")
    return "\n\n".join(parts) + "\n"


def with_kinds(readme: str) -> str:
    """The README text with its block between README_START and README_END (markers included)
    replaced by kinds_markdown(); ValueError when it has no such block."""
    start, end = readme.find("<!-- kinds:start"), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"no {README_START!r} ... {README_END!r} block to fill")
    block = f"{README_START}\n\n{kinds_markdown()}\n{README_END}"
    return readme[:start] + block + readme[end + len(README_END) :]


def _main(argv: list[str]) -> int:
    """python -m toolkit.api.kinds --readme [README.md]: refresh the README's kinds."""
    if not argv or argv[0] != "--readme" or len(argv) > 2:
        print("usage: python -m toolkit.api.kinds --readme [README.md]", file=sys.stderr)
        return 2
    path = Path(argv[1] if len(argv) > 1 else "README.md")
    text = path.read_text(encoding="utf-8")
    updated = with_kinds(text)
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    print(f"{path}: the kinds {'updated' if updated != text else 'were up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

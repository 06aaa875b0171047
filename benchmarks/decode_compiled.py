"""Would compiling the one-token decoding step pay? `python benchmarks/decode_compiled.py
[--rounds 4] [--tokens 256]`.

The remedy issue 20 names for a decoding step's per-operation overhead is to compile it. A
compiled step needs fixed shapes, which the toolkit's cache (attending to the filled prefix,
positions as Python ints) does not have, so this builds one that does, from the benchmark
model's own modules (benchmarks/generation_vs.py's config: sdpa, learned positions, LayerNorm,
GELU): per layer a static key and value buffer of context_length positions written with
index_copy_ at a position held in a tensor, and every query attending to the whole buffer
through a mask of the positions filled. It times greedy decoding, one prompt, `--tokens` new
ids, three ways, round by round in turn: the toolkit's own cached path (forward_cached, as
generate() steps it, on the threads it is given), that static step in eager mode, and the
static step through torch.compile (fullgraph, static shapes, inductor's freezing and C++
wrapper: the settings that gave the fastest step here). It prints tokens/s (median over
rounds), the compile time, and whether all three decode the same ids. Not a test, and not a
second implementation in the toolkit: a measurement of what compiling would give.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.generation_vs import CONFIG  # noqa: E402
from toolkit.api.manager import Plugins  # noqa: E402
from toolkit.model.config import ModelConfig  # noqa: E402
from toolkit.model.gpt import GPT, build_model  # noqa: E402


class StaticStep(nn.Module):
    """One position through the model with fixed shapes: token (1, 1), position (1,) as a
    tensor, keys and values in static (1, heads, context, head_dim) buffers per layer."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model
        for block in model.trf_blocks:
            att = block.att
            stacked = torch.cat([att.W_query.weight, att.W_key.weight, att.W_value.weight])
            att.register_buffer("stacked_qkv", stacked.detach(), persistent=False)

    def forward(self, token, position, keys, values):
        m, c = self.model, self.model.config
        heads, width = c.n_heads, c.emb_dim // c.n_heads
        x = m.tok_emb(token) + m.pos_emb.weight.index_select(0, position)
        filled = (torch.arange(c.context_length) <= position)[None, None, None, :]
        for block, k_cache, v_cache in zip(m.trf_blocks, keys, values, strict=True):
            att, h = block.att, block.norm1(x)
            qkv = F.linear(h, att.stacked_qkv).view(1, 1, 3 * heads, width).transpose(1, 2)
            q, k, v = qkv.split_with_sizes((heads, heads, heads), dim=1)
            k_cache.index_copy_(2, position, k)
            v_cache.index_copy_(2, position, v)
            context = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=filled)
            x = x + att.merge_heads(context, h)
            x = x + block.ff(block.norm2(x))
        return m.head(m.final_norm(x))


def decode_static(step, model: GPT, tokens: int) -> list[int]:
    c = model.config
    shape = (1, c.n_heads, c.context_length, c.emb_dim // c.n_heads)
    keys = [torch.zeros(shape) for _ in range(c.n_layers)]
    values = [torch.zeros(shape) for _ in range(c.n_layers)]
    token, out = torch.zeros(1, 1, dtype=torch.long), []
    with torch.inference_mode():
        for i in range(tokens):
            token = step(token, torch.tensor([i]), keys, values)[:, -1].argmax(-1, keepdim=True)
            out.append(int(token))
    return out


def decode_toolkit(model: GPT, tokens: int) -> list[int]:
    cache, token, out = model.new_cache(), torch.zeros(1, 1, dtype=torch.long), []
    with torch.inference_mode():
        for i in range(tokens):
            logits = model.forward_cached(token, cache, i, last_only=True)
            token = logits[:, -1].argmax(-1, keepdim=True)
            out.append(int(token))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()
    import torch._inductor.config as inductor

    torch.manual_seed(0)
    model = build_model(ModelConfig(**CONFIG), Plugins(autoload=False)).eval()
    static = StaticStep(model).eval()
    inductor.freezing, inductor.cpp_wrapper = True, True
    compiled = torch.compile(static, fullgraph=True, dynamic=False)
    tick = time.perf_counter()
    decode_static(compiled, model, 4)
    compile_s = time.perf_counter() - tick
    ways = {
        "toolkit (forward_cached)": lambda: decode_toolkit(model, args.tokens),
        "static step, eager": lambda: decode_static(static, model, args.tokens),
        "static step, compiled": lambda: decode_static(compiled, model, args.tokens),
    }
    ids = {name: run() for name, run in ways.items()}  # warm-up, and the ids each decodes
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, run in ways.items():
            tick = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - tick)
    print(
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, {args.tokens} new ids, "
        f"median of {args.rounds} rounds; compiling took {compile_s:.1f} s"
    )
    base = statistics.median(seconds["toolkit (forward_cached)"])
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"  {name:<25} {args.tokens / median:7,.0f} tokens/s  x{base / median:.2f}")
    same = all(v == ids["toolkit (forward_cached)"] for v in ids.values())
    print(f"  the same ids all three ways: {same}")


if __name__ == "__main__":
    main()

"""Sampling ablations: vary the sampler over trained models, without retraining, and compare
what they write.

A spec's `[sampling_ablation]` table names the models (run or experiment folders; by default
the spec's own runs, trained first) and the samplers. For each model x sampler x sampling seed,
every one of a fixed set of prompts (windows of the model's validation split, the same for all)
is continued, and the continuations are scored:

- distinct-n (n = 1, 2, 3): unique token n-grams / all token n-grams, pooled over the prompts
  ([1, 2, 1, 2] -> distinct-1 = 2/4, distinct-2 = 2/3);
- repetition: the share of a continuation's token 4-grams that already occurred earlier in the
  same continuation, averaged over prompts;
- mean log-probability (nats/token) of the generated tokens under the model, from its raw
  logits (before any filtering or temperature), and the perplexity of the generated text,
  exp(-mean log-probability).

The prompts (all of prompt_tokens, so no padding) are continued together, in one batched
generate() call per model x sampler x seed, yet each prompt draws with its own torch.Generator,
seeded by prompt_seed(seed, prompt index): its continuation is the one generate() writes for
that prompt alone with that generator (`per_prompt` below), and does not depend on how many
prompts there are or on what the others draw. A sampler drawing with one generator for the
whole batch would not give that: it draws the rows of a batch from one stream of random
numbers, so row r's draws depend on the rows before it. Exact up to float rounding: a batched
matrix product may round a row's logits differently in the last bit from the same row alone
(the tests' tiny models give identical ids), which could only turn a near-tie.

Results land in `<out>/sampling/`: results.csv (one row per model run x sampler x seed),
summary.csv (mean +- std per variant x sampler) and samples.md (texts side by side). Runs of
several experiment folders never pool: both tables then lead with an `experiment` column (the
folder), and summary.csv has a row per experiment x variant x sampler.
Not here: sampling itself (plugins/sampling.py) and generation (generate.py).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from toolkit.api.registry import split_choice
from toolkit.data.resolve import corpus_tokens, holdout_of, run_corpus, run_tokenizer
from toolkit.errors import SpecError
from toolkit.files import write_atomic
from toolkit.inference.generate import generate
from toolkit.model.checkpoint import open_checkpoint
from toolkit.names import label
from toolkit.spec.schema import SamplingAblation

# -- metrics --------------------------------------------------------------------------------


def distinct_n(sequences: list[list[int]], n: int) -> float:
    """Unique n-grams / all n-grams over all sequences: distinct_n([[1, 2, 1, 2]], 2) -> 2/3."""
    grams = [tuple(s[i : i + n]) for s in sequences for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


def repetition(sequence: list[int], n: int = 4) -> float:
    """Share of the sequence's n-grams already seen earlier in it: [1,2,1,2,1,2], n=2 -> 3/5."""
    seen: set[tuple[int, ...]] = set()
    repeats = total = 0
    for i in range(len(sequence) - n + 1):
        gram = tuple(sequence[i : i + n])
        repeats += gram in seen
        total += 1
        seen.add(gram)
    return repeats / total if total else math.nan


# -- drawing per prompt in a batch -----------------------------------------------------------


def prompt_seed(seed: int, prompt: int) -> int:
    """The seed of prompt number `prompt`'s generator under sampling seed `seed`: one of
    independent streams (numpy's SeedSequence), different for every (seed, prompt) pair."""
    return int(np.random.SeedSequence([seed, prompt]).generate_state(1, np.uint64)[0])


def per_prompt(sampler: Any, seed: int, n_prompts: int) -> Any:
    """`sampler` for a batch of n_prompts rows, row r drawn with its own generator seeded by
    prompt_seed(seed, r), so each row gets the ids it would get generated alone with that
    generator. A greedy sampler draws nothing, so it takes the batch as it is."""
    if getattr(sampler, "greedy", False):
        return sampler
    generators = [torch.Generator().manual_seed(prompt_seed(seed, r)) for r in range(n_prompts)]

    def draw(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        rows = [sampler(logits[r : r + 1], g) for r, g in enumerate(generators)]
        return torch.cat(rows)  # (B, 1)

    return draw


# -- running --------------------------------------------------------------------------------


def model_runs(ablation: SamplingAblation, own: list[Path]) -> list[Path]:
    """Run folders to sample from: the named ones (a run folder, or an experiment folder for
    all its finished runs), else the spec's own finished runs."""
    if not ablation.runs:
        return [f for f in own if (f / "checkpoint.pt").is_file()]
    found: list[Path] = []
    for name in ablation.runs:
        path = Path(name).expanduser()
        if (path / "checkpoint.pt").is_file():
            found.append(path)
        elif path.is_dir() and sorted(path.glob("*/seed-*/checkpoint.pt")):
            found += [p.parent for p in sorted(path.glob("*/seed-*/checkpoint.pt"))]
        else:
            raise SpecError(
                f"[sampling_ablation] runs: {name} holds no checkpoint.pt (give a run "
                f"folder or an experiment folder with finished runs)"
            )
    return found


def experiment_of(run: Path) -> str:
    """The experiment folder a run folder belongs to: the one two levels up, where the runner
    writes <experiment>/<variant>/seed-N and experiment.json; a run folder found elsewhere is
    an experiment of its own. runs/s7/base/seed-0 -> 'runs/s7'."""
    folder = run.parent.parent
    return str(folder if (folder / "experiment.json").is_file() else run)


def check_runs(ablation: SamplingAblation, runs: list[Path]) -> None:
    """Before sampling anything: some run to sample from, and every run's context holds a
    prompt and what is written after it (the model scores it all)."""
    if not runs:
        raise SpecError(
            "[sampling_ablation] found no finished run with a checkpoint to sample from"
        )
    need = ablation.prompt_tokens + ablation.max_new_tokens
    for folder in runs:
        context = int(open_checkpoint(folder).config["context_length"])
        if need > context:
            raise SpecError(
                f"[sampling_ablation] prompt_tokens + max_new_tokens = {need} exceeds the "
                f"context of {folder} ({context}); shorten them so the model scores all it wrote"
            )


def run_ablation(
    ablation: SamplingAblation, runs: list[Path], out: Path, plugins: Any, progress: bool = True
) -> pd.DataFrame:
    """Score every model x sampler x seed; write <out>/sampling/*; return the per-run table."""
    check_runs(ablation, runs)
    rows, samples = [], []
    for k, folder in enumerate(runs):
        checkpoint = open_checkpoint(folder)
        config = checkpoint.run
        model = checkpoint.model(plugins).eval()
        tokenizer = run_tokenizer(
            config, plugins, recorded=checkpoint.tokenizer, state=checkpoint.tokenizer_state,
            where=checkpoint.path,
            vocab_size=model.config.vocab_size,
        )  # fmt: skip
        context = model.config.context_length
        data = (config or {}).get("data") or {}
        corpus = plugins.registry.build("corpus", run_corpus(config))
        val = corpus_tokens(corpus, tokenizer, holdout_of(data)).val
        prompts = _prompts(val, ablation.n_prompts, ablation.prompt_tokens)
        variant = (config or {}).get("variant", folder.name)
        model_seed = (config or {}).get("seed")
        if progress:
            print(f"sampling [{k + 1}/{len(runs)}] {variant} seed={model_seed}", file=sys.stderr)
        for choice in ablation.samplers:
            name, options = split_choice(choice)
            sampler = plugins.registry.get("sampler", name).build(**options)
            for seed in ablation.seeds:
                draw = per_prompt(sampler, seed, len(prompts))
                out_ids = generate(model, prompts, ablation.max_new_tokens, draw, context)
                scores = _score(model, out_ids, ablation.prompt_tokens)
                rows.append(
                    {
                        "experiment": experiment_of(folder),
                        "variant": variant,
                        "model_seed": model_seed,
                        "run": str(folder),
                        "sampler": label(choice),
                        "seed": seed,
                        **scores,
                    }
                )
                if seed == ablation.seeds[0] and k == 0:
                    texts = [
                        tokenizer.decode(s[ablation.prompt_tokens :].tolist()) for s in out_ids[:2]
                    ]
                    shown = [tokenizer.decode(p.tolist()) for p in prompts[:2]]
                    samples.append((label(choice), shown, texts))
    table = pd.DataFrame(rows)
    if table["experiment"].nunique() == 1:  # one experiment: its variants name the models
        table = table.drop(columns="experiment")
    folder = out / "sampling"
    write_atomic(folder / "results.csv", table.to_csv(index=False))
    summary = sampler_summary(table)
    write_atomic(folder / "summary.csv", summary.to_csv(index=False))
    write_atomic(folder / "samples.md", _samples_markdown(samples, runs[0]))
    return table


def _prompts(val: Any, n: int, length: int) -> Any:
    """n windows of `length` tokens, evenly spaced over the validation split (fixed)."""
    if len(val) < length:
        raise SpecError(
            f"[sampling_ablation] the validation split ({len(val)} tokens) is shorter "
            f"than prompt_tokens ({length})"
        )
    starts = np.linspace(0, len(val) - length, n).astype(int)
    return torch.tensor(np.stack([np.asarray(val[s : s + length], dtype=np.int64) for s in starts]))


def _score(model: Any, ids: Any, prompt_tokens: int) -> dict[str, float]:
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).float(), dim=-1)  # (B, T, V)
    new = ids[:, prompt_tokens:]  # (B, N)
    # The token at position t is predicted at position t - 1.
    chosen = logp[:, prompt_tokens - 1 : -1].gather(-1, new.unsqueeze(-1)).squeeze(-1)
    mean_logprob = float(chosen.mean())
    seqs = new.tolist()
    return {
        "distinct_1": distinct_n(seqs, 1),
        "distinct_2": distinct_n(seqs, 2),
        "distinct_3": distinct_n(seqs, 3),
        "repetition": float(pd.Series([repetition(s) for s in seqs]).mean()),
        "mean_logprob": mean_logprob,
        "gen_perplexity": math.exp(-mean_logprob),
    }


METRICS = ["distinct_1", "distinct_2", "distinct_3", "repetition", "mean_logprob", "gen_perplexity"]


def sampler_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std per variant x sampler, over model seeds x sampling seeds; per
    experiment x variant x sampler when the table has an experiment column (runs of several
    experiments), as a variant of one experiment is not the same model as its namesake in
    another, and their seeds must not pool."""
    keys = ["experiment", "variant", "sampler"] if "experiment" in table else ["variant", "sampler"]
    grouped = table.groupby(keys, sort=False)[METRICS]
    mean, std = grouped.mean().add_suffix("_mean"), grouped.std(ddof=1).add_suffix("_std")
    n = grouped.size().rename("n")
    return pd.concat([n, mean, std], axis=1).reset_index()


def format_sampler_summary(summary: pd.DataFrame) -> str:
    """A terminal table: mean ± std per variant x sampler (led by the experiment when the
    summary has several)."""
    lines = []
    for _, row in summary.iterrows():
        model = f"{row['experiment']}: {row['variant']}" if "experiment" in row else row["variant"]
        cells = [f"{model} | {row['sampler']} (n={row['n']})"]
        for m in METRICS:
            std = row[f"{m}_std"]
            cells.append(f"{m} {row[f'{m}_mean']:.3f}" + ("" if pd.isna(std) else f"±{std:.3f}"))
        lines.append("  ".join(cells))
    return "sampling ablation (mean ± std over model and sampling seeds):\n" + "\n".join(lines)


def _samples_markdown(samples: list[tuple[str, list[str], list[str]]], run: Path) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", "⏎ ")

    prompts = samples[0][1] if samples else []
    lines = [
        f"# Samples side by side\n\nModel: `{run}`, first sampling seed. Prompts (windows of "
        f"the validation split):\n"
    ]
    lines += [f"{i + 1}. `{cell(p)}`" for i, p in enumerate(prompts)]
    lines += [
        "",
        "| sampler | "
        + " | ".join(f"continuation of prompt {i + 1}" for i in range(len(prompts)))
        + " |",
        "|---|" + "---|" * len(prompts),
    ]
    for name, _, texts in samples:
        lines.append(f"| {name} | " + " | ".join(cell(t) for t in texts) + " |")
    return "\n".join(lines) + "\n"

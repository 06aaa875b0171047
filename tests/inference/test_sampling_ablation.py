"""Sampling ablations: vary the sampler over trained models without retraining."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from toolkit.api.manager import Plugins
from toolkit.cli import main as cli_main
from toolkit.errors import SpecError
from toolkit.inference.generate import generate
from toolkit.inference.sampling_ablation import distinct_n, per_prompt, prompt_seed, repetition
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model
from toolkit.spec.limits import MAX_PROMPTS
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run


def test_metrics_by_hand():
    assert distinct_n([[1, 2, 1, 2]], 1) == 2 / 4
    assert distinct_n([[1, 2, 1, 2]], 2) == 2 / 3
    assert distinct_n([[1, 2], [1, 2]], 2) == 1 / 2  # pooled over continuations
    assert repetition([1, 2, 1, 2, 1, 2], n=2) == 3 / 5
    assert repetition([1, 2, 3, 4, 5], n=4) == 0.0


SAMPLERS = [
    "greedy",
    {"name": "top-k", "k": 5},
    {"name": "temperature", "temperature": 2.0},
    {"name": "top-p", "p": 0.9},
    {"name": "typical", "p": 0.9},
]


@pytest.mark.parametrize("choice", SAMPLERS, ids=lambda c: c if isinstance(c, str) else c["name"])
def test_batched_prompts_draw_what_each_prompt_draws_alone(choice):
    """One batched generate() over the prompts writes, row by row, what generate() writes for
    each prompt alone with its own seeded generator (past the context too, where the cache is
    refilled each step)."""
    plugins = Plugins(autoload=False)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=40, context_length=8, emb_dim=16, n_heads=4, n_layers=2)
    model = build_model(config, plugins)
    sampler = plugins.registry.build("sampler", choice)
    prompts = torch.randint(0, 40, (4, 5), generator=torch.Generator().manual_seed(1))
    batched = generate(model, prompts, 12, per_prompt(sampler, 3, len(prompts)), 8)
    alone = [
        generate(model, prompts[r : r + 1], 12, sampler, 8, torch.Generator().manual_seed(s))
        for r, s in enumerate(prompt_seed(3, r) for r in range(len(prompts)))
    ]
    assert torch.equal(batched, torch.cat(alone))
    assert len({prompt_seed(seed, r) for seed in range(3) for r in range(4)}) == 12


def ablation_doc(tiny_doc):
    tiny_doc["seeds"] = [0, 1]
    tiny_doc["sampling_ablation"] = {
        "samplers": [
            "greedy",
            {"name": "top-k", "k": 5},
            {"name": "temperature", "temperature": 2.0},
        ],
        "seeds": [0, 1],
        "n_prompts": 3,
        "prompt_tokens": 8,
        "max_new_tokens": 12,
    }
    return tiny_doc


def test_sampling_ablation_scores_every_model_sampler_and_seed(tmp_path, tiny_doc, plugins):
    run(parse_spec(ablation_doc(tiny_doc)), tmp_path, plugins=plugins, progress=False)
    table = pd.read_csv(tmp_path / "sampling/results.csv")
    assert len(table) == 2 * 3 * 2  # model seeds x samplers x sampling seeds
    greedy = table[table["sampler"] == "greedy"]
    # Greedy ignores the sampling seed; a hot temperature writes less likely, more varied text.
    for _, group in greedy.groupby("model_seed"):
        assert group["distinct_2"].nunique() == 1 and group["mean_logprob"].nunique() == 1
    hot = table[table["sampler"].str.startswith("temperature")]
    assert hot["mean_logprob"].mean() < greedy["mean_logprob"].mean()
    assert (
        table["gen_perplexity"] - (-table["mean_logprob"]).map(__import__("math").exp)
    ).abs().max() < 1e-9
    summary = pd.read_csv(tmp_path / "sampling/summary.csv")
    assert set(summary["n"]) == {4} and "distinct_1_std" in summary
    # One experiment: the models are named by variant alone, as ever.
    assert list(table.columns[:3]) == ["variant", "model_seed", "run"]
    assert list(summary.columns[:3]) == ["variant", "sampler", "n"]
    samples = (tmp_path / "sampling/samples.md").read_text()
    assert "| greedy |" in samples and "continuation of prompt 2" in samples


def named_runs_toml(*trained, **ablation) -> str:
    """A spec that samples from runs trained elsewhere (and trains nothing)."""
    settings = {"samplers": '["greedy", "top-p"]', "n_prompts": 2, "prompt_tokens": 4}
    settings |= {"max_new_tokens": 4, **ablation}
    lines = "\n".join(f"{k} = {v}" for k, v in settings.items())
    runs = ", ".join(f'"{t}"' for t in trained)
    return (
        f'name = "samples"\n[data]\ntokenizer = "bytes"\n[sampling_ablation]\n'
        f"runs = [{runs}]\n{lines}\n"
    )


def test_sampling_from_named_runs_trains_nothing(tmp_path, tiny_doc, plugins, capsys):
    run(parse_spec(tiny_doc), tmp_path / "trained", plugins=plugins, progress=False)
    spec_file = tmp_path / "samples.toml"
    spec_file.write_text(named_runs_toml(tmp_path / "trained"))
    out = tmp_path / "out"

    assert cli_main(["validate", str(spec_file)]) == 0
    said = capsys.readouterr().out
    assert "trains nothing; samples from 1 run named" in said and "2 samplers x 1 seed" in said
    assert not out.exists()

    assert cli_main(["run", str(spec_file), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "sampling:" in printed and "results:" not in printed
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["sampling"]
    table = pd.read_csv(out / "sampling/results.csv")
    assert table["sampler"].tolist() == ["greedy", "top-p"]
    assert set(table["run"]) == {str(tmp_path / "trained/base/seed-0")}
    # From Python the same: run() returns the sampling table.
    again = run(spec_file, tmp_path / "api", plugins=plugins, progress=False)
    assert again["sampler"].tolist() == ["greedy", "top-p"]


def test_named_runs_are_checked_before_anything_is_sampled(tmp_path, tiny_doc, plugins, capsys):
    run(parse_spec(tiny_doc), tmp_path / "trained", plugins=plugins, progress=False)
    cases = {
        named_runs_toml(tmp_path / "trained", max_new_tokens=40): "exceeds the context of",
        named_runs_toml(tmp_path / "nowhere"): "holds no checkpoint.pt",
        named_runs_toml(tmp_path / "trained") + '[grid]\n"model.norm" = ["rmsnorm"]\n': (
            "this spec trains nothing and its [grid] would go unused"
        ),
    }
    for text, message in cases.items():
        (tmp_path / "bad.toml").write_text(text)
        for command in ("validate", "run"):
            argv = [command, str(tmp_path / "bad.toml")]
            argv += ["--out", str(tmp_path / "out")] if command == "run" else []
            assert cli_main(argv) == 2, (command, message)
            err = capsys.readouterr().err
            assert err.startswith("ablate: error: ") and err.count("\n") == 1, err
            assert message in err, err
    assert not (tmp_path / "out").exists()


def test_own_runs_too_short_for_the_prompts_are_refused_before_training(tiny_doc):
    doc = ablation_doc(tiny_doc)
    doc["sampling_ablation"]["max_new_tokens"] = 30  # 8 + 30 > context_length 32
    with pytest.raises(SpecError, match=r"exceeds variant 'base''s model\.context_length"):
        parse_spec(doc)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"samplers": []}, "non-empty list"),
        ({"samplers": ["top-q"]}, "did you mean 'top-p'"),
        ({"samplers": [{"name": "top-p", "p": 1.5}]}, "p must be"),
        ({"samplers": ["greedy"], "n_prompt": 3}, "did you mean 'n_prompts'"),
        ({"samplers": ["greedy", "greedy"]}, "same sampler twice"),
        ({"samplers": ["greedy"], "seeds": []}, "non-empty list of distinct"),
        (
            {"samplers": ["greedy"], "seeds": [0, -1]},
            r"\[sampling_ablation\] seeds: seed -1 is out of range; seeds go from 0 to 2\*\*63 - 1",
        ),
        ({"samplers": ["greedy"], "seeds": [2**63]}, "seed 9223372036854775808 is out of range"),
        (
            {"samplers": ["greedy"], "n_prompts": MAX_PROMPTS + 1},
            f"n_prompts must be at most {MAX_PROMPTS:,} \\(they are continued in one batch\\), "
            f"got {MAX_PROMPTS + 1:,}",
        ),
        ({"samplers": ["greedy"], "n_prompts": 10**12}, "n_prompts must be at most"),
    ],
)
def test_bad_sampling_ablations(tiny_doc, section, message):
    tiny_doc["sampling_ablation"] = section
    with pytest.raises(SpecError, match=message) as info:
        parse_spec(tiny_doc)
    assert "\n" not in str(info.value)


def test_the_bounds_themselves_are_accepted(tiny_doc):
    tiny_doc["sampling_ablation"] = {
        "samplers": ["greedy"],
        "seeds": [0, 2**63 - 1],
        "n_prompts": MAX_PROMPTS,
        "prompt_tokens": 4,
        "max_new_tokens": 4,
    }
    ablation = parse_spec(tiny_doc).sampling_ablation
    assert ablation.seeds == [0, 2**63 - 1] and ablation.n_prompts == MAX_PROMPTS


def test_runs_of_two_experiments_never_pool(tmp_path, tiny_doc, plugins, capsys):
    """Two experiment folders with the same experiment and variant names (two settings of one
    spec): each experiment's base is its own model, one row each in summary.csv, labelled by
    its folder; a single experiment's tables keep their columns (checked above)."""
    for folder, norm in (("s7", "layernorm"), ("sf", "rmsnorm")):
        tiny_doc["model"]["norm"] = norm
        run(parse_spec(tiny_doc), tmp_path / folder, plugins=plugins, progress=False)
    spec_file = tmp_path / "samples.toml"
    spec_file.write_text(named_runs_toml(tmp_path / "s7", tmp_path / "sf", samplers='["greedy"]'))
    out = tmp_path / "out"
    assert cli_main(["run", str(spec_file), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    summary = pd.read_csv(out / "sampling/summary.csv")
    experiments = [str(tmp_path / "s7"), str(tmp_path / "sf")]
    assert list(summary.columns[:4]) == ["experiment", "variant", "sampler", "n"]
    assert summary[["experiment", "variant", "sampler", "n"]].values.tolist() == [
        [experiments[0], "base", "greedy", 1],
        [experiments[1], "base", "greedy", 1],
    ]
    table = pd.read_csv(out / "sampling/results.csv")
    assert table["experiment"].tolist() == experiments
    assert f"{experiments[0]}: base | greedy (n=1)" in printed
    assert f"{experiments[1]}: base | greedy (n=1)" in printed

"""The lm-evaluation-harness adapter, offline, on tasks this file writes (local JSONL read through
task YAMLs): each request type equals a hand computation with the model itself, lm-eval's
aggregate scores equal the same computation, and `ablate eval-tasks` records the scores where
`ablate report` and `toolkit.compare` find them."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from toolkit.cli import main as cli_main
from toolkit.inference.evaluate import evaluate_corpus
from toolkit.inference.generate import generate_text, load_for_generation
from toolkit.spec.parse import parse_spec
from toolkit.sweep.results import TASKS_FILE, collect
from toolkit.sweep.runner import run

pytest.importorskip("lm_eval")
harness = pytest.importorskip("toolkit.inference.harness")
lm_tasks = pytest.importorskip("toolkit.inference.lm_tasks")

DOCS = [
    {"question": f"What is {a} plus {b}?", "choices": [str(a + b), str(a + b + 1), str(a * b)],
     "label": (a + b) % 3}
    for a in range(3) for b in range(4)
]  # fmt: skip


def task_yaml(name: str, data: Path, body: str) -> str:
    return (
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        f"test_split: test\n{body}"
    )


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tasks")
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    (folder / "mc.yaml").write_text(
        task_yaml(
            "tiny_mc",
            data,
            'output_type: multiple_choice\ndoc_to_text: "{{question}} Answer:"\n'
            'doc_to_choice: "{{choices}}"\ndoc_to_target: "{{label}}"\n'
            "metric_list:\n  - metric: acc\n",
        )
    )
    (folder / "roll.yaml").write_text(
        task_yaml(
            "tiny_roll",
            data,
            'output_type: loglikelihood_rolling\ndoc_to_text: ""\n'
            'doc_to_target: "{{question}} {{question}}"\n'
            "metric_list:\n  - metric: bits_per_byte\n",
        )
    )
    (folder / "gen.yaml").write_text(
        task_yaml(
            "tiny_gen",
            data,
            'output_type: generate_until\ndoc_to_text: "{{question}} Answer:"\n'
            'doc_to_target: "{{choices[0]}}"\n'
            'generation_kwargs:\n  until: ["?"]\n  max_gen_toks: 6\n'
            "metric_list:\n  - metric: exact_match\n",
        )
    )
    (folder / "hub.yaml").write_text(
        "task: tiny_hub\ndataset_path: ablate-test/no-such-dataset\ntest_split: test\n"
        'output_type: multiple_choice\ndoc_to_text: "{{q}}"\ndoc_to_choice: "{{c}}"\n'
        'doc_to_target: "{{t}}"\nmetric_list:\n  - metric: acc\n'
    )
    return folder


def train(out: Path, seeds: list[int], norms: list[str]) -> Path:
    """A tiny byte-level model per norm and seed; context 32 holds every question."""
    doc = {
        "name": "tiny",
        "seeds": seeds,
        "data": {"corpus": "pydoc", "tokenizer": "bytes", "val_fraction": 0.1},
        "model": {"context_length": 32, "emb_dim": 32, "n_heads": 2, "n_layers": 1},
        "train": {"batch_size": 4, "max_steps": 8, "eval_interval": 4, "eval_batches": 2},
        "grid": {"model.norm": norms},
    }
    run(parse_spec(doc), out, progress=False)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two variants x two seeds: an experiment to compare."""
    return train(tmp_path_factory.mktemp("runs") / "tiny", [0, 1], ["layernorm", "rmsnorm"])


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An experiment of one run, for what one model shows."""
    return train(tmp_path_factory.mktemp("single") / "tiny", [0], ["layernorm"])


@pytest.fixture(scope="module")
def source(single: Path) -> Path:
    (folder,) = single.glob("*/seed-0")
    return folder


@pytest.fixture(scope="module")
def lm(source: Path):
    return harness.AblateLM(source, batch_size=4)


def hand_loglikelihood(model, ids: list[int], n_continuation: int) -> tuple[float, bool]:
    """Sum of log p of the last n ids, each given every id before it; one sequence, no batch."""
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))[0].float()
    logprobs = F.log_softmax(logits, dim=-1)[-n_continuation:]
    targets = torch.tensor(ids[-n_continuation:])
    total = logprobs.gather(-1, targets[:, None]).sum().item()
    return total, bool((logprobs.argmax(-1) == targets).all())


def requests(*args) -> list[SimpleNamespace]:
    return [SimpleNamespace(args=a) for a in args]


def test_loglikelihood_equals_one_sequence_at_a_time(lm) -> None:
    pairs = [(d["question"] + " Answer:", " " + c) for d in DOCS[:5] for c in d["choices"]]
    pairs.append(("x" * 80, " too long a context: its last ids are kept"[:20]))
    pairs.append(("", "no context: the end-of-text id stands before it"[:30]))
    got = lm.loglikelihood(requests(*pairs))
    for (context, continuation), (logprob, greedy) in zip(pairs, got, strict=True):
        ctx, cont = lm.tok.encode(context), lm.tok.encode(continuation)
        ids = [lm.eot_token_id, *cont] if not ctx else ctx + cont
        expected = hand_loglikelihood(lm.model, ids[-(lm.max_length + 1) :], len(cont))
        assert logprob == pytest.approx(expected[0], abs=1e-4)
        assert greedy == expected[1]


def test_batch_size_changes_nothing(source: Path) -> None:
    pairs = [(d["question"], " " + d["choices"][0]) for d in DOCS]
    one = harness.AblateLM(source, batch_size=1)
    many = harness.AblateLM(source, batch_size=16)
    a = one.loglikelihood(requests(*pairs))
    b = many.loglikelihood(requests(*pairs))
    assert [g for _, g in a] == [g for _, g in b]
    np.testing.assert_allclose([x for x, _ in a], [x for x, _ in b], rtol=0, atol=1e-4)


def rolling_by_hand(model, ids: list[int], context: int) -> float:
    """Summed log p of every id of `ids` (the text's, after the end-of-text id), one at a
    time: id j is read in window j // context, which starts at the end-of-text id then every
    `context` ids, except the last, shorter one, which lm-eval extends back to a full
    window."""
    whole = ids
    n = len(whole) - 1  # predictions
    total = 0.0
    with torch.no_grad():
        for j in range(n):  # predict whole[j + 1]
            start = j // context * context
            if start + context > n:  # the tail window: a full context before its end
                start = max(0, n - context)
            logits = model(torch.tensor([whole[start : j + 1]]))[0, -1].float()
            total += F.log_softmax(logits, -1)[whole[j + 1]].item()
    return total


def test_rolling_loglikelihood_scores_every_token_once(lm) -> None:
    text = "Rolling windows cover every token of a text longer than the context. " * 2
    ids = [lm.eot_token_id, *lm.tok.encode(text)]
    assert len(ids) > 3 * lm.max_length + 1 and (len(ids) - 1) % lm.max_length
    (total,) = lm.loglikelihood_rolling(requests((text,)))
    assert total == pytest.approx(rolling_by_hand(lm.model, ids, lm.max_length), rel=1e-5)
    # Whole windows are what whole-corpus evaluation scores too.
    whole = len(ids) - (len(ids) - 1) % lm.max_length
    corpus = evaluate_corpus(
        lm.model, np.array(ids[:whole]), lm.tok.token_byte_lengths(), lm.max_length, 2
    )
    assert rolling_by_hand(lm.model, ids[:whole], lm.max_length) == pytest.approx(
        -corpus["nats"], rel=1e-5
    )


def test_generate_until_is_greedy_generation_cut_at_the_stop(source: Path, lm) -> None:
    prompts = ["What is 1 plus 1? Answer:", "What is 2 plus 2? Answer:", "Why:"]
    settings = {"until": ["e", "?"], "max_gen_toks": 12}
    got = lm.generate_until(requests(*[(p, settings) for p in prompts]))
    for prompt, text in zip(prompts, got, strict=True):
        full = generate_text(source, prompt, sampler="greedy", max_new_tokens=12)
        cut = min((full.find(s) for s in ("e", "?") if s in full), default=len(full))
        assert text == full[:cut]
    # Prompts of one length decode as one batch; alone, each gives the same text.
    alone = [lm.generate_until(requests((p, settings)))[0] for p in prompts]
    assert alone == got


@pytest.mark.slow
def test_lm_eval_scores_equal_a_hand_computation(runs: Path, tasks_dir: Path) -> None:
    source = runs / "norm=rmsnorm" / "seed-0"
    manager = lm_tasks.load_tasks(["tiny_mc", "tiny_roll"], tasks_dir)
    scores = lm_tasks.evaluate_tasks(
        source, ["tiny_mc", "tiny_roll"], manager=manager, progress=False
    )
    model, tok, _ = load_for_generation(source)
    correct = []
    for d in DOCS:
        context = tok.encode(d["question"] + " Answer:")
        ll = [
            hand_loglikelihood(model, tok.encode(d["question"] + " Answer: " + c), len(c) + 1)[0]
            for c in d["choices"]
        ]
        assert len(context) + max(len(c) for c in d["choices"]) < 32
        correct.append(int(np.argmax(ll)) == d["label"])
    assert scores["tasks"]["tiny_mc"]["acc"] == pytest.approx(np.mean(correct))
    assert scores["samples"] == {"tiny_mc": len(DOCS), "tiny_roll": len(DOCS)}
    logprob = n_bytes = 0.0
    for d in DOCS:
        text = f"{d['question']} {d['question']}"
        logprob += rolling_by_hand(model, [tok.eot_id, *tok.encode(text)], 32)
        n_bytes += len(text.encode("utf-8"))
    bpb = -logprob / n_bytes / math.log(2)
    assert scores["tasks"]["tiny_roll"]["bits_per_byte"] == pytest.approx(bpb, rel=1e-5)


def ablate(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_eval_tasks_records_scores_for_the_report(capsys, runs: Path, tasks_dir: Path) -> None:
    code, out, err = ablate(
        capsys, "eval-tasks", str(runs), "--tasks", "tiny_mc,tiny_gen",
        "--include-path", str(tasks_dir), "--limit", "6",
    )  # fmt: skip
    assert code == 0, err
    assert "[4/4]" in err and "recorded in tasks.json of 4 runs" in err
    table = collect(runs)
    assert {"task:tiny_mc/acc", "task:tiny_gen/exact_match"} <= set(table.columns)
    for _, row in table.iterrows():
        held = json.loads((runs / row["variant"] / f"seed-{row['seed']}" / TASKS_FILE).read_text())
        entry = held["tasks"]["tiny_mc"]
        assert entry["samples"] == 6 and entry["settings"]["limit"] == 6
        assert row["task:tiny_mc/acc"] == entry["metrics"]["acc"]
        assert f"{row['variant']}" in out or str(row["seed"]) in out
    import toolkit

    summary = toolkit.compare(runs)
    for _, row in summary.iterrows():
        per_seed = table.loc[table["variant"] == row["variant"], "task:tiny_mc/acc"]
        assert row["task:tiny_mc/acc_mean"] == pytest.approx(per_seed.mean())
        assert row["task:tiny_mc/acc_std"] == pytest.approx(per_seed.std(ddof=1), nan_ok=True)
        assert row["task:tiny_mc/acc_n"] == 2
    code, out, err = ablate(capsys, "report", str(runs))
    assert code == 0, err
    assert "scores after training:" in out and "tiny_mc/acc" in out
    assert "## Scores after training" in (runs / "report.md").read_text()
    # A second task later adds to the file; the first one's scores stay.
    code, _, err = ablate(
        capsys, "eval-tasks", str(runs / "norm=layernorm" / "seed-0"), "--tasks", "tiny_roll",
        "--include-path", str(tasks_dir),
    )  # fmt: skip
    assert code == 0, err
    held = json.loads((runs / "norm=layernorm" / "seed-0" / TASKS_FILE).read_text())
    assert set(held["tasks"]) == {"tiny_gen", "tiny_mc", "tiny_roll"}


@pytest.mark.slow
def test_lm_evals_own_command_line_finds_the_model(capsys, runs: Path, tasks_dir: Path) -> None:
    checkpoint = runs / "norm=layernorm" / "seed-1"
    model_args = json.dumps({"checkpoint": str(checkpoint)})  # the form for paths with commas
    code = cli_main(
        ["lm-eval", "--model", "ablate", "--model_args", model_args,
         "--tasks", "tiny_mc", "--include_path", str(tasks_dir), "--limit", "4"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"tiny_mc\s*\|", out) and "acc" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["--tasks", "tiny_nope"],
            "unknown lm-eval task 'tiny_nope'",
            marks=pytest.mark.slow,  # looked for among lm-eval's own tasks too: 10 s to index
        ),
        (["--tasks", "tiny_hub"], "lm-eval task 'tiny_hub': its data is not on this machine"),
        pytest.param(
            ["--tasks", "hellaswag"],  # one of lm-eval's own, read from the hub
            "lm-eval task 'hellaswag': its data is not on this machine",
            marks=pytest.mark.slow,
        ),
        (["--tasks", "tiny_mc", "--limit", "0"], "--limit must be"),
        (["--tasks", "tiny_mc", "--limit", "2.5"], "--limit must be"),
        (["--tasks", "tiny_mc", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["--tasks", " , "], "no tasks given"),
        (["--tasks", "tiny_mc", "--seed", "-5"], "--seed -5 is out of range"),
        (["--tasks", "tiny_mc", "--seed", "99999999999"], "--seed 99999999999 is out of range"),
        (["--tasks", "tiny_mc", "--seed", str(2**32)], "--seed 4294967296 is out of range"),
        (
            ["--tasks", "tiny_mc", "--num-fewshot", "100000"],
            "lm-eval task 'tiny_mc': num_fewshot 100000 exceeds the 12 examples",
        ),
        (
            ["--tasks", "tiny_roll,tiny_mc", "--num-fewshot", "13"],
            "lm-eval task 'tiny_roll': num_fewshot 13 exceeds the 12 examples",
        ),
    ],
)
def test_bad_input_is_one_line_before_anything_is_scored(
    capsys, single: Path, tasks_dir: Path, argv: list[str], message: str
) -> None:
    before = {p: p.stat().st_mtime_ns for p in single.glob("*/seed-*/*")}
    code, _, err = ablate(
        capsys, "eval-tasks", str(single), "--include-path", str(tasks_dir), *argv
    )
    assert code == 2
    assert err.startswith(f"ablate: error: {message}") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert {p: p.stat().st_mtime_ns for p in single.glob("*/seed-*/*")} == before


def test_a_checkpoint_file_alone_takes_the_tokenizer_given(
    capfd, monkeypatch, tmp_path: Path, source: Path, tasks_dir: Path
) -> None:
    """A checkpoint copied out of its run folder says its tokenizer and scores as the run
    folder scores; one from before checkpoints recorded it makes eval-tasks ask for
    --tokenizer (which it takes). Neither records anything (there is no run folder to record
    in). Run outside a git repository, nothing of lm-eval's `git describe` reaches the
    terminal (capfd: git writes to the process's fd 2)."""
    import shutil

    alone, legacy = tmp_path / "alone.pt", tmp_path / "legacy.pt"
    shutil.copy(source / "checkpoint.pt", alone)
    raw = torch.load(alone, weights_only=True)
    torch.save({"model": raw["model"], "config": raw["config"]}, legacy)
    monkeypatch.chdir(tmp_path)
    argv = ["eval-tasks", "--tasks", "tiny_mc", "--include-path", str(tasks_dir), "--limit", "4"]
    code, _, err = ablate(capfd, *argv, str(legacy))
    assert code == 2 and "e.g. --tokenizer bytes (257 ids)" in err
    code, out_legacy, err = ablate(capfd, *argv, str(legacy), "--tokenizer", "bytes")
    assert code == 0, err
    code, out_alone, err = ablate(capfd, *argv, str(alone))
    assert code == 0, err
    assert "recorded" not in err and "git" not in err
    assert sorted(tmp_path.iterdir()) == [alone, legacy]
    code, out_run, err = ablate(capfd, *argv, str(source))
    assert code == 0, err
    score = re.compile(r"tiny_mc: acc (\S+)")
    assert score.search(out_alone)[1] == score.search(out_legacy)[1] == score.search(out_run)[1]


def test_seed_and_num_fewshot_in_python(source: Path, tasks_dir: Path) -> None:
    """evaluate_tasks refuses a seed numpy cannot take, and too many shots for a task; the
    shots it has are fine. A manager loaded without num_fewshot meets lm-eval's own failure,
    which becomes the same one-line error."""
    from toolkit.errors import DataError

    manager = lm_tasks.load_tasks(["tiny_mc"], tasks_dir)
    for seed in (-5, 2**32, 1.5):
        with pytest.raises(DataError, match=r"seed .* is out of range; .* 0 to 2\*\*32 - 1"):
            lm_tasks.evaluate_tasks(source, ["tiny_mc"], manager=manager, seed=seed)
    with pytest.raises(DataError, match="lm-eval task 'tiny_mc': num_fewshot 100000 exceeds"):
        lm_tasks.load_tasks(["tiny_mc"], tasks_dir, num_fewshot=100000)
    with pytest.raises(DataError, match=r"'tiny_mc': num_fewshot 13 exceeds the 12 .* 12 or fewer"):
        lm_tasks.evaluate_tasks(
            source, ["tiny_mc"], manager=manager, num_fewshot=13, limit=1, progress=False
        )
    scores = lm_tasks.evaluate_tasks(
        source, ["tiny_mc"], manager=manager, num_fewshot=12, limit=1, seed=2**32 - 1,
        progress=False,
    )  # fmt: skip
    assert scores["samples"] == {"tiny_mc": 1}


def test_model_args_it_does_not_take_are_an_error(source: Path) -> None:
    """lm-eval's key=value form cuts a variant folder at its commas: say so, never ignore."""
    with pytest.raises(Exception, match=r"unknown model_args activation.*JSON"):
        harness.AblateLM(source, activation="gelu/seed-0")


def test_a_hub_task_says_the_data_must_be_local(tasks_dir: Path) -> None:
    with pytest.raises(Exception, match="the data must be local"):
        lm_tasks.load_tasks(["tiny_hub"], tasks_dir)


def test_sources_that_hold_no_run(capsys, tmp_path: Path, tasks_dir: Path) -> None:
    code, _, err = ablate(capsys, "eval-tasks", str(tmp_path), "--tasks", "tiny_mc")
    assert code == 2 and "holds no finished run with a checkpoint.pt" in err
    code, _, err = ablate(capsys, "eval-tasks", str(tmp_path / "nope"), "--tasks", "tiny_mc")
    assert code == 2 and "no such file or folder" in err


def test_without_lm_eval_installed_the_error_says_what_to_install(
    capsys, monkeypatch, single: Path
) -> None:
    import builtins
    import sys

    real_import = builtins.__import__

    def no_lm_eval(name, *args, **kwargs):
        if name == "lm_eval" or name.startswith("lm_eval."):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "toolkit.inference.harness")
    monkeypatch.delitem(sys.modules, "toolkit.inference.lm_tasks", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_lm_eval)
    code, _, err = ablate(capsys, "eval-tasks", str(single), "--tasks", "tiny_mc")
    assert code == 2
    assert 'needs lm-eval: pip install -e ".[lm-eval]"' in err

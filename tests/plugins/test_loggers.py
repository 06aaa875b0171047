"""The TensorBoard and MLflow loggers, for real: sweeps log into local stores (event files, an
MLflow SQLite database) and the tests read them back with each tool's own reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from plugins import loggers
from plugins.loggers.mlflow_run import params_of
from plugins.loggers.shared import text
from toolkit import hookimpl
from toolkit.api.contracts import RunInfo
from toolkit.api.manager import Plugins
from toolkit.errors import PluginError
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run

ROOT = Path(__file__).resolve().parents[2]
# MLflow's SQL store uses an option SQLAlchemy 2.1 deprecates: theirs, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
VARIANTS = ("norm=layernorm", "norm=rmsnorm")


@pytest.fixture(autouse=True)
def _no_tracking_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own settings never leak in; MLflow never phones home from a test.
    monkeypatch.delenv(loggers.TENSORBOARD_ENV, raising=False)
    monkeypatch.delenv(loggers.MLFLOW_ENV, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")


def logging_plugins(*extra: object) -> Plugins:
    plugins = Plugins(autoload=False)
    plugins.load_module("plugins.loggers", source="builtin")  # a no-op once it is a built-in
    for i, plugin in enumerate(extra):
        plugins.add(plugin, name=f"extra-{i}")  # added last, so pluggy calls it first
    return plugins


def sweep(doc: dict, out: Path, *extra: object):
    doc.setdefault("grid", {"model.norm": ["layernorm", "rmsnorm"]})
    plugins = logging_plugins(*extra)
    return run(parse_spec(doc, plugins=plugins), out, plugins=plugins, progress=False)


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def summary_of(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def mlflow_runs(uri: str, experiment: str = "tiny") -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    return {r.info.run_name: r for r in client.search_runs([found.experiment_id])}


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    metrics = MlflowClient(uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in metrics)


@pytest.mark.slow
def test_tensorboard_holds_each_run_of_a_sweep_with_its_metrics(tmp_path, tiny_doc, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    monkeypatch.setenv(loggers.TENSORBOARD_ENV, str(tmp_path / "tb"))
    table = sweep(tiny_doc, tmp_path / "out")
    assert table["status"].tolist() == ["ok", "ok"]
    assert sorted(p.name for p in (tmp_path / "tb/tiny").iterdir()) == list(VARIANTS)
    for variant in VARIANTS:
        logged = tmp_path / "tb/tiny" / variant / "seed-0"
        expected = records(tmp_path / "out" / variant / "seed-0")
        got = scalars(logged)
        for key in ("val_loss", "train_loss", "val_perplexity", "val_bpb", "lr", "tokens"):
            assert [s for s, _ in got[key]] == [r["step"] for r in expected] == [3, 6]
            assert [v for _, v in got[key]] == pytest.approx([r[key] for r in expected], rel=1e-6)
        summary = summary_of(tmp_path / "out" / variant / "seed-0")
        assert got["final/val_loss"] == [(6, pytest.approx(summary["val_loss"], rel=1e-6))]
        assert got["final/tokens_per_s"][0][1] == pytest.approx(summary["tokens_per_s"], rel=1e-6)

        events = EventAccumulator(str(logged), size_guidance={"tensors": 0})
        events.Reload()
        text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
        norm = variant.removeprefix("norm=")
        assert f"| model.norm | {norm} |" in text and "| train.lr | 0.003 |" in text
        content = events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
        hparams = HParamsPluginData.FromString(content).session_start_info.hparams
        assert hparams["model.norm"].string_value == norm
        assert hparams["train.lr"].number_value == pytest.approx(3e-3)
        assert hparams["status"].string_value == "ok"
    assert not loggers._OPEN


@pytest.mark.slow
def test_mlflow_sqlite_store_holds_each_run_with_config_and_metrics(
    tmp_path, tiny_doc, monkeypatch
):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # anything MLflow wrote outside the store would show here
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv(loggers.MLFLOW_ENV, uri)
    table = sweep(tiny_doc, tmp_path / "out")
    assert table["status"].tolist() == ["ok", "ok"]

    runs = mlflow_runs(uri)
    assert sorted(runs) == [f"{v}/seed-0" for v in VARIANTS]
    for variant in VARIANTS:
        found = runs[f"{variant}/seed-0"]
        folder = tmp_path / "out" / variant / "seed-0"
        assert found.info.status == "FINISHED"
        tags, params = found.data.tags, found.data.params
        assert (tags["experiment"], tags["variant"], tags["seed"]) == ("tiny", variant, "0")
        assert params["model.norm"] == variant.removeprefix("norm=")
        assert params["model.norm.eps"] == "1e-05"
        assert params["train.lr"] == "0.003" and params["train.betas"] == "[0.9, 0.95]"
        assert params["data.path"] == "null" and params["seed"] == "0"
        expected = records(folder)
        for key in ("val_loss", "train_loss", "val_perplexity", "val_bpb", "lr", "tokens"):
            assert history(uri, found.info.run_id, key) == [(r["step"], r[key]) for r in expected]
        summary = summary_of(folder)
        for key in ("tokens_per_s", "mfu", "params", "params_non_embedding"):
            assert found.data.metrics[key] == pytest.approx(summary[key])
        assert tags["status"] == "ok"
    assert sorted(os.listdir(tmp_path)) == ["mlflow.db", "out"]
    assert not loggers._OPEN


@pytest.mark.slow
def test_mlflow_params_respect_the_value_limit_and_a_diverged_run_is_failed(
    tmp_path, tiny_doc, monkeypatch
):
    pytest.importorskip("mlflow")
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv(loggers.MLFLOW_ENV, uri)
    config = parse_spec(tiny_doc).runs[0].config()
    config["sampling"]["prompt"] = "x" * (MAX_PARAM_VAL_LENGTH + 100)
    info = RunInfo("direct", "long prompt", 3, config, tmp_path / "run", 10, 5)
    loggers.on_run_start(info)
    loggers.on_eval(info, 2, {"step": 2, "val_loss": 9.5, "lr": 1e-3})
    loggers.on_run_end(info, {"status": "diverged", "steps": 2, "params": 10, "mfu": None})

    found = mlflow_runs(uri, "direct")["long prompt/seed-3"]
    prompt = found.data.params["sampling.prompt"]
    assert len(prompt) == MAX_PARAM_VAL_LENGTH and prompt.endswith("...")
    assert found.info.status == "FAILED" and found.data.tags["status"] == "diverged"
    assert found.data.metrics == {"val_loss": 9.5, "lr": 1e-3, "params": 10.0}  # no mfu: None


@pytest.mark.slow
def test_a_run_that_raises_is_failed_when_the_next_starts_and_both_loggers_work_together(
    tmp_path, tiny_doc, monkeypatch
):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv(loggers.MLFLOW_ENV, uri)
    monkeypatch.setenv(loggers.TENSORBOARD_ENV, str(tmp_path / "tb"))

    class Explode:
        @hookimpl
        def on_eval(self, run, step, metrics):
            if run.variant == "norm=layernorm" and step == 6:
                raise RuntimeError("boom")

    table = sweep(tiny_doc, tmp_path / "out", Explode())
    assert table["status"].tolist() == ["failed", "ok"]
    runs = mlflow_runs(uri)
    failed, ok = runs["norm=layernorm/seed-0"], runs["norm=rmsnorm/seed-0"]
    assert (failed.info.status, ok.info.status) == ("FAILED", "FINISHED")
    assert history(uri, failed.info.run_id, "val_loss") == [
        (3, records(tmp_path / "out/norm=layernorm/seed-0")[0]["val_loss"])
    ]
    assert [s for s, _ in scalars(tmp_path / "tb/tiny/norm=layernorm/seed-0")["val_loss"]] == [3]
    assert [s for s, _ in scalars(tmp_path / "tb/tiny/norm=rmsnorm/seed-0")["val_loss"]] == [3, 6]
    assert not loggers._OPEN


INTERRUPTED_SWEEP = """
import json, sys
from toolkit import hookimpl
from toolkit.api.manager import Plugins
from toolkit.sweep.runner import run
from toolkit.spec.parse import parse_spec

class Interrupt:
    @hookimpl
    def on_eval(self, run, step, metrics):
        if step == 6:
            raise KeyboardInterrupt  # as Ctrl-C would, before the loggers see step 6

plugins = Plugins(autoload=False)
plugins.load_module("plugins.loggers", source="builtin")
plugins.add(Interrupt(), name="interrupt")
try:
    run(parse_spec(json.loads(sys.argv[1]), plugins=plugins), "out", plugins=plugins,
        progress=False)
except KeyboardInterrupt:
    print("interrupted")
"""


@pytest.mark.slow
def test_an_interrupted_run_is_killed_at_exit_and_its_resume_continues_the_same_runs(
    tmp_path, tiny_doc, monkeypatch
):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv(loggers.MLFLOW_ENV, uri)
    monkeypatch.setenv(loggers.TENSORBOARD_ENV, str(tmp_path / "tb"))
    tiny_doc["train"].update(max_steps=9, eval_interval=3)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_SWEEP, json.dumps(tiny_doc)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0 and "interrupted" in child.stdout, child.stderr
    folder = tmp_path / "out/base/seed-0"
    assert [r["step"] for r in records(folder)] == [3, 6]
    (killed,) = mlflow_runs(uri).values()
    assert killed.info.status == "KILLED"  # closed by the exit handler, not left RUNNING
    assert history(uri, killed.info.run_id, "val_loss") == [(3, records(folder)[0]["val_loss"])]

    plugins = logging_plugins()
    table = run(parse_spec(tiny_doc, plugins=plugins), tmp_path / "out", plugins=plugins,
                progress=False)  # fmt: skip
    assert summary_of(folder)["resumed_at_step"] == 6 and table["status"].tolist() == ["ok"]
    expected = [(r["step"], r["val_loss"]) for r in records(folder)]
    assert [s for s, _ in expected] == [3, 6, 9]
    (resumed,) = mlflow_runs(uri).values()  # the same MLflow run, continued, not a second one
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    assert history(uri, resumed.info.run_id, "val_loss") == expected  # step 6 filled in
    logged = tmp_path / "tb/tiny/base/seed-0"
    assert len(list(logged.glob("events.out.tfevents.*"))) == 1  # rewritten, not merged
    got = scalars(logged)["val_loss"]
    assert [s for s, _ in got] == [3, 6, 9]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)


NO_TRACKING = """
import json, sys
from toolkit.api.manager import Plugins
from toolkit.sweep.runner import run
from toolkit.spec.parse import parse_spec

plugins = Plugins(autoload=False)
plugins.load_module("plugins.loggers", source="builtin")
run(parse_spec(json.loads(sys.argv[1]), plugins=plugins), "out", plugins=plugins, progress=False)
heavy = ["mlflow", "tensorboard", "torch.utils.tensorboard", "sqlalchemy"]
print(json.dumps([m for m in heavy if m in sys.modules]))
"""


@pytest.mark.slow
def test_nothing_is_logged_or_imported_unless_a_variable_asks(tmp_path, tiny_doc):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NO_TRACKING), json.dumps(tiny_doc)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout.splitlines()[-1]) == []
    assert os.listdir(tmp_path) == ["out"]  # no event files, no mlruns, no database
    assert summary_of(tmp_path / "out/base/seed-0")["status"] == "ok"


@pytest.mark.parametrize(
    ("variable", "module", "extra"),
    [(loggers.TENSORBOARD_ENV, "tensorboard", "tensorboard"), (loggers.MLFLOW_ENV, "mlflow", "mlflow")],
)  # fmt: skip
def test_a_missing_package_is_a_one_line_plugin_error_at_run_start(
    tmp_path, tiny_doc, monkeypatch, variable, module, extra
):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails: not installed
    monkeypatch.setenv(variable, str(tmp_path / "store"))
    info = RunInfo("tiny", "base", 0, {}, tmp_path / "run", 1, 1)
    with pytest.raises(PluginError) as caught:
        loggers.on_run_start(info)
    message = str(caught.value)
    assert f'pip install "gpt-ablate[{extra}]"' in message and variable in message
    assert "\n" not in message

    plugins = logging_plugins()
    table = run(parse_spec(tiny_doc, plugins=plugins), tmp_path / "out", plugins=plugins,
                progress=False)  # fmt: skip
    assert table["status"].tolist() == ["failed"] and table["error"].tolist() == [message]
    assert not (tmp_path / "out/base/seed-0/metrics.jsonl").exists()  # failed before training
    assert not (tmp_path / "store").exists() and not loggers._OPEN


def test_config_flattening_names_components_and_keeps_their_options():
    config = {
        "seed": 1,
        "overrides": {"model.norm": "rmsnorm"},
        "model": {"norm": {"name": "rmsnorm", "eps": 1e-6}, "vocab_size": None},
        "train": {"betas": [0.9, 0.95], "compile": False},
    }
    info = RunInfo("x", "v", 1, config, Path("."), 1, 1)
    flat = {k: text(v) for k, v in params_of(info)}
    assert flat == {
        "seed": "1",
        "model.norm": "rmsnorm",
        "model.norm.eps": "1e-06",
        "model.vocab_size": "null",
        "train.betas": "[0.9, 0.95]",
        "train.compile": "false",
    }

"""The built-in learning-rate schedules, multiplier by multiplier at steps worked out by hand;
how train.warmup_steps and train.min_lr_ratio feed them; bad choices as one-line errors; a
schedule from a third-party plugin; and a sweep interrupted under `wsd` resuming exactly."""

from __future__ import annotations

import itertools
import json
import math
import types

import pytest

from plugins.schedules import constant, cosine, inverse_sqrt, linear, wsd
from tests.conftest import interrupting_plugins
from toolkit import hookimpl
from toolkit.api.manager import Plugins
from toolkit.errors import SpecError
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run
from toolkit.training.optimizer import make_schedule


def lr_at_before(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """toolkit.training.optimizer.lr_at as it was before schedules were components: the
    reference the default schedule must equal bit for bit."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def test_cosine_is_the_schedule_every_run_had_before_bit_for_bit():
    for total, warmup, floor in itertools.product((1, 7, 100, 513), (0, 1, 10), (0.0, 0.1, 1.0)):
        for step in range(total + 1):
            expected = lr_at_before(step, total, warmup, floor)
            assert cosine(step, total, warmup_steps=warmup, min_lr_ratio=floor) == expected


def test_cosine_warms_up_then_decays_to_the_floor():
    assert cosine(0, 100, warmup_steps=10) == pytest.approx(0.1)
    assert cosine(9, 100, warmup_steps=10) == cosine(10, 100, warmup_steps=10) == 1.0
    assert cosine(55, 100, warmup_steps=10, min_lr_ratio=0.0) == pytest.approx(0.5)
    assert cosine(100, 100, warmup_steps=10) == pytest.approx(0.1)
    values = [cosine(s, 100, warmup_steps=10) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_linear_constant_and_inverse_sqrt_by_hand():
    assert linear(55, 100, warmup_steps=10, min_lr_ratio=0.0) == pytest.approx(0.5)  # 45 of 90
    assert linear(55, 100, warmup_steps=10, min_lr_ratio=0.2) == pytest.approx(0.6)
    assert linear(100, 100, min_lr_ratio=0.2) == pytest.approx(0.2)
    assert [constant(s, 10, warmup_steps=4) for s in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
    assert [inverse_sqrt(s, 100, warmup_steps=4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert inverse_sqrt(15, 100, warmup_steps=4) == 0.5  # sqrt(4 / 16)
    assert inverse_sqrt(0, 100) == 1.0 and inverse_sqrt(3, 100) == 0.5  # sqrt(1 / 4)


def test_wsd_warms_up_holds_then_decays_over_its_fraction():
    # 100 steps, 10 of warm-up, the last 20% (steps 80 .. 100) decaying to 0.
    m = {s: wsd(s, 100, warmup_steps=10, min_lr_ratio=0.0, decay_fraction=0.2) for s in range(101)}
    assert m[0] == 0.1 and m[4] == 0.5 and m[9] == 1.0
    assert all(m[s] == 1.0 for s in range(10, 81))  # stable, and the decay's first step is 1
    assert m[85] == 0.75 and m[90] == 0.5 and m[95] == 0.25 and m[100] == 0.0
    cosine_shape = {s: wsd(s, 100, min_lr_ratio=0.0, shape="cosine") for s in (80, 90, 100)}
    assert cosine_shape == {80: 1.0, 90: pytest.approx(0.5), 100: 0.0}
    assert wsd(85, 100, min_lr_ratio=0.0, shape="1-sqrt") == pytest.approx(0.5)  # 1 - sqrt(1/4)
    assert wsd(90, 100, min_lr_ratio=0.2) == pytest.approx(0.6)  # half-way from 1 to 0.2
    assert wsd(100, 100) == pytest.approx(0.1)  # the default floor, as train.min_lr_ratio's


def test_wsd_decay_length_rounds_and_a_zero_fraction_never_decays():
    # 0.1 x 30 is 3.0000000000000004 in floating point: still 3 steps (27, 28, 29 -> 30).
    assert [wsd(s, 30, min_lr_ratio=0.0, decay_fraction=0.1) for s in (26, 27, 28)] == [
        1.0,
        1.0,
        pytest.approx(2 / 3),
    ]
    assert wsd(5, 10, min_lr_ratio=0.0, decay_fraction=0.25) == 1.0  # 2.5 rounds up to 3: 7..10
    assert wsd(8, 10, min_lr_ratio=0.0, decay_fraction=0.25) == pytest.approx(2 / 3)
    assert all(wsd(s, 10, decay_fraction=0.0) == 1.0 for s in range(11))
    assert wsd(0, 10, decay_fraction=1.0, min_lr_ratio=0.0) == 1.0  # all decay, from step 0
    assert wsd(5, 10, decay_fraction=1.0, min_lr_ratio=0.0) == 0.5


# -- how the train keys feed a schedule ---------------------------------------------------------
def multipliers(doc: dict, total: int = 10) -> list[float]:
    r = parse_spec(doc).runs[0]
    schedule = make_schedule(r, total, Plugins(autoload=False))
    return [schedule(s) for s in range(total + 1)]


def test_train_keys_feed_the_schedule_and_a_table_may_set_them_instead(tiny_doc):
    tiny_doc["train"].update(schedule="wsd", warmup_steps=2, min_lr_ratio=0.0)
    by_keys = parse_spec(tiny_doc).runs[0]
    assert multipliers(tiny_doc)[:2] == [0.5, 1.0] and multipliers(tiny_doc)[-1] == 0.0
    del tiny_doc["train"]["warmup_steps"], tiny_doc["train"]["min_lr_ratio"]
    tiny_doc["train"]["schedule"] = {"name": "wsd", "warmup_steps": 2, "min_lr_ratio": 0.0}
    by_table = parse_spec(tiny_doc).runs[0]
    # The table's values are recorded as the train keys: one setting, one record, one hash.
    assert by_table.train.warmup_steps == 2 and by_table.train.min_lr_ratio == 0.0
    assert by_table.train.schedule == {"name": "wsd", "decay_fraction": 0.2, "shape": "linear"}
    assert by_table.config_hash() == by_keys.config_hash()
    tiny_doc["train"]["warmup_steps"] = 2  # the same value in both places is no conflict
    assert parse_spec(tiny_doc).runs[0].config_hash() == by_keys.config_hash()


def test_a_schedule_without_the_option_leaves_the_train_key_unused(tiny_doc):
    tiny_doc["train"].update(schedule="constant", warmup_steps=4, min_lr_ratio=0.5)
    assert multipliers(tiny_doc) == [0.25, 0.5, 0.75] + [1.0] * 8


def test_grid_and_set_reach_a_schedule_option(tiny_doc):
    tiny_doc["train"]["schedule"] = "wsd"
    tiny_doc["grid"] = {"train.schedule.decay_fraction": [0.2, 0.5]}
    spec = parse_spec(tiny_doc, overrides=["train.schedule.shape=cosine"])
    assert [r.train.schedule for r in spec.runs] == [
        {"name": "wsd", "decay_fraction": f, "shape": "cosine"} for f in (0.2, 0.5)
    ]
    assert spec.runs[0].choices()["schedule"] == "wsd"


@pytest.mark.parametrize(
    ("schedule", "train", "message"),
    [
        ("cosin", {}, "unknown schedule 'cosin' (did you mean 'cosine'?)"),
        ({"name": "wsd", "decay_fraction": -0.1}, {}, "decay_fraction must be in [0, 1], got -0.1"),
        ({"name": "wsd", "shape": "square"}, {}, "shape must be one of linear, cosine, 1-sqrt"),
        ({"name": "wsd", "decay_fraction": "half"}, {}, "'decay_fraction' must be a number"),
        ({"name": "constant", "min_lr_ratio": 0.1}, {}, "takes no option 'min_lr_ratio'"),
        (
            {"name": "cosine", "warmup_steps": 10},
            {"warmup_steps": 5},
            "train.schedule sets warmup_steps = 10 and train.warmup_steps = 5; set it in one place",
        ),
        ({"name": "wsd", "min_lr_ratio": 2.0}, {}, "train.min_lr_ratio must be in [0, 1], got 2.0"),
    ],
)
def test_bad_schedules_are_one_line_errors_before_training(tiny_doc, schedule, train, message):
    tiny_doc["train"].update(schedule=schedule, **train)
    with pytest.raises(SpecError) as err:
        parse_spec(tiny_doc)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


# -- a third party's schedule -------------------------------------------------------------------
def halving(step, total_steps, *, every: int = 1):
    """Half the lr every `every` steps"""
    return 0.5 ** (step // every)


def plugins_with_schedule(factory, name: str) -> Plugins:
    module = types.ModuleType("my_schedules")

    @hookimpl
    def register_components(register):
        register("schedule", name, factory)

    module.register_components = register_components
    plugins = Plugins(autoload=False)
    plugins.add(module, name="my_schedules")
    return plugins


def test_a_plugin_schedule_trains_a_run(tmp_path, tiny_doc):
    plugins = plugins_with_schedule(halving, "halving")
    tiny_doc["train"]["schedule"] = {"name": "halving", "every": 2}
    table = run(parse_spec(tiny_doc, plugins=plugins), tmp_path, plugins=plugins, progress=False)
    assert table["status"].tolist() == ["ok"] and table["schedule"].tolist() == ["halving"]
    lines = (tmp_path / "base/seed-0/metrics.jsonl").read_text().splitlines()
    lr = tiny_doc["train"]["lr"]
    # The lr a metrics line records is the next step's: step s was taken at lr x halving(s - 1).
    assert [json.loads(x)["lr"] for x in lines] == [lr * 0.5, lr * 0.125]  # steps 3, 6


def test_a_plugin_schedule_that_misbehaves_is_named(tiny_doc):
    plugins = plugins_with_schedule(lambda step, total_steps: -1.0, "negative")
    tiny_doc["train"]["schedule"] = "negative"
    with pytest.raises(SpecError, match=r"train.schedule 'negative' \(plugin 'my_schedules'\) "
                       r"returned -1.0 at step 0 of 6, not a number >= 0"):  # fmt: skip
        parse_spec(tiny_doc, plugins=plugins)


# -- resuming -------------------------------------------------------------------------------------
def metrics(folder) -> list[dict]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(x).items() if k not in ("elapsed_s", "train_s")} for x in lines
    ]


def test_a_sweep_interrupted_in_the_wsd_decay_resumes_to_the_same_metrics(tmp_path, tiny_doc):
    tiny_doc["model"]["drop_rate"] = 0.2  # dropout draws from the RNG: resuming restores it
    tiny_doc["train"].update(max_steps=9, eval_interval=3, threads=1, warmup_steps=2)
    tiny_doc["train"]["schedule"] = {"name": "wsd", "decay_fraction": 0.5, "shape": "1-sqrt"}
    spec = parse_spec(tiny_doc)
    plugins = Plugins(autoload=False)
    whole = run(spec, tmp_path / "whole", plugins=plugins, progress=False)
    with pytest.raises(KeyboardInterrupt):  # at step 6: the decay runs over steps 4 .. 9
        run(spec, tmp_path / "cut", plugins=interrupting_plugins(6), progress=False)
    resumed = run(spec, tmp_path / "cut", plugins=plugins, progress=False)
    folder = "base/seed-0"
    assert metrics(tmp_path / "cut" / folder) == metrics(tmp_path / "whole" / folder)
    assert resumed["val_loss"].tolist() == whole["val_loss"].tolist()
    summary = json.loads((tmp_path / "cut" / folder / "summary.json").read_text())
    assert summary["resumed_at_step"] == 6

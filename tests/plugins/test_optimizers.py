"""The built-in optimizers: the default trains exactly as the code before optimizers were
components did; SGD's and Lion's updates worked out by hand; Adafactor and Muon against torch's
own classes wired by hand; Muon's split of the parameters; bad choices as one-line errors; a
third party's optimizer (the README's) from a plugin; and a sweep interrupted under Muon
resuming exactly."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from plugins.optimizers import Combined, FloatMuon, Lion, hidden_matrices, lion, muon, sgd
from plugins.schedule_free import ScheduleFreeAdamW
from tests.conftest import interrupting_plugins
from toolkit import hookimpl
from toolkit.api.contracts import TrainConfig
from toolkit.api.manager import Plugins
from toolkit.cli import main
from toolkit.errors import SpecError
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run
from toolkit.testing import check_component
from toolkit.training import loop
from toolkit.training.optimizer import make_optimizer

PLUGINS = Plugins(autoload=False)
README = Path(__file__).resolve().parents[2] / "README.md"


def metrics(folder: Path) -> list[dict]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(x).items() if k not in ("elapsed_s", "train_s")} for x in lines
    ]


# -- the default: exactly what runs did before --------------------------------------------------
def optimizer_before(model, run, device, plugins=None):
    """toolkit.training.optimizer.make_optimizer before optimizers were components."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = run.train.weight_decay
    if run.train.weight_decay_on == "all":
        groups = [{"params": params, "weight_decay": decay}]
    else:
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
    # Fused on CUDA then; on the CPU too since torch's fused CPU kernel became the default
    # (benchmarks/run.py's optimizer row), which rounds differently from the foreach loop.
    fused = {"fused": True} if device.split(":")[0] in ("cuda", "cpu") else {}
    return torch.optim.AdamW(groups, lr=run.train.lr, betas=tuple(run.train.betas), **fused)


def schedule_before(run, steps, plugins):
    """The LambdaLR multiplier before schedules were components (toolkit's old lr_at)."""
    t = run.train

    def lr_at(step: int) -> float:
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        progress = (step - t.warmup_steps) / max(1, steps - t.warmup_steps)
        ratio = t.min_lr_ratio
        return ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return lr_at


@pytest.mark.parametrize(
    "train",
    [
        {},
        {"warmup_steps": 3, "min_lr_ratio": 0.0},
        {"weight_decay_on": "all", "weight_decay": 0.3, "betas": [0.8, 0.99]},
        {"min_lr_ratio": 1.0, "grad_clip": 0.0},
    ],
    ids=["defaults", "warmup", "decay-all", "constant"],
)
@pytest.mark.slow
def test_a_default_spec_trains_bit_for_bit_as_before(tmp_path, tiny_doc, monkeypatch, train):
    tiny_doc["model"]["drop_rate"] = 0.1
    tiny_doc["train"].update(max_steps=9, threads=1, **train)
    spec = parse_spec(tiny_doc)
    explicit = copy.deepcopy(tiny_doc)
    explicit["train"].update(optimizer="adamw", schedule="cosine")
    assert parse_spec(explicit).runs[0].config_hash() == spec.runs[0].config_hash()
    now = run(spec, tmp_path / "now", plugins=PLUGINS, progress=False)
    monkeypatch.setattr(loop, "make_optimizer", optimizer_before)
    monkeypatch.setattr(loop, "make_schedule", schedule_before)
    before = run(spec, tmp_path / "before", plugins=PLUGINS, progress=False)
    assert metrics(tmp_path / "now/base/seed-0") == metrics(tmp_path / "before/base/seed-0")
    assert now["val_loss"].tolist() == before["val_loss"].tolist()
    assert now["optimizer"].tolist() == ["adamw"] and now["schedule"].tolist() == ["cosine"]


def test_adamw_and_muons_adamw_use_the_fused_kernel_on_cpu(tiny_doc):
    model = build_model(
        ModelConfig(vocab_size=64, context_length=8, emb_dim=16, n_heads=2, n_layers=1)
    )
    for choice in ("adamw", "muon"):
        tiny_doc["train"]["optimizer"] = choice
        optimizer = make_optimizer(model, parse_spec(tiny_doc).runs[0], "cpu", PLUGINS)
        parts = getattr(optimizer, "optimizers", [optimizer])
        adamws = [o for o in parts if isinstance(o, torch.optim.AdamW)]
        assert adamws and all(o.defaults["fused"] for o in adamws), choice


# -- updates by hand ------------------------------------------------------------------------------
class MatrixAndBias(nn.Module):
    """A 1 x n matrix (decayed under weight_decay_on = "matrices") and a bias (not decayed)."""

    def __init__(self, w: list[float], b: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w]))
        self.b = nn.Parameter(torch.tensor(b))


def step_with(optimizer, model: MatrixAndBias, gw: list[float], gb: list[float]) -> None:
    model.w.grad, model.b.grad = torch.tensor([gw]), torch.tensor(gb)
    optimizer.step()


def test_sgd_momentum_nesterov_and_l2_decay_by_hand():
    config = TrainConfig(0.1, (0.9, 0.95), 0.0, "matrices")
    m = MatrixAndBias([1.0, -2.0], [0.0])
    opt = sgd(m, config, momentum=0.9)
    step_with(opt, m, [1.0, 2.0], [0.0])  # buf = g; w -= 0.1 g
    assert m.w.tolist() == [[pytest.approx(0.9), pytest.approx(-2.2)]]
    step_with(opt, m, [-1.0, 0.5], [0.0])  # buf = 0.9 (1, 2) + (-1, 0.5) = (-0.1, 2.3)
    assert m.w.tolist() == [[pytest.approx(0.91), pytest.approx(-2.43)]]

    m = MatrixAndBias([1.0, -2.0], [0.0])
    opt = sgd(m, config, momentum=0.9, nesterov=True)
    step_with(opt, m, [1.0, 2.0], [0.0])  # g + 0.9 buf = 1.9 g
    assert m.w.tolist() == [[pytest.approx(0.81), pytest.approx(-2.38)]]
    step_with(opt, m, [-1.0, 0.5], [0.0])  # (-1, 0.5) + 0.9 (-0.1, 2.3) = (-1.09, 2.57)
    assert m.w.tolist() == [[pytest.approx(0.919), pytest.approx(-2.637)]]

    m = MatrixAndBias([1.0, -2.0], [1.0])  # weight decay 0.5 adds 0.5 w to the matrix's gradient
    opt = sgd(m, TrainConfig(0.1, (0.9, 0.95), 0.5, "matrices"))
    step_with(opt, m, [1.0, 2.0], [1.0])
    assert m.w.tolist() == [[pytest.approx(0.85), pytest.approx(-2.1)]]
    assert m.b.tolist() == [pytest.approx(0.9)]  # the bias is not decayed


def test_lion_by_hand():
    # lr 0.1, betas (0.9, 0.99), weight decay 0.5 on the matrix only.
    m = MatrixAndBias([0.5, -1.0, 2.0], [0.3])
    opt = lion(m, TrainConfig(0.1, (0.9, 0.99), 0.5, "matrices"))
    step_with(opt, m, [1.0, -3.0, 0.0], [-2.0])
    # c = 0.1 g: signs (1, -1, 0); w = 0.95 w - 0.1 sign(c); the zero coordinate only decays.
    assert m.w.tolist() == [[pytest.approx(v) for v in (0.375, -0.85, 1.9)]]
    assert m.b.tolist() == [pytest.approx(0.4)]  # sign(-0.2) = -1, no decay
    state = opt.state[m.w]["exp_avg"]
    assert state.tolist() == [[pytest.approx(v) for v in (0.01, -0.03, 0.0)]]  # 0.01 g
    step_with(opt, m, [-0.05, -1.0, 4.0], [0.1])
    # c = 0.9 m + 0.1 g = (0.004, -0.127, 0.4): the first coordinate's momentum outweighs its
    # gradient's sign. Likewise the bias: 0.9 (-0.02) + 0.1 (0.1) = -0.008.
    assert m.w.tolist() == [[pytest.approx(v) for v in (0.25625, -0.7075, 1.705)]]
    assert m.b.tolist() == [pytest.approx(0.5)]
    state = opt.state[m.w]["exp_avg"]  # m = 0.99 m + 0.01 g
    assert state.tolist() == [[pytest.approx(v) for v in (0.0094, -0.0397, 0.04)]]
    assert opt.state[m.b]["exp_avg"].tolist() == [pytest.approx(-0.0188)]


# -- Adafactor and Muon: torch's classes, wired as the factories say ----------------------------
TINY = ModelConfig(
    vocab_size=40, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0,
    qkv_bias=True,
)  # fmt: skip
CONFIG = TrainConfig(1e-3, (0.9, 0.95), 0.1, "matrices")


def tiny_model(seed: int = 0, **changes) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(**{**TINY.to_dict(), **changes}), PLUGINS)


def train(model: nn.Module, optimizer, steps: int = 3) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        tokens = torch.randint(0, TINY.vocab_size, (2, 9), generator=gen)
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def same_parameters(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_adafactor_is_torchs_with_the_train_settings_and_its_options():
    mine, theirs = tiny_model(), tiny_model()
    opt = PLUGINS.registry.build("optimizer", {"name": "adafactor", "d": 2.0}, mine, CONFIG)
    reference = torch.optim.Adafactor(
        CONFIG.decay_groups(theirs.parameters()), lr=1e-3, beta2_decay=-0.8, d=2.0
    )
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    train(mine, opt)
    train(theirs, reference)
    assert same_parameters(mine, theirs)
    # Factored second moments: a matrix keeps a row and a column vector, not a full matrix.
    matrix = mine.out_head.weight  # 40 x 16
    state = opt.state[matrix]
    assert state["row_var"].numel() + state["col_var"].numel() == 40 + 16 < matrix.numel()


@pytest.mark.parametrize("tie", [False, True])
def test_muon_takes_the_blocks_matrices_and_adamw_the_rest(tie):
    model = tiny_model(tie_embeddings=tie)
    hidden, rest = hidden_matrices(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in hidden) == sorted(
        n for n, p in model.named_parameters() if n.startswith("trf_blocks.") and p.dim() == 2
    )
    rest_names = {names[id(p)] for p in rest}
    assert {"tok_emb.weight", "pos_emb.weight"} <= rest_names  # the embeddings
    assert ("out_head.weight" in rest_names) == (not tie)  # tied: the embedding, counted once
    assert any(".bias" in n for n in rest_names) and any("norm" in n for n in rest_names)
    assert all(p.dim() == 2 for p in hidden) and len(hidden) + len(rest) == len(names)

    opt = PLUGINS.registry.build(
        "optimizer", {"name": "muon", "muon_lr": 0.05, "adamw_lr": 2e-3}, model, CONFIG
    )
    assert isinstance(opt, Combined)
    lrs = [(g["lr"], g["weight_decay"], len(g["params"])) for g in opt.param_groups]
    vectors = sum(p.dim() < 2 for p in rest)
    assert lrs == [(2e-3, 0.1, len(rest) - vectors), (2e-3, 0.0, vectors), (0.05, 0.1, len(hidden))]
    assert muon(model, CONFIG).param_groups[0]["lr"] == CONFIG.lr  # adamw_lr None: train.lr


def test_muon_steps_as_torchs_muon_and_adamw_side_by_side_and_one_schedule_scales_both():
    mine, theirs = tiny_model(), tiny_model()
    opt = PLUGINS.registry.build("optimizer", "muon", mine, CONFIG)
    hidden, rest = hidden_matrices(theirs)
    # The fused kernel, as the toolkit's AdamW part on a CPU: foreach rounds differently on
    # some CPUs (an AVX-512 AMD EPYC), so equality with it would hold on one host only.
    adamw = torch.optim.AdamW(
        CONFIG.decay_groups(rest), lr=CONFIG.lr, betas=CONFIG.betas, fused=True
    )
    muon_ = torch.optim.Muon(hidden, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True)
    both = Combined(adamw, muon_)
    train(mine, opt)
    train(theirs, both)
    assert same_parameters(mine, theirs)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)
    train(mine, opt, steps=1)
    schedule.step()
    assert [g["lr"] for g in opt.param_groups] == [CONFIG.lr / 2, CONFIG.lr / 2, 0.01]
    assert opt.optimizers[1].param_groups[0]["lr"] == 0.01  # the inner Muon's own group


def test_combined_state_reads_every_part_without_writing_into_another():
    """Looking a parameter of the second optimizer up in the combined state must neither answer
    from the first optimizer's defaultdict (an empty state, inserted there) nor break the
    first one's state_dict()."""
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    first, second = torch.optim.AdamW(a.parameters()), torch.optim.SGD(b.parameters(), momentum=0.9)
    both = Combined(first, second)
    for p in [*a.parameters(), *b.parameters()]:
        p.grad = torch.ones_like(p)
    both.step()
    assert "momentum_buffer" in both.state[b.weight]
    assert len(both.state) == 4 and len(list(both.state.values())) == 4
    assert len(first.state) == 2  # nothing inserted
    first.state_dict()  # still maps every key to one of its own parameters
    with pytest.raises(KeyError):
        both.state[nn.Parameter(torch.ones(1))]


def newton_schulz_float64(g, steps=5, coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7):
    """Newton-Schulz towards g's orthogonal factor, written out in float64 (wide orientation)."""
    a, b, c = coefficients
    x = g.double().T if g.shape[0] > g.shape[1] else g.double()
    x = x / max(float(x.norm()), eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5)])
@pytest.mark.parametrize("adjust", ["original", "match_rms_adamw"])
def test_float32_muon_is_torchs_update_with_newton_schulz_in_float32(shape, adjust):
    """FloatMuon's step by hand in float64 (momentum, Nesterov, orthogonalized update at the
    adjusted lr, decoupled decay), and within bfloat16's rounding of torch's own Muon."""
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(shape, generator=gen)
    grads = [torch.randn(shape, generator=gen) for _ in range(3)]
    params = {k: nn.Parameter(w0.clone()) for k in ("mine", "torch")}
    mine = FloatMuon([params["mine"]], lr=0.02, weight_decay=0.1, adjust_lr_fn=adjust)
    theirs = torch.optim.Muon([params["torch"]], lr=0.02, weight_decay=0.1, adjust_lr_fn=adjust)
    w, buf = w0.double(), torch.zeros(shape, dtype=torch.float64)
    rows, cols = shape
    scale = math.sqrt(max(1, rows / cols)) if adjust == "original" else 0.2 * math.sqrt(max(shape))
    for g in grads:
        for key, opt in (("mine", mine), ("torch", theirs)):
            params[key].grad = g.clone()
            opt.step()
        buf = 0.95 * buf + 0.05 * g.double()
        update = newton_schulz_float64(g.double() + 0.95 * (buf - g.double()))
        w = w * (1 - 0.02 * 0.1) - 0.02 * scale * update
    torch.testing.assert_close(params["mine"].detach().double(), w, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(params["mine"], params["torch"], rtol=0.05, atol=0.02)
    assert not torch.equal(params["mine"], params["torch"])  # bfloat16 did round


def test_muon_ns_dtype_picks_the_class_and_is_recorded_only_when_float32(tiny_doc):
    model = tiny_model()
    assert type(muon(model, CONFIG).optimizers[1]) is torch.optim.Muon
    assert type(muon(model, CONFIG, ns_dtype="float32").optimizers[1]) is FloatMuon
    tiny_doc["train"]["optimizer"] = {"name": "muon", "ns_dtype": "bfloat16"}
    default = parse_spec(tiny_doc).runs[0]
    assert "ns_dtype" not in default.train.optimizer  # runs from before the option keep hashes
    tiny_doc["train"]["optimizer"] = {"name": "muon", "ns_dtype": "float32"}
    assert parse_spec(tiny_doc).runs[0].train.optimizer["ns_dtype"] == "float32"
    check_component("optimizer", "muon", PLUGINS, options={"ns_dtype": "float32"}, max_examples=3)


# -- bad choices ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        ("adam", "unknown optimizer 'adam' (did you mean 'adamw'?)"),
        ({"name": "adamw", "eps": 1e-6}, "train.optimizer 'adamw' takes no option 'eps'"),
        ({"name": "sgd", "momentum": -1}, "Invalid momentum value: -1.0"),
        ({"name": "sgd", "momentum": 0, "nesterov": True}, "Nesterov momentum requires a momentum"),
        ({"name": "muon", "muon_lr": "fast"}, "option 'muon_lr' must be a number, got 'fast'"),
        ({"name": "muon", "adjust_lr": "x"}, "Adjust learning rate function x is not supported"),
        ({"name": "muon", "ns_dtype": "fp8"}, "muon: ns_dtype must be one of bfloat16, float32"),
        ({"name": "adafactor", "beta2_decay": 0.5}, "beta2_decay should be <= 0 but is: 0.5"),
    ],
)
def test_bad_optimizers_are_one_line_errors_before_training(tiny_doc, optimizer, message):
    tiny_doc["train"]["optimizer"] = optimizer
    with pytest.raises(SpecError) as err:
        parse_spec(tiny_doc)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def plugins_with(name: str, factory) -> Plugins:
    class Throwaway:
        @hookimpl
        def register_components(self, register):
            register("optimizer", name, factory)

    plugins = Plugins(autoload=False)
    plugins.add(Throwaway(), name="throwaway")
    return plugins


def test_an_optimizer_that_leaves_a_parameter_out_fails_validation_naming_it(tiny_doc):
    def forgetful(model, config):
        """AdamW over every parameter but the token embedding"""
        return torch.optim.AdamW([p for n, p in model.named_parameters() if n != "tok_emb.weight"])

    plugins = plugins_with("forgetful", forgetful)
    tiny_doc["train"]["optimizer"] = "forgetful"
    with pytest.raises(SpecError) as raised:
        parse_spec(tiny_doc, plugins=plugins)
    assert str(raised.value).endswith(
        "optimizer 'forgetful' (plugin 'throwaway') puts parameter "
        "'tok_emb.weight' in none of its parameter groups; every trainable parameter must be in "
        "exactly one"
    )


def test_an_optimizer_that_returns_something_else_fails_validation(tiny_doc):
    plugins = plugins_with("nothing", lambda model, config: None)
    tiny_doc["train"]["optimizer"] = "nothing"
    with pytest.raises(SpecError, match=r"optimizer 'nothing' \(plugin 'throwaway'\) returned "
                       r"NoneType, not a torch.optim.Optimizer"):  # fmt: skip
        parse_spec(tiny_doc, plugins=plugins)


# -- a third party's optimizer: the README's example ---------------------------------------------
def readme_plugin(tmp_path: Path, monkeypatch) -> Plugins:
    code = re.search(r"```python\n(# my_optimizers\.py\n.*?)```", README.read_text(), re.S)
    assert code, "README.md has no '# my_optimizers.py' example"
    (tmp_path / "my_optimizers.py").write_text(code.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "my_optimizers", raising=False)
    return Plugins(["my_optimizers"], autoload=False)


@pytest.mark.slow
def test_the_readme_optimizer_conforms_and_trains_from_a_spec(tmp_path, monkeypatch, tiny_doc):
    plugins = readme_plugin(tmp_path, monkeypatch)
    check_component("optimizer", "signum", plugins, max_examples=3)
    tiny_doc["plugins"] = ["my_optimizers"]
    tiny_doc["train"]["optimizer"] = {"name": "signum", "momentum": 0.8}
    spec = parse_spec(tiny_doc, plugins=plugins)
    assert spec.runs[0].train.optimizer == {"name": "signum", "momentum": 0.8}
    table = run(spec, tmp_path / "out", plugins=plugins, progress=False)
    assert table["status"].tolist() == ["ok"] and table["optimizer"].tolist() == ["signum"]
    monkeypatch.delitem(__import__("sys").modules, "my_optimizers", raising=False)


def test_ablate_list_shows_the_optimizers_and_schedules_with_their_options(capsys):
    assert main(["list", "optimizer"]) == 0
    out = capsys.readouterr().out
    for name in ("adamw", "sgd", "lion", "adafactor", "muon"):
        assert re.search(rf"^  {name} ", out, re.M), name
    assert "options: muon_lr: float = 0.02, adamw_lr: float | None = None" in out
    assert main(["list", "schedule"]) == 0
    out = capsys.readouterr().out
    assert "decay_fraction: float = 0.2, shape: str = 'linear'" in out
    assert all(re.search(rf"^  {n} ", out, re.M) for n in PLUGINS.registry.names("schedule"))


# -- resuming -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_sweep_interrupted_under_muon_resumes_to_the_same_metrics(tmp_path, tiny_doc):
    tiny_doc["model"]["drop_rate"] = 0.2  # dropout draws from the RNG: resuming restores it
    tiny_doc["train"].update(max_steps=9, eval_interval=3, threads=1, warmup_steps=2)
    tiny_doc["grid"] = {"train.optimizer": [{"name": "muon", "muon_lr": 0.01}, "lion"]}
    spec = parse_spec(tiny_doc)
    whole = run(spec, tmp_path / "whole", plugins=PLUGINS, progress=False)
    with pytest.raises(KeyboardInterrupt):  # in the first run (muon), at step 6 of 9
        run(spec, tmp_path / "cut", plugins=interrupting_plugins(6), progress=False)
    folders = [tmp_path / "cut" / r.folder for r in spec.runs]
    assert (folders[0] / "resume.pt").exists() and not folders[1].exists()
    resumed = run(spec, tmp_path / "cut", plugins=PLUGINS, progress=False)
    for r in spec.runs:
        assert metrics(tmp_path / "cut" / r.folder) == metrics(tmp_path / "whole" / r.folder)
    assert resumed["val_loss"].tolist() == whole["val_loss"].tolist()
    assert resumed["optimizer"].tolist() == ["muon", "lion"]
    summary = json.loads((folders[0] / "summary.json").read_text())
    assert summary["resumed_at_step"] == 6


@pytest.mark.parametrize("make", ["lion", "float-muon", "schedule-free", "combined"])
def test_the_optimizers_written_here_return_the_closures_loss_with_gradients_on(make):
    w = nn.Parameter(torch.ones(3, 2))
    opt = {
        "lion": lambda: Lion([w]),
        "float-muon": lambda: FloatMuon([w]),
        "schedule-free": lambda: ScheduleFreeAdamW([w]),
        "combined": lambda: Combined(Lion([w])),
    }[make]()

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()  # fails unless the step turned gradients back on
        return loss

    before = w.detach().clone()
    assert opt.step(closure).item() == pytest.approx(6.0)
    assert not torch.equal(w.detach(), before)
    assert opt.step() is None

"""toolkit.inference.threads: cached CPU decoding measures its thread count, and only where the
choice cannot change a token."""

from __future__ import annotations

import weakref

import pytest
import torch

from toolkit.inference import generate as gen
from toolkit.inference import threads as th
from toolkit.inference.threads import (
    DECODE_WORK_PER_THREAD,
    MAX_INTERVAL,
    MIN_INTERVAL,
    TRY_BUDGET,
    DecodeThreads,
    ThreadChoice,
    decode_threads,
)
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model


@pytest.fixture(autouse=True)
def nothing_found_yet(monkeypatch):
    """Each test's streams probe afresh (a process remembers what it found per model)."""
    monkeypatch.setattr(th, "_FOUND", weakref.WeakKeyDictionary())


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def model(plugins):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=64, context_length=32, emb_dim=32, n_heads=2, n_layers=2)
    return build_model(config, plugins).eval()


def steps_on(choice: ThreadChoice, times: dict[int, float], n: int) -> list[int]:
    """The counts of n steps, each taking times[count]."""
    used = []
    for _ in range(n):
        count = choice.next()
        choice.record(count, times[count])
        used.append(count)
    return used


def test_the_faster_count_is_chosen_and_the_other_tried_within_the_budget():
    times = {1: 1.0, 2: 1.4}
    choice = ThreadChoice((1, 2), times)
    assert choice.chosen == 1
    used = steps_on(choice, times, 500)
    tries = [i for i, n in enumerate(used) if n == 2]
    # 1.4 / TRY_BUDGET = 70 steps on one thread between two tries of the slower count.
    gap = round(1.4 / TRY_BUDGET)
    assert tries[:3] == [gap, 2 * gap + 1, 3 * gap + 2]
    assert sum(times[n] for n in used) <= (1 + TRY_BUDGET) * times[1] * len(used)
    assert ThreadChoice((1, 2), {1: 1.0, 2: 1.0}).chosen == 1  # a tie takes fewer threads


def test_a_count_found_much_slower_waits_at_most_max_interval_and_an_even_one_the_budget():
    slow = ThreadChoice((1, 2), {1: 1.0, 2: 35.0})  # two threads beside a busy core
    assert steps_on(slow, {1: 1.0, 2: 35.0}, MAX_INTERVAL + 1).index(2) == MAX_INTERVAL
    even = ThreadChoice((1, 2), {1: 1.0, 2: 1.0})
    assert steps_on(even, {1: 1.0, 2: 1.0}, 100).index(2) == round(1 / TRY_BUDGET)


def test_a_faster_try_switches_and_a_load_change_is_followed_at_once():
    quiet = {1: 1.4, 2: 1.0}
    choice = ThreadChoice((1, 2), {1: 1.0, 2: 1.2})  # one thread looked faster at first
    used = steps_on(choice, quiet, 200)
    assert choice.chosen == 2 and used[-50:].count(1) <= 1
    # A core gets busy: two threads now take 35x, one thread its old time.
    busy = {1: 1.4, 2: 35.0}
    used = steps_on(choice, busy, 3 + MIN_INTERVAL + 1 + 1000)
    assert used[:3] == [2, 1, 1] and choice.chosen == 1
    # The count left is tried again after MIN_INTERVAL steps, then, found 25x slower, no
    # sooner than MAX_INTERVAL steps later.
    assert used[3 + MIN_INTERVAL - 1] == 2 and used[3 + MIN_INTERVAL :].count(2) == 0
    # A hiccup of one thread (3x, but faster than two threads' latest) tries nothing.
    choice.record(1, 4.5)
    assert choice.next() == 1


def test_a_hiccup_costs_min_interval_steps_on_the_slower_count():
    quiet = {1: 1.4, 2: 1.0}
    choice = ThreadChoice((1, 2), quiet)
    choice.record(2, 5.0)  # slower than one thread's latest: one thread is tried
    used = steps_on(choice, quiet, 2 * MIN_INTERVAL)
    assert used[: MIN_INTERVAL + 1] == [1] * (MIN_INTERVAL + 1)  # the try, then its interval
    assert used[MIN_INTERVAL + 1 :] == [2] * (MIN_INTERVAL - 1) and choice.chosen == 2


def test_the_choice_opens_only_when_both_counts_give_the_same_bits(two_threads, model, monkeypatch):
    same = DecodeThreads(model, 1, 100)
    same.start()
    same.probe(lambda: torch.ones(3))
    same.stop()
    assert same.choice is not None
    monkeypatch.setattr(th, "_FOUND", weakref.WeakKeyDictionary())
    differs = DecodeThreads(model, 1, 100)
    seen = []

    def by_count(cache):  # rounding that depends on the thread count
        seen.append(torch.get_num_threads())
        return torch.ones(3) + torch.get_num_threads() * 1e-7

    differs.start()
    differs.probe(lambda: by_count(None))
    assert differs.choice is None and seen == [2, 1]
    for _ in range(40):
        differs.step(by_count, None)
    assert set(seen[2:]) == {differs.canonical} == {1}
    differs.stop()
    assert torch.get_num_threads() == 2


def test_a_process_probes_once_per_model_and_batch_and_not_for_a_short_stream(
    two_threads, model, monkeypatch
):
    probes = []
    monkeypatch.setattr(th.DecodeThreads, "probe", lambda self, run: probes.append(self.probing))
    prompt = torch.zeros(1, 3, dtype=torch.long)
    greedy = lambda logits, generator: logits.argmax(-1, keepdim=True)  # noqa: E731
    gen.generate(model, prompt, MIN_INTERVAL - 1, greedy, 32)
    assert probes == [False]
    monkeypatch.undo()
    monkeypatch.setattr(th, "_FOUND", weakref.WeakKeyDictionary())
    gen.generate(model, prompt, MIN_INTERVAL, greedy, 32)
    found = th._FOUND[model]
    assert list(found) == [(1, torch.float32, 2)]
    for _ in range(2):  # the second and third stream start from it and probe nothing
        stream = DecodeThreads(model, 1, 100)
        assert not stream.probing and stream.choice is found[1, torch.float32, 2]
    assert DecodeThreads(model, 2, 100).probing  # another batch size


def test_nothing_is_probed_or_chosen_on_one_thread(model):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = DecodeThreads(model, 1, 100)
        one.probe(lambda: pytest.fail("probed on one thread"))
        assert one.choice is None
    finally:
        torch.set_num_threads(before)


def test_tokens_are_the_same_whichever_count_each_step_takes(two_threads, model, monkeypatch):
    """Tries that always look faster switch the count at every step: the greedy tokens are
    still the uncached path's, and both counts were used."""
    used = []

    class Flipping(ThreadChoice):
        def next(self) -> int:
            self.trying = True  # every step a try of the other count, which it switches to
            used.append(self.other())
            return self.other()

        def record(self, count: int, seconds: float) -> None:
            super().record(count, seconds - 1)  # faster than anything before

    monkeypatch.setattr(th, "ThreadChoice", Flipping)
    greedy = lambda logits, generator: logits.argmax(-1, keepdim=True)  # noqa: E731
    prompt = torch.randint(0, 64, (1, 5))
    cached = gen.generate(model, prompt, 40, greedy, 32)
    uncached = gen.generate(model, prompt, 40, greedy, 32, use_cache=False)
    assert torch.equal(cached, uncached)
    assert set(used) == {1, 2} and torch.get_num_threads() == 2


def test_a_stream_keeps_its_canonical_count_where_the_bits_differ(two_threads, model, monkeypatch):
    """Where the probe finds other rounding on the other count, every cached step runs on the
    canonical count; the uncached path keeps every thread; the count is given back."""
    monkeypatch.setattr(th.torch, "equal", lambda a, b: False)
    seen = []

    def greedy(logits, generator):
        seen.append(torch.get_num_threads())
        return logits.argmax(-1, keepdim=True)

    prompt = torch.zeros(1, 3, dtype=torch.long)
    gen.generate(model, prompt, 5, greedy, 32)
    assert seen == [1] * 5 and torch.get_num_threads() == 2
    seen.clear()
    gen.generate(model, prompt, 3, greedy, 32, use_cache=False)
    assert seen == [2, 2, 2]


def test_a_stream_keeps_its_count_when_another_changes_it_between_its_steps(
    two_threads, model, monkeypatch
):
    """Streams read in turn (zip of two) each set their own count at every step: a canonical
    stream's steps never run on a count that another stream left."""
    monkeypatch.setattr(th.torch, "equal", lambda a, b: False)
    seen = []

    def greedy(logits, generator):
        seen.append(torch.get_num_threads())
        return logits.argmax(-1, keepdim=True)

    steps = gen.stream(model, torch.zeros(1, 3, dtype=torch.long), 20, greedy, 32)
    for _ in steps:
        torch.set_num_threads(2)  # what another stream's step may leave
    assert seen == [1] * 20 and torch.get_num_threads() == 2


def test_the_canonical_count_is_one_thread_per_share_of_work(model):
    n = sum(p.numel() for p in model.parameters())
    assert decode_threads(model, 1, 8) == 1
    assert decode_threads(model, 2 * DECODE_WORK_PER_THREAD // n + 1, 8) == 2
    assert decode_threads(model, 100 * DECODE_WORK_PER_THREAD // n, 8) == 8

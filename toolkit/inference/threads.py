"""How many CPU threads a cached decoding step runs on, chosen by measuring, never at the cost
of a token.

A cached decoding step is one row of products per prompt through every weight matrix. Whether
a second thread helps depends on the host and on its load: on a host whose two cores each
have their own cache and memory bandwidth, two threads decoded a 5.7M-parameter model up to
1.4x faster than one; on a host whose two vCPUs share a core, they were even; and when another
process keeps a core busy (a training sweep beside `ablate generate`), every parallel region
waits for a thread the OS has descheduled, and two threads decoded 2-35x slower than one
(benchmarks/decode_threads.py). No fixed rule is right everywhere, so a stream times its steps.

The rule (`decode_threads`: one thread per DECODE_WORK_PER_THREAD parameters x prompts) is the
*canonical* count: the prompt's pass, refills past context_length and every step run on it
unless measuring says otherwise, and measuring may say otherwise only where it cannot change a
token. A matrix product's rounding can depend on how many threads share its sum (on one Xeon,
a 1024 x 256 product over 16 rows does; over one row it does not), so before the prompt's
pass the stream runs the prompt's last token alone from position 0 into a new cache, as a
one-row step, once on each count. When the two logits differ in any bit, the stream keeps the
canonical count for all its steps, so a seed gives the same text whatever the load. When they
are the same, ThreadChoice picks between the canonical
count and one other (all threads, or one thread where the canonical count is all of them) by
the steps' measured times, and keeps checking (see there).

The probe costs two steps, and beside a busy core its step on all threads can take 0.1-0.3 s,
so a process probes once per model, batch size, dtype and thread count: later streams (a
sampling ablation's, `generate()` called in a loop) start from what the last one learned. A
stream of fewer than MIN_INTERVAL new tokens, too short to gain from a choice, probes nothing.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

# Parameters x prompts a cached CPU decoding step gives each thread under the canonical rule:
# below this much work a step is one row of small products, which a second thread speeds up
# on some hosts, not on others, and slows 20x beside a busy core.
DECODE_WORK_PER_THREAD = 20_000_000

# ThreadChoice's knobs. A try costs one step on the count not in use. Tried after
# (its step time / the chosen count's) / TRY_BUDGET steps on the chosen count, the tries take
# at most TRY_BUDGET of the time: a count 1.4x slower is tried again after 70 steps, one 35x
# slower (two threads beside a busy core) after MAX_INTERVAL.
TRY_BUDGET = 0.02
MIN_INTERVAL, MAX_INTERVAL = 16, 1024  # steps between two tries, at least and at most
# A step this many times the chosen count's best recent one, and slower than the other's
# latest, tries the other at once.
SLOWER = 3.0
RECENT = 8  # the step times each count's best is taken over


def decode_threads(model: nn.Module, batch: int, available: int) -> int:
    """The canonical CPU threads for cached decoding of `batch` prompts: one per
    DECODE_WORK_PER_THREAD of parameters x prompts, from 1 to the `available` ones."""
    work = batch * sum(p.numel() for p in model.parameters())
    return max(1, min(available, work // DECODE_WORK_PER_THREAD))


class ThreadChoice:
    """Which of two thread counts the next one-row step runs on, from the measured times of
    earlier ones. `next()` says the count; `record(count, seconds)` reports the step.

    It starts on the faster of the two after a first sample of each, then runs on the chosen
    count and tries the other one step at a time: after an interval that keeps tries under
    TRY_BUDGET of the time (longer the slower the other was found), or at once when a step on
    the chosen count takes SLOWER x its best recent time and longer than the other's latest
    (the load changed). A try faster than the chosen count's best recent step (or than the
    slow step that called it) switches to it, and the count left is tried again after
    MIN_INTERVAL steps, in case the step that called the try was a hiccup. A faster step is
    hard to fake (noise only slows steps), so one is enough; a slower one just lengthens the
    wait. The count not in use is known by its latest try."""

    def __init__(self, counts: tuple[int, int], samples: dict[int, float]) -> None:
        self.counts = counts
        self.times = {n: deque([samples[n]], maxlen=RECENT) for n in counts}
        self.chosen = min(counts, key=lambda n: (samples[n], n))
        self.wait = self._interval()
        self.trying = False
        self.against: float | None = None  # the slow step that called the try under way

    def other(self) -> int:
        return self.counts[1] if self.chosen == self.counts[0] else self.counts[0]

    def next(self) -> int:
        return self.other() if self.trying else self.chosen

    def record(self, count: int, seconds: float) -> None:
        if self.trying:  # the other count's try
            self.trying = False
            beat = min(self.times[self.chosen]) if self.against is None else self.against
            self.against = None
            self.times[count].clear()
            self.times[count].append(seconds)
            if seconds < beat:
                self.chosen = count
                self.wait = MIN_INTERVAL
            else:
                self.wait = self._interval()
            return
        if seconds > max(SLOWER * min(self.times[count]), min(self.times[self.other()])):
            self.against = seconds
        self.times[count].append(seconds)
        self.wait -= 1
        self.trying = self.against is not None or self.wait <= 0

    def _interval(self) -> int:
        """Steps on the chosen count before the next try of the other."""
        ratio = min(self.times[self.other()]) / min(self.times[self.chosen])
        steps = ratio / TRY_BUDGET
        return int(min(MAX_INTERVAL, max(MIN_INTERVAL, steps)))


Step = Callable[[Any], torch.Tensor]


# What earlier streams found, per model: (batch, dtype, threads) -> the choice, or None where the
# counts round differently (the canonical count then, always).
_FOUND: weakref.WeakKeyDictionary[nn.Module, dict[tuple, ThreadChoice | None]] = (
    weakref.WeakKeyDictionary()
)


class DecodeThreads:
    """The thread counts of one stream's cached CPU steps (see the module's docstring):
    `start()` sets the canonical count for the stream, `probe(run)` opens the choice
    when a one-row step gives the same logits on both counts, `step(run, cache)` runs one
    one-row step on the count chosen (`run(cache)` returns its logits), `canonical_count()`
    is for a pass over many positions and `stop()` gives the process its own count back.
    `steps` is how many tokens the stream may add."""

    def __init__(self, model: nn.Module, batch: int, steps: int) -> None:
        self.available = torch.get_num_threads()
        self.canonical = decode_threads(model, batch, self.available)
        # The canonical count and one other: all threads, or one where it takes them all.
        other = self.available if self.canonical < self.available else 1
        self.counts = (self.canonical, other)
        dtype = next(model.parameters()).dtype
        self.found = _FOUND.setdefault(model, {})
        self.key = (batch, dtype, self.available)
        self.choice: ThreadChoice | None = self.found.get(self.key)
        # Nothing to choose on one thread, nor to gain in a short stream; once is enough.
        self.probing = self.available > 1 and steps >= MIN_INTERVAL and self.key not in self.found

    def start(self) -> None:
        self.canonical_count()

    def canonical_count(self) -> None:
        torch.set_num_threads(self.canonical)

    def stop(self) -> None:
        torch.set_num_threads(self.available)

    def probe(self, run: Callable[[], torch.Tensor]) -> None:
        """Run `run()`, a one-row pass that returns logits, on the count that is not canonical
        and then on the canonical one; the choice opens only if both give the same logits,
        bit for bit (see `probing`)."""
        if not self.probing:
            return
        timed, logits = {}, []
        for count in reversed(self.counts):  # the canonical count's last
            torch.set_num_threads(count)
            tick = time.perf_counter()
            logits.append(run())
            timed[count] = time.perf_counter() - tick
        if torch.equal(*logits):
            self.choice = ThreadChoice(self.counts, timed)
        self.found[self.key] = self.choice

    def step(self, run: Step, cache: Any) -> torch.Tensor:
        # Set at every step (0.1 us), so a stream interleaved with another keeps its own count.
        count = self.canonical if self.choice is None else self.choice.next()
        torch.set_num_threads(count)
        if self.choice is None:  # the canonical count throughout
            return run(cache)
        tick = time.perf_counter()
        logits = run(cache)
        self.choice.record(count, time.perf_counter() - tick)
        return logits

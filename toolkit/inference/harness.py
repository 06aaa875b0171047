"""Scores on lm-evaluation-harness tasks: a run's checkpoint as an lm-eval model (the `lm-eval`
extra: pip install -e ".[lm-eval]").

Importing this module registers the model class `AblateLM` with lm-eval under the name
"ablate", so lm-eval's own entry points can use it once it is imported:

    import lm_eval, toolkit.inference.harness
    lm_eval.simple_evaluate(model="ablate", model_args="checkpoint=runs/x/base/seed-0",
                            tasks=["my_task"])

(`ablate lm-eval ARGS...` is lm-eval's own command line with the model registered; `ablate
eval-tasks RUN_DIR...` scores several runs and records the scores for the comparison table:
toolkit/cli/tasks.py.)

The model reads text with the run's own tokenizer. Its end-of-text id stands before a text
scored without context (lm-eval's prefix token), as in training, where it separates documents.
- loglikelihood: context + continuation, cut to the last context_length + 1 ids, one forward
  pass; the continuation's log-probabilities summed, and whether greedy decoding would have
  produced it. Requests run longest first, in batches padded on the right: a causal model's
  positions never read what follows them, so the padding changes nothing. A non-causal
  attention would read it, so such a model scores one request at a time.
- loglikelihood_rolling: the whole text in windows of context_length predictions (lm-eval's
  rolling windows, each conditioned on up to context_length earlier ids), summed.
- generate_until: the KV-cache generation of toolkit.inference.generate; requests whose
  prompts have the same length and settings decode together as one batch. Greedy unless a
  request asks for sampling (do_sample with temperature, top_k, top_p), seeded. Generation
  stops at the first of the request's `until` strings (cut off), end of text, or max_gen_toks.

Nothing downloads: task data is read in the datasets library's offline mode, so a task must
read local files (a task YAML with dataset_path: json and data_files) or data already in the
Hugging Face cache; otherwise `load_tasks` (toolkit/inference/lm_tasks.py, which also scores
a checkpoint on tasks) raises a one-line DataError saying so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from toolkit.api.manager import Plugins, load_plugins
from toolkit.api.registry import split_choice
from toolkit.errors import DataError
from toolkit.inference.device import check_device
from toolkit.inference.generate import IncrementalDecoder, load_for_generation, stream

MODEL_NAME = "ablate"
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_GEN_TOKS = 256


@register_model(MODEL_NAME)
class AblateLM(TemplateLM):
    """A run folder's (or checkpoint's) model as an lm-eval language model.

    model_args: checkpoint (a run folder or checkpoint file; required), tokenizer (default: the
    run's), max_gen_toks (default 256), seed (of sampled generations, default 0); lm-eval's
    batch_size and device."""

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] | None = None,
        *,
        tokenizer: str | None = None,
        batch_size: int | str | None = DEFAULT_BATCH_SIZE,
        device: str | None = None,
        max_gen_toks: int | str = DEFAULT_MAX_GEN_TOKS,
        seed: int | str = 0,
        plugins: Plugins | None = None,
        max_batch_size: Any = None,  # lm-eval's, for its automatic batch size: not used
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise DataError(
                f"model 'ablate': unknown model_args {', '.join(sorted(unknown))}; it takes "
                f"checkpoint, tokenizer, max_gen_toks and seed (a path with commas, like a "
                f'variant\'s folder, goes in JSON: --model_args \'{{"checkpoint": "..."}}\')'
            )
        if checkpoint is None:
            raise DataError(
                "model 'ablate' needs a checkpoint: --model_args checkpoint=RUN_DIR "
                "(a run folder or a checkpoint file)"
            )
        self.plugins = plugins or load_plugins()
        self._device = check_device(_usable(device or "cpu"), "device")
        self.model, self.tok, _ = load_for_generation(
            checkpoint, tokenizer, self._device, self.plugins
        )
        self.batch_size = _positive_int(batch_size or DEFAULT_BATCH_SIZE, "batch_size")
        self.max_gen_toks = _positive_int(max_gen_toks, "max_gen_toks")
        self.seed = int(seed)
        attention, _ = split_choice(self.model.config.attention)
        facts = self.plugins.registry.get("attention", attention).facts
        self.causal = bool(facts.get("causal"))

    # -- what TemplateLM asks of a model ---------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return int(self.tok.eot_id)

    @property
    def max_length(self) -> int:
        return int(self.model.config.context_length)

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **_: Any
    ) -> list[int]:
        return list(self.tok.encode(string))

    def tok_decode(self, tokens: Sequence[int], **_: Any) -> str:
        return self.tok.decode(list(tokens))

    def _loglikelihood_tokens(
        self,
        requests: list[tuple[tuple[str, str], list[int], list[int]]],
        disable_tqdm: bool = False,
        **_: Any,
    ) -> list[tuple[float, bool]]:
        return self.score([(ctx, cont) for _, ctx, cont in requests], disable_tqdm)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        windows: list[tuple[list[int], list[int]]] = []
        owners: list[int] = []
        for i, request in enumerate(requests):
            (text,) = request.args
            for window in get_rolling_token_windows(
                token_list=self.tok_encode(text),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            ):
                windows.append(make_disjoint_window(window))
                owners.append(i)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self.score(windows, disable_tqdm), strict=True):
            totals[owner] += logprob
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        jobs = [self._generation(request.args) for request in requests]
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((len(job.ids), job.settings), []).append(i)
        results: list[str] = [""] * len(jobs)
        bar = tqdm(total=len(jobs), desc="ablate generate_until", disable=disable_tqdm)
        for members in groups.values():
            for first in range(0, len(members), self.batch_size):
                batch = members[first : first + self.batch_size]
                texts = self._generate([jobs[i] for i in batch])
                for i, text in zip(batch, texts, strict=True):
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(len(batch))
        bar.close()
        return results

    # -- scoring ---------------------------------------------------------------------------------
    def score(
        self, pairs: Sequence[tuple[list[int], list[int]]], disable_tqdm: bool = True
    ) -> list[tuple[float, bool]]:
        """(sum of log p(continuation | context), whether greedy decoding gives it) for each
        (context ids, continuation ids); a context longer than the model's window keeps its
        last ids."""
        rows = []
        for context, continuation in pairs:
            if not continuation:
                rows.append(None)
                continue
            if len(continuation) > self.max_length:
                raise DataError(
                    f"a continuation of {len(continuation)} tokens is longer than the model's "
                    f"context ({self.max_length}); it cannot be scored in one window"
                )
            whole = (list(context) + list(continuation))[-(self.max_length + 1) :]
            rows.append((whole[:-1], list(continuation)))
        order = sorted(
            (i for i, r in enumerate(rows) if r is not None), key=lambda i: -len(rows[i][0])
        )
        results: list[tuple[float, bool]] = [(0.0, True)] * len(rows)
        size = self.batch_size if self.causal else 1
        bar = tqdm(total=len(order), desc="ablate loglikelihood", disable=disable_tqdm)
        with torch.inference_mode():
            for first in range(0, len(order), size):
                batch = order[first : first + size]
                width = len(rows[batch[0]][0])  # longest first
                x = torch.zeros((len(batch), width), dtype=torch.long)
                for j, i in enumerate(batch):
                    inputs = rows[i][0]
                    x[j, : len(inputs)] = torch.tensor(inputs)
                logprobs = F.log_softmax(self.model(x.to(self._device)).float(), dim=-1)
                for j, i in enumerate(batch):
                    inputs, continuation = rows[i]
                    n = len(continuation)
                    scores = logprobs[j, len(inputs) - n : len(inputs)]
                    targets = torch.tensor(continuation, device=scores.device)
                    total = scores.gather(-1, targets[:, None]).sum().item()
                    greedy = bool((scores.argmax(dim=-1) == targets).all())
                    results[i] = (total, greedy)
                bar.update(len(batch))
        bar.close()
        return results

    # -- generation ------------------------------------------------------------------------------
    def _generation(self, args: tuple[str, dict[str, Any]]) -> _Job:
        context, gen_kwargs = args
        kwargs = dict(gen_kwargs or {})
        until = kwargs.pop("until", None) or []
        if isinstance(until, str):
            until = [until]
        max_new = _positive_int(kwargs.pop("max_gen_toks", self.max_gen_toks), "max_gen_toks")
        do_sample = bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 1.0 if do_sample else 0.0))
        top_k, top_p = kwargs.pop("top_k", None), kwargs.pop("top_p", None)
        if kwargs:
            logging.getLogger(__name__).warning(
                "model 'ablate' ignores the generation settings %s", ", ".join(sorted(kwargs))
            )
        if not do_sample or temperature == 0:
            sampler: tuple[Any, ...] = ("greedy",)
        else:
            sampler = ("chain", temperature, top_k, top_p)
        ids = self.tok_encode(context) or [self.eot_token_id]
        return _Job(ids, (tuple(until), max_new, sampler))

    def _generate(self, jobs: list[_Job]) -> list[str]:
        until, max_new, sampler = jobs[0].settings
        if sampler[0] == "greedy":
            draw = self.plugins.registry.build("sampler", "greedy")
        else:
            _, temperature, top_k, top_p = sampler
            options = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
            draw = self.plugins.registry.build(
                "sampler", {"name": "chain", **{k: v for k, v in options.items() if v}}
            )
        idx = torch.tensor([job.ids for job in jobs], dtype=torch.long, device=self._device)
        generator = torch.Generator(device=self._device).manual_seed(self.seed)
        decoders = [IncrementalDecoder(self.tok_decode) for _ in jobs]
        texts = [""] * len(jobs)
        open_ = [True] * len(jobs)
        steps = stream(
            self.model,
            idx,
            max_new,
            draw,
            self.max_length,
            generator,
            self.eot_token_id,
        )
        for next_ids in steps:
            for j, token in enumerate(next_ids[:, 0].tolist()):
                if not open_[j]:
                    continue
                if token == self.eot_token_id:
                    open_[j] = False
                    texts[j] += decoders[j].flush()  # bytes held back for a next token
                    continue
                texts[j] += decoders[j].add(token)
                if any(stop in texts[j] for stop in until):
                    open_[j] = False
            if not any(open_):
                steps.close()
                break
        for j in range(len(jobs)):
            if open_[j]:
                texts[j] += decoders[j].flush()
        return [_cut(text, until) for text in texts]


@dataclass(frozen=True)
class _Job:
    ids: list[int]
    settings: tuple[Any, ...]  # (until, max_gen_toks, sampler): equal settings batch together


def _cut(text: str, until: Sequence[str]) -> str:
    """The text before the first of the stop strings."""
    end = min((text.find(s) for s in until if s and s in text), default=len(text))
    return text[:end]


def _usable(device: str) -> str:
    """The device, or the CPU when it is CUDA and this machine has none (lm-eval's command line
    asks for cuda unless told otherwise; its own models fall back the same way)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning("model 'ablate': no CUDA device here; using cpu")
        return "cpu"
    return device


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or (isinstance(value, float) and not value.is_integer()):
        raise DataError(f"model 'ablate': {name} must be a positive integer, got {value!r}")
    return number


__all__ = ["DEFAULT_BATCH_SIZE", "MODEL_NAME", "AblateLM"]

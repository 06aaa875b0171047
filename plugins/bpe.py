"""Learning a byte-level BPE vocabulary: the merges the `bpe` tokenizer (plugins/tokenizers.py)
trains on a corpus's training split, and GPT-2's pre-tokenization pattern that both it and
`gpt2` split text with. Pure functions of their inputs; nothing here registers a component.

    merges = learn_merges(texts, n_merges)    # [(a, b), ...]: merge i makes id 256 + i
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterable

# GPT-2's pre-tokenization pattern (tiktoken's r50k): contractions, letter runs, digit runs,
# punctuation runs, and whitespace, each optionally led by one space.
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)


def utf8(text: str) -> bytes:
    """UTF-8 bytes of text; lone surrogates (not encodable) become U+FFFD, as tiktoken does."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def learn_merges(texts: Iterable[str], n_merges: int) -> list[tuple[int, int]]:
    """Byte-level BPE training: up to n_merges merges (a, b), merge i creating id 256 + i.

    Each text is split into chunks by GPT-2's pattern and chunks are counted once; then the most
    frequent adjacent pair within chunks is merged, repeatedly. Ties go to the smallest pair
    (a, b), so the result depends only on the texts. Pair counts are updated incrementally (only
    chunks holding the merged pair are revisited) and a heap with stale entries skipped finds
    the most frequent pair. A pair whose bytes an earlier merge already produced is never
    merged, so every id stands for distinct bytes (as tiktoken's ranks need). Fewer merges when
    no adjacent pair is left.
    """
    import regex

    split = regex.compile(GPT2_PATTERN).findall
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(split(text))
    words: list[list[int]] = []
    freqs: list[int] = []
    for chunk, n in counts.items():
        ids = list(utf8(chunk))
        if len(ids) > 1:  # a single byte has no pair to merge
            words.append(ids)
            freqs.append(n)
    del counts

    pair_counts: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}  # pair -> chunks that (may) hold it
    for w, (ids, n) in enumerate(zip(words, freqs, strict=True)):
        for pair in itertools.pairwise(ids):
            pair_counts[pair] = pair_counts.get(pair, 0) + n
            where.setdefault(pair, set()).add(w)
    heap = [(-n, a, b) for (a, b), n in pair_counts.items()]
    heapq.heapify(heap)

    token_bytes = [bytes([i]) for i in range(256)]
    known = set(token_bytes)
    merges: list[tuple[int, int]] = []
    while heap and len(merges) < n_merges:
        neg, a, b = heapq.heappop(heap)
        pair = (a, b)
        if pair_counts.get(pair, 0) != -neg:
            continue  # stale: the count changed after this entry was pushed
        new_bytes = token_bytes[a] + token_bytes[b]
        if new_bytes in known:
            continue  # never merged (and never pushed again: see below)
        new_id = 256 + len(merges)
        merges.append(pair)
        token_bytes.append(new_bytes)
        known.add(new_bytes)
        changed: set[tuple[int, int]] = set()
        for w in where.pop(pair, ()):
            old = words[w]
            new = _merge(old, a, b, new_id)
            if len(new) == len(old):
                continue  # the chunk lost this pair to an earlier merge
            n = freqs[w]
            for p in itertools.pairwise(old):
                pair_counts[p] -= n
                changed.add(p)
            for p in itertools.pairwise(new):
                pair_counts[p] = pair_counts.get(p, 0) + n
                where.setdefault(p, set()).add(w)
                changed.add(p)
            words[w] = new
        for p in changed:
            n = pair_counts.get(p, 0)
            if n > 0 and token_bytes[p[0]] + token_bytes[p[1]] not in known:
                heapq.heappush(heap, (-n, *p))
            elif n <= 0:
                pair_counts.pop(p, None)
                where.pop(p, None)
    return merges


def _merge(ids: list[int], a: int, b: int, new_id: int) -> list[int]:
    """ids with every non-overlapping (a, b), left to right, replaced by new_id."""
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out

"""Exact and near (MinHash LSH) deduplication for the filter stage.

Both functions take texts plus a parallel list of scopes and return, for each index, the index
of the earlier *kept* record it duplicates, or None when the record is kept. Only records with
equal scope can duplicate each other: scope by question id to dedup samples of one question,
or pass one constant (or ``scopes=None``) for a global dedup.

Near duplicates use rensa's MinHash and LSH index (Rust), in the plainest way: one MinHash per
text over its word shingles, then, in order, query the scope's index and insert the text if it
matched nothing. Every LSH candidate is confirmed by the MinHash Jaccard estimate, so a band
collision below the threshold is never reported. (benchmarks/dedup.py measured this against
the hand-written numpy MinHash/LSH it replaced, on the same data, in the same run.)
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from stages.shared.verify import normalize_text, shingles, text_digest

__all__ = [
    "NearIndex",
    "exact_duplicates",
    "first_of",
    "lsh_bands",
    "near_duplicates",
    "normalize_text",
    "shingles",
]


def _scope_ids(scopes: Sequence[Hashable] | None, n: int) -> list[int]:
    if scopes is None:
        return [0] * n
    if len(scopes) != n:
        raise ValueError(f"got {n} texts but {len(scopes)} scopes")
    ids: dict[Hashable, int] = {}
    return [ids.setdefault(s, len(ids)) for s in scopes]


def exact_duplicates(
    texts: Sequence[str], scopes: Sequence[Hashable] | None = None
) -> list[int | None]:
    """For each text, the index of the first earlier text in the same scope with the same
    normalized content, else None."""
    sids = _scope_ids(scopes, len(texts))
    first: dict[tuple[int, bytes], int] = {}
    return [first_of(first, (sids[i], text_digest(t)), i) for i, t in enumerate(texts)]


def first_of(first: dict, key: Hashable, i: int) -> int | None:
    """The index that first held `key` (recording `i` if none did), or None when that is `i`:
    what an exact dedup holds is one digest per kept text (filter's passes use it too)."""
    j = first.setdefault(key, i)
    return None if j == i else j


def lsh_bands(threshold: float, num_perm: int) -> int:
    """The band count (a divisor of num_perm) whose LSH S-curve best separates pairs above and
    below `threshold`, weighing a missed duplicate 49 to 1 against a false candidate: every
    candidate is confirmed on its MinHash anyway, so a false one costs only a comparison."""
    steps = 200

    def area(f, lo: float, hi: float) -> float:  # f: a one-line integrand
        width = (hi - lo) / steps
        return sum(f(lo + (i + 0.5) * width) for i in range(steps)) * width

    best, best_err = 1, float("inf")
    for b in (d for d in range(1, num_perm + 1) if num_perm % d == 0):
        r = num_perm // b
        false_pos = area(lambda s, b=b, r=r: 1 - (1 - s**r) ** b, 0.0, threshold)
        false_neg = area(lambda s, b=b, r=r: (1 - s**r) ** b, threshold, 1.0)
        err = 0.02 * false_pos + 0.98 * false_neg
        if err < best_err:
            best, best_err = b, err
    return best


def near_duplicates(
    texts: Sequence[str],
    scopes: Sequence[Hashable] | None = None,
    *,
    threshold: float = 0.8,
    shingle: int = 3,
    num_perm: int = 128,
    seed: int = 0,
) -> list[int | None]:
    """For each text, the index of the earliest earlier kept text in the same scope whose
    estimated Jaccard similarity (over word shingles) is >= threshold, else None.

    Records are visited in order, as a query-then-insert MinHash LSH does: a record that is a
    near duplicate is not itself indexed, so chains A~B~C with A!~C keep A and C. Empty texts are
    never near duplicates (exact dedup handles them).
    """
    sids = _scope_ids(scopes, len(texts))
    index = NearIndex(threshold=threshold, shingle=shingle, num_perm=num_perm, seed=seed)
    return [index.seen(sids[i], i, text) for i, text in enumerate(texts)]


class NearIndex:
    """near_duplicates one text at a time, for a stream: it holds the MinHashes of the texts it
    kept, never a text. A scope of up to SMALL kept texts (a question's samples) is searched
    pair by pair for what an LSH index would find, a band of equal values then the Jaccard
    estimate: an rensa index costs ~4 KB a scope before its first text, a million questions'
    worth more than their samples. A scope that outgrows SMALL moves into an LSH index."""

    SMALL = 64

    def __init__(self, *, threshold: float, shingle: int, num_perm: int, seed: int = 0) -> None:
        self.threshold, self.shingle, self.num_perm, self.seed = threshold, shingle, num_perm, seed
        self.bands = lsh_bands(threshold, num_perm)
        self.small: dict[Hashable, list[tuple[int, Any]]] = {}  # scope -> [(index, MinHash)]
        self.indexes: dict[Hashable, Any] = {}  # scope -> RMinHashLSH, for the large scopes
        self.hashes: dict[int, Any] = {}  # the MinHashes the LSH indexes hold, by index

    def seen(self, scope: Hashable, i: int, text: str) -> int | None:
        """The earliest kept text in `scope` that `text` (index `i`) nearly duplicates, or None
        (and `text` is kept)."""
        from rensa import RMinHash

        grams = shingles(text, self.shingle)
        if not grams:
            return None
        m = RMinHash(num_perm=self.num_perm, seed=self.seed)
        m.update(grams)
        t, index = self.threshold, self.indexes.get(scope)
        if index is not None:
            hits = [j for j in index.query(m) if self.hashes[j].jaccard(m) >= t]
        else:
            mine, digest = self.small.get(scope, ()), m.digest()
            hits = [j for j, h in mine if h.jaccard(m) >= t and self._band(h.digest(), digest)]
        if hits:
            return min(hits)
        if index is not None:
            index.insert(i, m)
            self.hashes[i] = m
        else:
            self._keep(scope, i, m)
        return None

    def _band(self, a: list[int], b: list[int]) -> bool:
        """Two signatures share a band (rensa's bands: runs of num_perm / bands values)."""
        r = self.num_perm // self.bands
        return any(a[k : k + r] == b[k : k + r] for k in range(0, self.num_perm, r))

    def _keep(self, scope: Hashable, i: int, m: Any) -> None:
        from rensa import RMinHashLSH

        mine = self.small.setdefault(scope, [])
        mine.append((i, m))
        if len(mine) > self.SMALL:
            index = self.indexes[scope] = RMinHashLSH(self.threshold, self.num_perm, self.bands)
            for j, h in self.small.pop(scope):
                index.insert(j, h)
                self.hashes[j] = h

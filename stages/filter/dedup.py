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

from stages.shared.verify import normalize_text, text_digest

__all__ = ["exact_duplicates", "lsh_bands", "near_duplicates", "normalize_text"]


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
    out: list[int | None] = []
    for i, t in enumerate(texts):
        j = first.setdefault((sids[i], text_digest(t)), i)
        out.append(None if j == i else j)
    return out


def shingles(text: str, k: int) -> list[str]:
    """Word k-grams of the normalized text; a text shorter than k is one shingle of all its
    words, an empty text has none."""
    words = normalize_text(text).split()
    if len(words) <= k:
        return [" ".join(words)] if words else []
    return [" ".join(words[i : i + k]) for i in range(len(words) - k + 1)]


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
    from rensa import RMinHash, RMinHashLSH

    sids = _scope_ids(scopes, len(texts))
    bands = lsh_bands(threshold, num_perm)
    indexes: dict[int, RMinHashLSH] = {}
    hashes: list[RMinHash | None] = []
    out: list[int | None] = []
    for i, text in enumerate(texts):
        grams = shingles(text, shingle)
        if not grams:
            hashes.append(None)
            out.append(None)
            continue
        m = RMinHash(num_perm=num_perm, seed=seed)
        m.update(grams)
        hashes.append(m)
        index = indexes.get(sids[i])
        if index is None:
            index = indexes[sids[i]] = RMinHashLSH(threshold, num_perm, bands)
        hits = [j for j in index.query(m) if hashes[j].jaccard(m) >= threshold]  # type: ignore[union-attr]
        if hits:
            out.append(min(hits))
        else:
            index.insert(i, m)
            out.append(None)
    return out

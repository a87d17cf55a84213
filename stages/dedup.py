"""Exact and near (MinHash LSH) deduplication for the filter stage.

Both functions take texts plus a parallel list of scopes and return, for each index, the index
of the earlier *kept* record it duplicates, or None when the record is kept. Only records with
equal scope can duplicate each other: scope by question id to dedup samples of one question,
or pass one constant (or ``scopes=None``) for a global dedup.

The near-dup path is vectorized: words are hashed once per distinct word (blake2b, stable across
processes, unlike the salted built-in ``hash``), shingle hashes are combined with numpy, and the
MinHash signatures of all records are computed with a multiply-shift universal hash family
broadcast over all permutations at once. LSH banding finds candidates and every candidate is
verified by the Jaccard estimate of the full signatures, so band collisions below the threshold
are not reported.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Hashable, Sequence

import numpy as np

__all__ = [
    "exact_duplicates",
    "lsh_params",
    "minhash_signatures",
    "near_duplicates",
    "normalize_text",
]

# Punctuation goes, but math operators stay: "a + b" and "a - b" are different completions.
_PUNCT = re.compile(r"[^\w\s+\-*/=<>^%|]")
# Same mapping for ASCII text via str.translate, which is ~2x faster than the regex.
_ASCII_PUNCT = str.maketrans({chr(c): " " for c in range(128) if _PUNCT.match(chr(c))})

_U64 = np.uint64
_M1 = _U64(0x9E3779B97F4A7C15)  # odd constants from splitmix64
_M2 = _U64(0xBF58476D1CE4E5B9)
_M3 = _U64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1
_EMPTY = np.uint32(0xFFFFFFFF)
# Shingles per minhash block: block x num_perm uint64 stays cache-sized (2048 * 128 * 8 = 2 MiB).
_BLOCK = 2048


def normalize_text(s: str) -> str:
    """Lowercase, drop punctuation (keeping math operators), collapse whitespace."""
    s = s.lower()
    s = s.translate(_ASCII_PUNCT) if s.isascii() else _PUNCT.sub(" ", s)
    return " ".join(s.split())


def _scope_ids(scopes: Sequence[Hashable] | None, n: int) -> np.ndarray:
    if scopes is None:
        return np.zeros(n, dtype=np.int64)
    if len(scopes) != n:
        raise ValueError(f"got {n} texts but {len(scopes)} scopes")
    ids: dict[Hashable, int] = {}
    return np.fromiter((ids.setdefault(s, len(ids)) for s in scopes), dtype=np.int64, count=n)


def exact_duplicates(
    texts: Sequence[str], scopes: Sequence[Hashable] | None = None
) -> list[int | None]:
    """For each text, the index of the first earlier text in the same scope with the same
    normalized content, else None."""
    sids = _scope_ids(scopes, len(texts))
    first: dict[tuple[int, bytes], int] = {}
    out: list[int | None] = []
    for i, t in enumerate(texts):
        digest = hashlib.blake2b(
            normalize_text(t).encode("utf-8", "surrogatepass"), digest_size=16
        ).digest()
        j = first.setdefault((int(sids[i]), digest), i)
        out.append(None if j == i else j)
    return out


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, in place on a uint64 array (wrapping arithmetic is intended)."""
    h ^= h >> _U64(30)
    h *= _M2
    h ^= h >> _U64(27)
    h *= _M3
    h ^= h >> _U64(31)
    return h


def _word_hash(w: str) -> int:
    d = hashlib.blake2b(w.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(d, "little", signed=True)


def _shingles(texts: Sequence[str], shingle: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit shingle hashes of all texts, concatenated, and each hash's record index."""
    # All per-word work runs in C loops (str.split, set, map): one pass over the joined corpus.
    normalized = [normalize_text(t) for t in texts]
    # normalize_text leaves single spaces and no edge spaces, so words = spaces + 1.
    lengths = np.fromiter(
        (t.count(" ") + 1 if t else 0 for t in normalized), dtype=np.int64, count=len(texts)
    )
    words = " ".join(normalized).split()
    vocab = {w: _word_hash(w) for w in set(words)}  # stable per word, so set order is harmless
    tok = np.fromiter(map(vocab.__getitem__, words), dtype=np.int64, count=len(words))
    tok = tok.view(np.uint64)
    rec = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
    n_tok = tok.size

    # Shingle at position p combines tokens p..p+k-1 (order-sensitive); it is valid when all k
    # tokens belong to one record. A record shorter than k gets one shingle of all its words.
    k = min(shingle, max(n_tok, 1))
    m = n_tok - k + 1
    h = tok[:m].copy() if m > 0 else np.zeros(0, dtype=np.uint64)
    for j in range(1, k):
        h *= _M1
        h ^= tok[j : j + m]
    valid = rec[:m] == rec[k - 1 : k - 1 + m] if m > 0 else np.zeros(0, dtype=bool)
    hashes, owners = h[valid], rec[:m][valid]

    short = np.flatnonzero((lengths > 0) & (lengths < shingle))
    if short.size:
        starts = np.concatenate(([0], np.cumsum(lengths)))
        extra = []
        for r in short.tolist():
            acc = 0
            for j, t in enumerate(tok[starts[r] : starts[r + 1]].tolist()):
                acc = t if j == 0 else ((acc * int(_M1)) & _MASK64) ^ t
            extra.append(acc)
        hashes = np.concatenate((hashes, np.array(extra, dtype=np.uint64)))
        owners = np.concatenate((owners, short))
        order = np.argsort(owners, kind="stable")
        hashes, owners = hashes[order], owners[order]
    # Mix (so that similar inputs spread out) and keep the high 32 bits as the shingle key.
    return _mix64(hashes) >> _U64(32), owners


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False) | _U64(1)
    b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False)
    return a, b


def minhash_signatures(
    texts: Sequence[str], *, shingle: int = 3, num_perm: int = 128, seed: int = 0
) -> np.ndarray:
    """(len(texts), num_perm) uint32 MinHash signatures over word shingles.

    Permutation i is the multiply-add-shift hash ``(a_i * x + b_i) mod 2**64 >> 32`` of the 32-bit
    shingle key x (a_i odd): a 2-universal family that needs no modulo, so numpy evaluates it for
    a block of shingles times all permutations in three passes. Empty texts get all-ones rows.
    """
    if shingle < 1 or num_perm < 1:
        raise ValueError("shingle and num_perm must be >= 1")
    n = len(texts)
    sig = np.full((n, num_perm), _EMPTY, dtype=np.uint32)
    x, owners = _shingles(texts, shingle)
    a, b = _permutations(num_perm, seed)
    a, b = a[:, None], b[:, None]
    # Permutations x shingles: reduceat along the contiguous axis is ~2x faster than the transpose.
    buf = np.empty((num_perm, _BLOCK), dtype=np.uint64)
    for s in range(0, x.size, _BLOCK):
        xs, rs = x[s : s + _BLOCK], owners[s : s + _BLOCK]
        view = buf[:, : xs.size]
        np.multiply(a, xs[None, :], out=view)
        view += b
        view >>= _U64(32)
        # Segments of equal owner inside the block; a record spanning blocks is min-merged.
        starts = np.flatnonzero(np.concatenate(([True], rs[1:] != rs[:-1])))
        mins = np.minimum.reduceat(view, starts, axis=1).T.astype(np.uint32)
        recs = rs[starts]
        sig[recs] = np.minimum(sig[recs], mins)
    return sig


_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz


def lsh_params(threshold: float, num_perm: int, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimizing weighted false-positive and false-negative areas under the LSH
    S-curve; fn_weight=0.5 is datasketch's MinHashLSH choice (trapezoid rule instead of quad)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError("threshold must be in (0, 1)")
    lo = np.linspace(0.0, threshold, 257)
    hi = np.linspace(threshold, 1.0, 257)
    best, best_err = (1, 1), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _trapezoid(1.0 - (1.0 - lo**r) ** b, lo)
            fn = _trapezoid((1.0 - hi**r) ** b, hi)
            err = (1.0 - fn_weight) * fp + fn_weight * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best


_PARAMS_CACHE: dict[tuple[float, int], tuple[int, int]] = {}


def _band_keys(sig: np.ndarray, sids: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 bucket keys: a hash of (band index, scope, the band's rows)."""
    n = sig.shape[0]
    keys = np.empty((n, bands), dtype=np.uint64)
    scope_h = _mix64(sids.astype(np.uint64) * _M1)
    for i in range(bands):
        h = scope_h ^ _U64(((i + 1) * int(_M3)) & _MASK64)
        for col in sig[:, i * rows : (i + 1) * rows].T:
            h *= _M1
            h ^= col.astype(np.uint64)
        keys[:, i] = _mix64(h)
    return keys


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

    Records are visited in order, as a query-then-insert MinHash LSH would: a record that is a
    near duplicate is not itself indexed, so chains A~B~C with A!~C keep A and C. Empty texts are
    never near duplicates (exact dedup handles them).
    """
    n = len(texts)
    sids = _scope_ids(scopes, n)
    out: list[int | None] = [None] * n
    if n < 2:
        return out
    key = (float(threshold), int(num_perm))
    if key not in _PARAMS_CACHE:
        # Every LSH candidate is verified on its signature below, so a false positive only costs
        # a comparison while a false negative is a missed duplicate: weigh misses 9 to 1.
        _PARAMS_CACHE[key] = lsh_params(threshold, num_perm, fn_weight=0.9)
    bands, rows = _PARAMS_CACHE[key]

    sig = minhash_signatures(texts, shingle=shingle, num_perm=num_perm, seed=seed)
    nonempty = ~np.all(sig == _EMPTY, axis=1)
    keys = _band_keys(sig, sids, bands, rows)

    # Only records sharing at least one bucket with another record can be (or have) duplicates;
    # everything else is decided without a Python loop.
    flat = keys[nonempty].ravel()
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    shared = (counts[inverse] > 1).reshape(-1, bands).any(axis=1)
    active = np.flatnonzero(nonempty)[shared]

    need = int(np.ceil(threshold * num_perm - 1e-9))  # equal rows needed for estimate >= threshold
    buckets: dict[int, list[int]] = {}
    for i in active.tolist():
        row_keys = keys[i].tolist()
        cands: set[int] = set()
        for k in row_keys:
            members = buckets.get(k)
            if members:
                cands.update(members)
        if cands:
            c = np.fromiter(cands, dtype=np.int64, count=len(cands))
            c = c[sids[c] == sids[i]]  # a 64-bit key collision across scopes is not a match
            agree = (sig[c] == sig[i]).sum(axis=1)
            hits = c[agree >= need]
            if hits.size:
                out[i] = int(hits.min())
                continue
        for k in row_keys:
            buckets.setdefault(k, []).append(i)
    return out

"""Near-dedup benchmark: the filter's near_duplicates (rensa MinHash + LSH, with per-scope
indexes and confirmed candidates) against a plain datasketch MinHashLSH.

    .venv/bin/python benchmarks/dedup.py [--n 100000] [--threshold 0.6] [--shingle 3]

Synthetic records are random word sequences (50-100 words, a few thousand word vocabulary);
a fraction of them are planted copies of another record with 1-3 words replaced. With 3-word
shingles a planted copy has Jaccard >= ~0.68 to its source, random pairs ~0. A planted copy counts
as found when it is flagged as a duplicate of any record of its cluster (source + its copies); a
flag is correct (precision) under the same rule. Both methods run in this process, one after the
other, with the same threshold / num_perm / shingle and the same query-then-insert order.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.filter.dedup import near_duplicates, normalize_text  # noqa: E402


def make_records(
    n: int, dup_frac: float, vocab_size: int, seed: int
) -> tuple[list[str], list[int]]:
    """Texts and each text's cluster id (originals are their own cluster), in shuffled order."""
    rng = random.Random(seed)
    vocab = [f"w{i}x{rng.randrange(10**6)}" for i in range(vocab_size)]
    n_dup = int(n * dup_frac)
    originals = [[rng.choice(vocab) for _ in range(rng.randint(50, 100))] for _ in range(n - n_dup)]
    records = [(words, c) for c, words in enumerate(originals)]
    for _ in range(n_dup):
        c = rng.randrange(len(originals))
        words = list(originals[c])
        for _ in range(rng.randint(1, 3)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        records.append((words, c))
    rng.shuffle(records)
    return [" ".join(w) for w, _ in records], [c for _, c in records]


def baseline(texts: list[str], threshold: float, shingle: int, num_perm: int) -> list[int | None]:
    """The straightforward datasketch usage: MinHash.update per shingle, query, insert if new."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    out: list[int | None] = []
    for i, t in enumerate(texts):
        words = normalize_text(t).split()
        m = MinHash(num_perm=num_perm)
        for j in range(max(len(words) - shingle + 1, 1)):
            m.update(" ".join(words[j : j + shingle]).encode("utf-8"))
        hits = lsh.query(m)
        if hits:
            out.append(min(hits))
        else:
            lsh.insert(i, m)
            out.append(None)
    return out


def score(dup_of: list[int | None], cluster: list[int]) -> tuple[float, float, int]:
    """(recall, precision, flagged) against the planted clusters."""
    seen: set[int] = set()
    planted = 0
    for c in cluster:  # every record of a cluster after its first is a planted duplicate
        if c in seen:
            planted += 1
        seen.add(c)
    flagged = [(i, j) for i, j in enumerate(dup_of) if j is not None]
    correct = sum(cluster[i] == cluster[j] for i, j in flagged)
    recall = correct / planted if planted else 1.0
    precision = correct / len(flagged) if flagged else 1.0
    return recall, precision, len(flagged)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dup-frac", type=float, default=0.10)
    ap.add_argument("--vocab", type=int, default=3000)
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--shingle", type=int, default=3)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args()

    texts, cluster = make_records(args.n, args.dup_frac, args.vocab, args.seed)
    print(
        f"records={args.n} planted_frac={args.dup_frac} threshold={args.threshold} "
        f"shingle={args.shingle} num_perm={args.num_perm}"
    )

    t0 = time.perf_counter()
    ours = near_duplicates(
        texts, None, threshold=args.threshold, shingle=args.shingle, num_perm=args.num_perm
    )
    t_ours = time.perf_counter() - t0
    r, p, f = score(ours, cluster)
    print(f"filter     {t_ours:8.2f} s  recall={r:.4f} precision={p:.4f} flagged={f}")

    if not args.skip_baseline:
        t0 = time.perf_counter()
        base = baseline(texts, args.threshold, args.shingle, args.num_perm)
        t_base = time.perf_counter() - t0
        r, p, f = score(base, cluster)
        print(f"datasketch {t_base:8.2f} s  recall={r:.4f} precision={p:.4f} flagged={f}")
        print(f"speedup    {t_base / t_ours:8.1f}x")


if __name__ == "__main__":
    main()

"""Exact and near (MinHash LSH) dedup: what is caught, what is not, scoping, determinism."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
from conftest import ROOT

from stages.filter.dedup import (
    exact_duplicates,
    lsh_bands,
    near_duplicates,
    normalize_text,
    shingles,
)


def _text(rng: random.Random, n: int = 60, vocab: int = 2000) -> str:
    return " ".join(f"word{rng.randrange(vocab)}" for _ in range(n))


def _mutate(rng: random.Random, text: str, changes: int) -> str:
    words = text.split()
    for _ in range(changes):
        words[rng.randrange(len(words))] = f"other{rng.randrange(10**6)}"
    return " ".join(words)


def test_normalize_text() -> None:
    assert normalize_text("  Hello,   WORLD!\n\tBye. ") == "hello world bye"
    assert normalize_text("a + b") != normalize_text("a - b")  # math operators survive
    assert normalize_text("Café, ÉTÉ…") == "café été"
    assert normalize_text("") == ""


def test_exact_duplicates_with_normalization() -> None:
    texts = ["The answer is 4.", "the  answer is 4", "The answer is 5.", "THE ANSWER IS 4!", ""]
    assert exact_duplicates(texts) == [None, 0, None, 0, None]


def test_exact_duplicates_scoped() -> None:
    texts = ["same text", "same text", "same text", "same text"]
    scopes = ["q1", "q2", "q1", "q2"]
    assert exact_duplicates(texts, scopes) == [None, None, 0, 1]
    assert exact_duplicates(texts, ["all"] * 4) == [None, 0, 0, 0]


def test_near_duplicates_caught() -> None:
    rng = random.Random(0)
    base = [_text(rng) for _ in range(50)]
    texts = base + [_mutate(rng, base[i], changes=2) for i in range(50)]
    got = near_duplicates(texts, threshold=0.5, shingle=3, num_perm=128)
    assert got[:50] == [None] * 50  # unrelated texts are not flagged
    assert sum(got[50 + i] == i for i in range(50)) >= 48


def test_near_duplicates_unrelated_not_flagged() -> None:
    rng = random.Random(1)
    texts = [_text(rng, n=rng.randint(30, 90)) for _ in range(500)]
    assert near_duplicates(texts, threshold=0.5) == [None] * 500


def test_near_duplicates_points_to_earliest_kept() -> None:
    rng = random.Random(2)
    a = _text(rng)
    b = _mutate(rng, a, 1)
    c = _mutate(rng, a, 1)
    got = near_duplicates([_text(rng), a, b, c], threshold=0.6)
    assert got == [None, None, 1, 1]


def test_near_duplicates_scoped() -> None:
    rng = random.Random(3)
    a = _text(rng)
    texts = [a, _mutate(rng, a, 1), a, _mutate(rng, a, 1)]
    by_question = near_duplicates(texts, ["q1", "q2", "q3", "q1"], threshold=0.7)
    assert by_question == [None, None, None, 0]
    assert near_duplicates(texts, ["g"] * 4, threshold=0.7) == [None, 0, 0, 0]
    assert near_duplicates(texts, None, threshold=0.7) == [None, 0, 0, 0]


def test_near_duplicates_edge_inputs() -> None:
    assert near_duplicates([], threshold=0.8) == []
    assert near_duplicates(["only one"], threshold=0.8) == [None]
    # empty texts are never near dups; texts shorter than a shingle still compare
    assert near_duplicates(["", "", "", "x y", "x y"], threshold=0.8, shingle=3) == [
        None,
        None,
        None,
        None,
        3,
    ]
    with pytest.raises(ValueError):
        near_duplicates(["a"], ["s1", "s2"], threshold=0.8)


def test_shingles() -> None:
    assert shingles("A b, c d", 3) == ["a b c", "b c d"]
    assert shingles("x y", 3) == ["x y"]  # shorter than a shingle: one of all its words
    assert shingles("  ", 3) == []


def test_lsh_bands_divide_num_perm_and_favour_recall() -> None:
    for threshold in (0.5, 0.7, 0.8, 0.9):
        b = lsh_bands(threshold, 128)
        r = 128 // b
        assert 128 % b == 0
        # The S-curve's midpoint sits below the threshold (misses weigh 49 to 1), and a pair
        # just above the threshold is a candidate most of the time.
        assert (1 / b) ** (1 / r) < threshold
        assert 1 - (1 - (threshold + 0.05) ** r) ** b > 0.9


def test_deterministic_across_processes() -> None:
    # Python's str hash is salted per process; a fresh interpreter must give the same result.
    code = (
        "import random, sys; sys.path.insert(0, sys.argv[1]);"
        "from stages.filter.dedup import near_duplicates as nd;"
        "r = random.Random(5); a = [' '.join(str(r.random()) for _ in range(30)) for _ in range(20)];"
        "b = [' '.join(t.split()[:-1] + ['x']) for t in a];"
        "print(nd(a + b, threshold=0.7, seed=7))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code, str(ROOT)],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(runs) == 1 and "None" in next(iter(runs))


def _one_lsh_index_per_scope(texts, scopes, threshold, shingle, num_perm) -> list[int | None]:
    """What near_duplicates found before it held small scopes as lists: an rensa index each."""
    from rensa import RMinHash, RMinHashLSH

    bands = lsh_bands(threshold, num_perm)
    indexes, hashes, out = {}, {}, []
    for i, (text, scope) in enumerate(zip(texts, scopes, strict=True)):
        m = RMinHash(num_perm=num_perm, seed=0)
        m.update(shingles(text, shingle))
        index = indexes.setdefault(scope, RMinHashLSH(threshold, num_perm, bands))
        hits = [j for j in index.query(m) if hashes[j].jaccard(m) >= threshold]
        if hits:
            out.append(min(hits))
        else:
            index.insert(i, m)
            hashes[i] = m
            out.append(None)
    return out


def test_small_scopes_searched_pair_by_pair_find_what_lsh_indexes_find() -> None:
    """Mutants of a few bases, from near copies to strangers, in 30 small scopes and one of 300
    (which outgrows the pair-by-pair search into an index): the same duplicates either way."""
    from stages.filter.dedup import NearIndex

    rng = random.Random(5)
    bases = [_text(rng, 40, 50) for _ in range(4)]
    texts = [_mutate(rng, rng.choice(bases), rng.randrange(0, 14)) for _ in range(600)]
    scopes = [f"q{rng.randrange(30)}" for _ in range(300)] + ["big"] * 300
    got = near_duplicates(texts, scopes, threshold=0.7, shingle=3, num_perm=64)
    assert got == _one_lsh_index_per_scope(texts, scopes, 0.7, 3, 64)
    assert 50 < sum(j is not None for j in got) < 550  # both outcomes are well represented
    assert NearIndex.SMALL < scopes.count("big") - sum(j is not None for j in got[300:])

"""The soft-label store: records read back as written, a cut or damaged record is never read
and never hides the records after it, and the cost per token stays under 150 bytes at k=20."""

from __future__ import annotations

import numpy as np
import pytest

from stages.shared.softlabels import (
    Meta,
    Store,
    TokenLogprobs,
    copy_records,
    ref_problem,
)

META = Meta(k=20, temperature=0.7, mode="raw", vocab="ab" * 32)


def _tl(tokens: int, seed: int, k: int = 20) -> TokenLogprobs:
    rng = np.random.default_rng(seed)
    top = -np.sort(rng.exponential(3, (tokens, k)), 1).astype(np.float32)
    top = top[:, ::-1].copy()
    ids = rng.integers(0, 49152, (tokens, k)).astype(np.int32)
    return TokenLogprobs(ids[:, 0].copy(), top[:, 0].copy(), ids, top)


def test_records_read_back_as_written(tmp_path) -> None:
    with Store.open(tmp_path / "s.bin") as store:
        refs = [store.append(f"id{i}", META, _tl(50 + i, i)) for i in range(5)]
    store = Store.open(tmp_path / "s.bin")
    for i, ref in enumerate(refs):
        header, tl = store.read(ref["sha"])
        want = _tl(50 + i, i)
        assert header["id"] == f"id{i}" and header["k"] == 20 and header["vocab"] == META.vocab
        assert (tl.ids == want.ids).all() and (tl.top_ids == want.top_ids).all()
        # float16: three significant digits
        assert np.allclose(tl.top_logprobs, want.top_logprobs, rtol=1e-3, atol=1e-3)


def test_the_same_record_twice_is_written_once(tmp_path) -> None:
    with Store.open(tmp_path / "s.bin") as store:
        a = store.append("x", META, _tl(10, 1))
        size = (tmp_path / "s.bin").stat().st_size
        b = store.append("x", META, _tl(10, 1))
    assert a == b and (tmp_path / "s.bin").stat().st_size == size


def test_k20_costs_at_most_150_bytes_per_token(tmp_path) -> None:
    with Store.open(tmp_path / "s.bin") as store:
        refs = [store.append(f"s{i}", META, _tl(60, i)) for i in range(20)]
    tokens = sum(r["tokens"] for r in refs)
    assert (tmp_path / "s.bin").stat().st_size / tokens <= 150


def test_a_torn_last_record_is_cut_before_the_next_append(tmp_path) -> None:
    path = tmp_path / "s.bin"
    with Store.open(path) as store:
        good = store.append("a", META, _tl(30, 1))
        torn = store.append("b", META, _tl(30, 2))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])  # a kill in the middle of the second write
    store = Store.open(path)
    assert store.has(good["sha"]) and not store.has(torn["sha"])
    with store:
        again = store.append("b", META, _tl(30, 2))
    store = Store.open(path)
    assert store.has(good["sha"]) and store.has(again["sha"]) and store.damaged_bytes == 0
    assert path.stat().st_size == len(data)


def test_damage_in_the_middle_loses_that_record_only(tmp_path) -> None:
    path = tmp_path / "s.bin"
    with Store.open(path) as store:
        refs = [store.append(f"id{i}", META, _tl(40, i)) for i in range(4)]
    raw = bytearray(path.read_bytes())
    raw[refs[0]["bytes"] + 200] ^= 0xFF  # a flipped byte inside the second record
    path.write_bytes(bytes(raw))
    store = Store.open(path)
    assert [store.has(r["sha"]) for r in refs] == [True, False, True, True]
    assert store.damaged_bytes == refs[1]["bytes"]
    assert ref_problem({"logprobs": refs[1]}, store) is not None
    assert ref_problem({"logprobs": refs[2]}, store) is None
    assert ref_problem({}, store) is None


def test_copy_keeps_a_selection_once_each(tmp_path) -> None:
    with Store.open(tmp_path / "pool.bin") as store:
        refs = [store.append(f"id{i}", META, _tl(20, i)) for i in range(5)]
    shas = [refs[3]["sha"], refs[1]["sha"], refs[3]["sha"]]
    size = copy_records(Store.open(tmp_path / "pool.bin"), shas, tmp_path / "kept.bin")
    kept = Store.open(tmp_path / "kept.bin")
    assert set(kept.index) == {refs[3]["sha"], refs[1]["sha"]}
    assert size == refs[3]["bytes"] + refs[1]["bytes"]


def test_infinite_and_missing_values_are_stored_as_a_finite_floor(tmp_path) -> None:
    tl = _tl(3, 0, k=4)
    tl.top_logprobs[0, 3] = -np.inf
    tl.top_logprobs[1, 2] = np.nan
    with Store.open(tmp_path / "s.bin") as store:
        ref = store.append("x", Meta(4, 1.0, "raw", "v"), tl)
    _, back = Store.open(tmp_path / "s.bin").read(ref["sha"])
    assert np.isfinite(back.top_logprobs).all() and back.top_logprobs.min() == -1.0e4


def test_a_short_top_k_is_padded(tmp_path) -> None:
    got = TokenLogprobs.from_lists(
        {
            "ids": [5, 6],
            "logprobs": [-0.1, -0.2],
            "top_ids": [[5, 1], [6]],
            "top_logprobs": [[-0.1, -3.0], [-0.2]],
        },
        k=2,
    )
    assert got.top_ids.tolist() == [[5, 1], [6, 0]]
    assert got.top_logprobs[1, 1] == pytest.approx(-1.0e4)

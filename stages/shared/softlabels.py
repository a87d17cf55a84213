"""Soft labels: the teacher's top-k next-token distribution along its own completion, captured
while it writes (`generate.logprobs: k`) and kept in a binary, append-only store. The one stored
format for a model's scores on any text: the teacher's on a student's rollouts (on-policy
rounds, `scores.logprobs.bin`) and each model's on a drafted answer (eval.draft,
`draft_scores.logprobs.bin`) are records of the same kind, named by sha from their JSONL rows.

One store file holds many samples' records; each record is

    MAGIC (4 bytes) | header length (u32) | payload length (u32) | crc32 of header+payload (u32)
    header: UTF-8 JSON {"id", "tokens", "k", "temperature", "mode", "vocab"}
    payload: sampled ids int32[T] | sampled logprobs float16[T]
             | top-k ids int32[T*k] | top-k logprobs float16[T*k]

so a token costs 6 + 6k bytes (126 at k=20) plus the header's share. A record is addressed by
the sha256 of its header and payload: the sample row names the sha it was written with, so a
record is only ever read for the sample and the very values it was written for, and writing the
same record twice is skipped. A record cut short by a kill, or damaged on disk, fails its crc
and is never read: its sample counts as having no soft labels, and generate asks for it again.

`mode` says what the values are: `raw` (the model's log-softmax at temperature 1, vLLM's
`raw_logprobs`, the default) or `processed` (after the sampling temperature and top-p).
`vocab` is the sha256 of the teacher tokenizer's vocabulary (token -> id), which a student must
share to learn from the ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy loads when soft labels are read or written, not with the stage
    import numpy as np

MAGIC = b"DLP1"
_HEAD = struct.Struct("<4sIII")
# The one "minus infinity" of every logprob table: an underflow (-inf) is stored as this, and
# padding too, so p * log p stays 0, never nan. The losses (stages/train/losses/divergence.py)
# and the draft estimates (stages/eval/acceptance.py) read it from here.
FLOOR = -1.0e4
MAX_HEADER = 1 << 16


@dataclass(frozen=True)
class Meta:
    """What a record's numbers mean; the same for every token of a sample."""

    k: int
    temperature: float
    mode: str  # raw | processed
    vocab: str  # sha256 of the teacher tokenizer's vocabulary


@dataclass
class TokenLogprobs:
    """One completion's soft labels: T tokens, k alternatives each."""

    ids: np.ndarray  # int32 [T]: the token the teacher wrote
    logprobs: np.ndarray  # float32 [T]: its logprob
    top_ids: np.ndarray  # int32 [T, k]
    top_logprobs: np.ndarray  # float32 [T, k]

    @classmethod
    def from_lists(cls, d: dict[str, Any], k: int) -> TokenLogprobs:
        """From the lists a client or the offline engine hands over; every row padded to k."""
        import numpy as np

        t = len(d["ids"])
        top_ids = np.zeros((t, k), np.int32)
        top_lp = np.full((t, k), FLOOR, np.float32)
        for i, (ids, lps) in enumerate(zip(d["top_ids"], d["top_logprobs"], strict=True)):
            n = min(k, len(ids))
            top_ids[i, :n] = ids[:n]
            top_lp[i, :n] = lps[:n]
        return cls(
            np.asarray(d["ids"], np.int32),
            np.asarray(d["logprobs"], np.float32),
            top_ids,
            top_lp,
        )

    @property
    def tokens(self) -> int:
        return int(self.ids.shape[0])


def _f16(a: np.ndarray) -> bytes:
    import numpy as np

    return np.maximum(np.nan_to_num(a, nan=FLOOR), FLOOR).astype("<f2").tobytes()


def encode(sample_id: str, meta: Meta, tl: TokenLogprobs) -> tuple[bytes, str]:
    """(the record's bytes, its sha256)."""
    header = json.dumps(
        {"id": sample_id, "tokens": tl.tokens, **meta.__dict__}, sort_keys=True
    ).encode()
    payload = b"".join(
        (
            tl.ids.astype("<i4").tobytes(),
            _f16(tl.logprobs),
            tl.top_ids.astype("<i4").tobytes(),
            _f16(tl.top_logprobs),
        )
    )
    body = header + payload
    sha = hashlib.sha256(body).hexdigest()
    return _HEAD.pack(MAGIC, len(header), len(payload), zlib.crc32(body)) + body, sha


def decode(header: dict[str, Any], payload: bytes) -> TokenLogprobs:
    import numpy as np

    t, k = int(header["tokens"]), int(header["k"])
    ids = np.frombuffer(payload, "<i4", t, 0)
    lp = np.frombuffer(payload, "<f2", t, 4 * t)
    top_ids = np.frombuffer(payload, "<i4", t * k, 6 * t).reshape(t, k)
    top_lp = np.frombuffer(payload, "<f2", t * k, 6 * t + 4 * t * k).reshape(t, k)
    return TokenLogprobs(
        ids.astype(np.int32),
        lp.astype(np.float32),
        top_ids.astype(np.int32),
        top_lp.astype(np.float32),
    )


@dataclass
class _Entry:
    start: int  # of the record
    hlen: int
    plen: int
    header: dict[str, Any]

    @property
    def size(self) -> int:
        return _HEAD.size + self.hlen + self.plen


@dataclass
class Store:
    """An append-only file of records, indexed by sha on open. Damaged spans are skipped (the
    scan resumes at the next record that checks out) and counted, never read."""

    path: Path
    index: dict[str, _Entry] = field(default_factory=dict)
    damaged_bytes: int = 0
    end: int = 0  # where the last good record ends: a torn tail after it is cut before appends
    _f: Any = None

    @classmethod
    def open(cls, path: Path) -> Store:
        store = cls(Path(path))
        if store.path.is_file():
            store._scan(store.path.read_bytes())
        return store

    def _scan(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            got = _record_at(data, pos)
            if got is None:
                nxt = data.find(MAGIC, pos + 1)
                skip_to = len(data) if nxt < 0 else nxt
                self.damaged_bytes += skip_to - pos
                pos = skip_to
                continue
            entry, sha = got
            self.index.setdefault(sha, entry)
            pos = self.end = pos + entry.size

    def has(self, sha: str) -> bool:
        return sha in self.index

    def read(self, sha: str) -> tuple[dict[str, Any], TokenLogprobs]:
        e = self.index[sha]
        with open(self.path, "rb") as f:
            f.seek(e.start + _HEAD.size + e.hlen)
            payload = f.read(e.plen)
        return e.header, decode(e.header, payload)

    def append(self, sample_id: str, meta: Meta, tl: TokenLogprobs) -> dict[str, Any]:
        """Write a record (unless this very record is there) and return the sample's reference
        to it. Flushed to the OS at once; `sync` makes it durable (before the row naming it)."""
        record, sha = encode(sample_id, meta, tl)
        if sha not in self.index:
            self._put(record, sha)
        return {"sha": sha, "k": meta.k, "tokens": tl.tokens, "bytes": len(record)}

    def take(self, src: Store, sha: str) -> None:
        """Copy record `sha` of `src` here as it is (unless this store has it): a shard's soft
        labels joining the run's store. `sync` makes it durable, as for `append`."""
        if sha in self.index:
            return
        e = src.index[sha]
        with open(src.path, "rb") as f:
            f.seek(e.start)
            self._put(f.read(e.size), sha)

    def _put(self, record: bytes, sha: str) -> None:
        """Append one whole record that checks out (made here, or read from another store)."""
        if self._f is None:
            self._open_for_append()
        self._f.write(record)
        self._f.flush()
        entry, _ = _record_at(record, 0)  # type: ignore[misc]  # it checks out
        entry.start = self.end
        self.index[sha] = entry
        self.end += len(record)

    def _open_for_append(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "ab")
        if self._f.tell() != self.end:  # a torn last record: it would hide the next one
            self._f.truncate(self.end)
            self._f.seek(self.end)

    def sync(self) -> None:
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self.sync()
            self._f.close()
            self._f = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _record_at(data: bytes, pos: int) -> tuple[_Entry, str] | None:
    """(its entry, its sha) for a record that checks out at `pos`; None for anything else."""
    if len(data) - pos < _HEAD.size:
        return None
    magic, hlen, plen, crc = _HEAD.unpack_from(data, pos)
    start = pos + _HEAD.size
    if magic != MAGIC or hlen > MAX_HEADER or start + hlen + plen > len(data):
        return None
    body = data[start : start + hlen + plen]
    if zlib.crc32(body) != crc:
        return None
    try:
        header = json.loads(body[:hlen])
        t, k = int(header["tokens"]), int(header["k"])
    except (ValueError, KeyError, TypeError):
        return None
    if plen != 6 * t * (k + 1):
        return None
    return _Entry(pos, hlen, plen, header), hashlib.sha256(body).hexdigest()


def ref_problem(row: dict[str, Any], store: Store) -> str | None:
    """Why a sample row's soft labels cannot be used ('' fields are checked by the caller)."""
    ref = row.get("logprobs")
    if ref is None:
        return None
    if not isinstance(ref, dict) or not isinstance(ref.get("sha"), str):
        return "field 'logprobs' is not a reference to a soft-label record"
    if not store.has(ref["sha"]):
        return f"its soft labels ({ref['sha'][:12]}) are missing or damaged in {store.path.name}"
    return None


def copy_records(src: Store, shas: list[str], dest: Path) -> int:
    """Write the records `shas` (in order, once each) to a new store at `dest`, atomically;
    returns its size. Used for a stage's own selection (filter's kept.logprobs.bin)."""
    tmp = dest.with_name(dest.name + ".tmp")
    seen: set[str] = set()
    with open(src.path, "rb") as f, open(tmp, "wb") as out:
        for sha in shas:
            if sha in seen:
                continue
            seen.add(sha)
            e = src.index[sha]
            f.seek(e.start)
            out.write(f.read(e.size))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dest)
    return dest.stat().st_size


def vocab_hash(tokenizer_dir: Path) -> str:
    """sha256 of the tokenizer's vocabulary (every token and its id, added tokens included)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    return vocab_hash_of(tok)


def vocab_hash_of(tok: Any) -> str:
    pairs = sorted(tok.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()

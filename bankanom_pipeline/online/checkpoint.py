"""The engine's whole state as a file: binary, no pickle, versioned, checksummed, written atomically.

Layout: one JSON header line, then the body. The header names the format and its version, the feature-set
version the engine implements, the high-water mark, the body's compression (zlib), byte length and sha256.
Uncompressed, the body is an 8-byte little-endian length, a JSON manifest of that length, then the blobs
the manifest points at: each kind's columns concatenated over its entities as little-endian typed arrays
(times int64, flags int8, numbers float64 with NaN for None, text int32 indexes into one string table, -1
for None). The string table holds each distinct text (entity keys, event ids, users, addresses) once.

``read`` refuses another format or format version, another feature-set version, a body whose length or
digest differs (a corrupt or cut file), and a malformed state, each with a ``CheckpointError`` naming it.
NaN stands for None without ambiguity: the engine refuses non-finite metrics.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import zlib
from array import array
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from bankanom_pipeline.online.tracks import Track

if TYPE_CHECKING:
    from bankanom_pipeline.online.engine import OnlineEngine

FORMAT = "bankanom-online-state"
FORMAT_VERSION = 2
_NAN = math.nan
_LITTLE = sys.byteorder == "little"


class CheckpointError(ValueError):
    """The checkpoint cannot be restored: another format or feature-set version, or a corrupt file."""


class _Strings:
    """The string table: each distinct text once, referred to by index (None by -1)."""

    def __init__(self):
        self.index: dict[str | None, int] = {None: -1}

    def refs(self, values: list) -> array:
        index = self.index
        for v in dict.fromkeys(values):  # the distinct values, in order: the file does not depend on hashing
            if v not in index:
                index[v] = len(index) - 1
        return array("i", map(index.__getitem__, values))

    def table(self) -> list[str]:
        return [v for v in self.index if v is not None]


class _Blobs:
    def __init__(self):
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, values: array) -> list:
        if not _LITTLE:
            values = array(values.typecode, values)
            values.byteswap()
        data = values.tobytes()
        ref = [values.typecode, self.size, len(values)]
        self.parts.append(data)
        self.size += len(data)
        return ref


def _concat(code: str, arrays) -> array:
    out = array(code)
    for values in arrays:
        out.extend(values)
    return out


def _column(code: str, cols: list, strings: _Strings) -> tuple[str, array]:
    """One payload column of a kind, concatenated over its entities, as the typed array it is stored as."""
    if code != "O":
        return code, _concat(code, cols)
    flat = list(chain.from_iterable(cols))
    # a column holds text or numbers, each possibly None (one column all None is stored as text)
    if next((v for v in flat if v is not None), "").__class__ is str:
        return "s", strings.refs(flat)
    return "f", array("d", [_NAN if v is None else v for v in flat])


def write(engine: OnlineEngine, path: Path) -> None:
    strings = _Strings()
    blobs = _Blobs()
    kinds = {}
    for kind, tracks in engine._kinds().items():
        single = isinstance(tracks, Track)
        keyed = [(None, tracks)] if single else list(tracks.items())
        parts = [(t.ts[t.head :], t.eid[t.head :], *(col[t.head :] for col in t.cols)) for _, t in keyed]
        codes = ["O" if col.__class__ is list else col.typecode for col in engine.new_track(kind).cols]
        entry = {
            "lengths": blobs.add(array("q", [len(p[0]) for p in parts])),
            "ts": blobs.add(_concat("q", (p[0] for p in parts))),
            "eid": blobs.add(strings.refs(list(chain.from_iterable(p[1] for p in parts)))),
            "cols": [],
        }
        if not single:
            entry["keys"] = blobs.add(strings.refs([key for key, _ in keyed]))
        for j, code in enumerate(codes):
            stored, values = _column(code, [p[2 + j] for p in parts], strings)
            entry["cols"].append([stored, blobs.add(values)])
        kinds[kind] = entry
    table = strings.table()
    text = "".join(table).encode("utf-8", "surrogatepass")
    manifest = orjson.dumps(
        {
            "allowed_lateness_s": engine.allowed_lateness_s,
            "high_water_mark": list(engine._hwm) if engine._hwm is not None else None,
            "swept": engine._swept,
            "counters": engine.counters,
            "strings": {"lengths": blobs.add(array("q", map(len, table))), "bytes": len(text)},
            "kinds": kinds,
        }
    )
    # zlib at level 1: a third of the size for a few tenths of a second per 100k events (times, flags
    # and repeated references compress well)
    body = zlib.compress(b"".join([len(manifest).to_bytes(8, "little"), manifest, *blobs.parts, text]), 1)
    header = orjson.dumps(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "feature_set_version": engine.FEATURE_SET_VERSION,
            "high_water_mark": list(engine._hwm) if engine._hwm is not None else None,
            "compression": "zlib",
            "bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    with tmp.open("wb") as handle:
        handle.write(header + b"\n")
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _header(path: Path, data: bytes) -> tuple[dict, memoryview]:
    line, sep, _ = data[:4096].partition(b"\n")
    try:
        header = orjson.loads(line) if sep else None
    except orjson.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an online-engine checkpoint (no header of format {FORMAT})")
    return header, memoryview(data)[len(line) + 1 :]


def read(cls: type[OnlineEngine], path: Path) -> OnlineEngine:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read the checkpoint {path}: {error}") from None
    header, body = _header(path, data)
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {header.get('format_version')}, this engine reads {FORMAT_VERSION}"
            " (rebuild the state by replaying the events)"
        )
    if header.get("feature_set_version") != cls.FEATURE_SET_VERSION:
        raise CheckpointError(
            f"{path} holds state of feature set {header.get('feature_set_version')}, this engine implements "
            f"{cls.FEATURE_SET_VERSION}: rebuild the state by replaying the events (bankanom replay)"
        )
    if len(body) != header.get("bytes") or hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise CheckpointError(
            f"{path} is corrupt: its body does not match the length and sha256 of its header"
        )
    try:
        return _restore(cls, memoryview(zlib.decompress(body)))
    except (KeyError, TypeError, ValueError, IndexError, OverflowError, zlib.error) as error:
        raise CheckpointError(f"{path} has a malformed state: {error!r}") from None


def _restore(cls: type[OnlineEngine], body: memoryview) -> OnlineEngine:
    size = int.from_bytes(body[:8], "little")
    manifest = orjson.loads(body[8 : 8 + size])
    blobs = body[8 + size :]

    def load(ref) -> array:
        code, offset, count = ref
        if code not in ("q", "i", "b", "d"):
            raise ValueError(f"unknown column type {code!r}")
        out = array(code)
        end = offset + count * out.itemsize
        if offset < 0 or count < 0 or end > len(blobs):
            raise ValueError("a column lies outside the file")
        out.frombytes(blobs[offset:end])
        if not _LITTLE:
            out.byteswap()
        return out

    lengths = load(manifest["strings"]["lengths"]).tolist()
    text_size = manifest["strings"]["bytes"]
    text = bytes(blobs[len(blobs) - text_size :]).decode("utf-8", "surrogatepass")
    if sum(lengths) != len(text):
        raise ValueError("the string table's lengths do not match its text")
    table, at = [], 0
    for n in lengths:
        table.append(text[at : at + n])
        at += n
    table.append(None)  # index -1

    def texts(refs: array) -> list:
        if not refs:
            return []
        if min(refs) < -1 or max(refs) >= len(table) - 1:
            raise ValueError("a text refers outside the string table")
        return list(itemgetter(*refs)(table)) if len(refs) > 1 else [table[refs[0]]]

    engine = cls(allowed_lateness_s=manifest["allowed_lateness_s"])
    hwm = manifest["high_water_mark"]
    engine._hwm = (int(hwm[0]), str(hwm[1])) if hwm is not None else None
    engine._swept = int(manifest["swept"])
    engine.counters.update({k: int(v) for k, v in manifest["counters"].items()})
    for kind, current in engine._kinds().items():
        saved = manifest["kinds"][kind]
        counts = load(saved["lengths"]).tolist()
        ts = load(saved["ts"])
        eids = texts(load(saved["eid"]))
        cols = []
        for stored, ref in saved["cols"]:
            values = load(ref)
            if stored == "s":
                cols.append(texts(values))
            elif stored == "f":
                cols.append([None if v != v else v for v in values])
            else:
                cols.append(values)
        if sum(counts) != len(ts) or any(len(c) != len(ts) for c in (eids, *cols)):
            raise ValueError(f"the {kind} columns have different lengths")
        if isinstance(current, Track):
            if len(counts) != 1:
                raise ValueError(f"{kind} holds {len(counts)} tracks, not 1")
            current.load_rows([ts, eids, *cols])
            continue
        keys = texts(load(saved["keys"]))
        if len(keys) != len(counts):
            raise ValueError(f"the {kind} keys and tracks differ in number")
        start = 0
        for key, n in zip(keys, counts, strict=True):
            end = start + n
            track = current[key] = engine.new_track(kind)
            track.load_rows([ts[start:end], eids[start:end], *(c[start:end] for c in cols)])
            start = end
    engine._seen.update(engine._all.eid)
    return engine

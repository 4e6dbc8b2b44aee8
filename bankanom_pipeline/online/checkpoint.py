"""The checkpoint file's frame: one JSON header line (the format and its version, the feature-set version
the engine implements, the high-water mark, the body's compression, byte length and sha256), then the
body (docs/online.md, "Checkpoint"): the compiled engine's arrays, written by ``write_checkpoint`` and read
by ``read_checkpoint`` (format 4); an older format (2: the Python engine's tracks) is refused by name.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

import numpy as np
import orjson

from bankanom_pipeline.online import layout as lay

FORMAT = "bankanom-online-state"


class CheckpointError(ValueError):
    """The checkpoint cannot be restored: another format or feature-set version, or a corrupt file."""


def _header(path: Path, data: bytes) -> tuple[dict, memoryview]:
    line, sep, _ = data[:4096].partition(b"\n")
    try:
        header = orjson.loads(line) if sep else None
    except orjson.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an online-engine checkpoint (no header of format {FORMAT})")
    return header, memoryview(data)[len(line) + 1 :]


# format 2 was the Python engine's (its tracks, not these arrays); 3 was this engine's before its lists
# were doubly linked (never released); 4 before the ring's int32 columns and links kept as offsets
CHECKPOINT_VERSION = 5
_BEFORE = {
    1: "format 1 was JSON",
    2: "format 2 is the Python engine's, before the compiled engine",
    3: "format 3 is the compiled engine's before late events",
    4: "format 4 is the compiled engine's before its ring's int32 columns",
}
_ARRAYS = ("G", "T", "Q", "CL", "U", "UF", "S", "A", "N", "V", "VX", "VR")


def write_checkpoint(engine, path) -> None:
    """The compiled engine's whole state: the header line (format, version 5, feature set,
    high-water mark, zlib body's length and sha256), then the body: an 8-byte manifest length, a JSON
    manifest (each kind's keys by id, the retained events' ids, the high-water mark's id, where each
    array lies), and the arrays as little-endian bytes: the ring's live rows in ``seq`` order (times, int32 columns, floats), the entity
    arrays, the distinct counters as two int64 arrays. No pickle. Written to a temporary name, fsynced
    and renamed."""
    path = Path(path)
    G = engine.G
    mask = int(G[lay.G_MASK])
    first, oldest, end = int(G[lay.G_RECLAIM]), int(G[lay.G_OLDEST]), int(G[lay.G_NEXT])
    slots = np.arange(first, end, dtype=np.int64) & mask
    arrays = {name: getattr(engine, name) for name in _ARRAYS}
    arrays["R"], arrays["RT"], arrays["RF"] = engine.R[slots], engine.RT[slots], engine.RF[slots]
    arrays["pair_keys"] = np.fromiter(engine.pairs.keys(), dtype=np.int64, count=len(engine.pairs))
    arrays["pair_counts"] = np.fromiter(engine.pairs.values(), dtype=np.int64, count=len(engine.pairs))
    parts, where, size = [], {}, 0
    for name, a in arrays.items():
        data = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        where[name] = [a.dtype.kind + str(a.dtype.itemsize), list(a.shape), size]
        parts.append(data)
        size += len(data)
    manifest = orjson.dumps(
        {
            "allowed_lateness_s": engine.allowed_lateness_s,
            "capacity": len(engine.R),
            "hwm_eid": engine.hwm_eid,
            "retained": list(engine.ring_eid[np.arange(oldest, end, dtype=np.int64) & mask]),
            "keys": {kind: ids.names for kind, ids in engine.ids.items()},
            "arrays": where,
        }
    )
    body = zlib.compress(b"".join([len(manifest).to_bytes(8, "little"), manifest, *parts]), 1)
    hwm = [int(G[lay.G_HWM_TS]), engine.hwm_eid] if G[lay.G_HAS_HWM] else None
    header = orjson.dumps(
        {
            "format": FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "feature_set_version": engine.FEATURE_SET_VERSION,
            "high_water_mark": hwm,
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


def read_checkpoint(path, cls):
    """A compiled engine from ``write_checkpoint``'s file; ``CheckpointError`` (naming the cause) for
    another format or version, another feature set, a corrupt or cut body, or a malformed state."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read the checkpoint {path}: {error}") from None
    header, body = _header(path, data)
    version = header.get("format_version")
    if version != CHECKPOINT_VERSION:
        before = f" ({_BEFORE[version]})" if version in _BEFORE else ""
        raise CheckpointError(
            f"{path} has checkpoint format {version}{before}, this engine reads {CHECKPOINT_VERSION}: it "
            "cannot be converted; the state is rebuilt from the events (the stream replays its event store "
            "when no checkpoint of its own is readable, and the next published snapshot writes a new one)"
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
        return _restore(memoryview(zlib.decompress(body)), cls)
    except (KeyError, TypeError, ValueError, IndexError, zlib.error) as error:
        raise CheckpointError(f"{path} has a malformed state: {error!r}") from None


def _restore(body: memoryview, cls):
    size = int.from_bytes(body[:8], "little")
    manifest = orjson.loads(body[8 : 8 + size])
    blobs = body[8 + size :]
    arrays = {}
    for name, (code, shape, offset) in manifest["arrays"].items():
        dtype = np.dtype("<" + code)
        count = int(np.prod(shape))
        if offset + count * dtype.itemsize > len(blobs):
            raise ValueError(f"array {name} lies beyond the body")
        arrays[name] = (
            np.frombuffer(blobs, dtype=dtype, count=count, offset=offset)
            .reshape(shape)
            .astype(dtype.newbyteorder("="), copy=True)
        )
    engine = cls(allowed_lateness_s=manifest["allowed_lateness_s"], capacity=manifest["capacity"])
    for name in _ARRAYS:
        setattr(engine, name, arrays[name])
    G = engine.G
    cap = len(engine.R)
    if G[lay.G_MASK] != cap - 1:
        raise ValueError("the ring's capacity does not match its mask")
    first, oldest, end = int(G[lay.G_RECLAIM]), int(G[lay.G_OLDEST]), int(G[lay.G_NEXT])
    rows = end - first
    if not (0 <= first <= oldest <= end) or rows > cap or cap > lay.MAX_CAPACITY:
        raise ValueError("the ring's bounds do not match its capacity")
    if (
        arrays["R"].shape != (rows, lay.NR)
        or arrays["RT"].shape != (rows,)
        or arrays["RF"].shape != (rows, lay.NF)
    ):
        raise ValueError("the ring's rows do not match its bounds and columns")
    slots = np.arange(first, end, dtype=np.int64) & (cap - 1)
    engine.R[slots], engine.RT[slots], engine.RF[slots] = arrays["R"], arrays["RT"], arrays["RF"]
    retained = manifest["retained"]
    if len(retained) != end - oldest:
        raise ValueError("the retained event ids do not match the ring")
    engine.ring_eid[slots[oldest - first :]] = retained
    engine.seen = dict(zip(retained, range(oldest, end), strict=True))
    engine.hwm_eid = manifest["hwm_eid"]
    for (kind, ids), rows in zip(
        engine.ids.items(),
        (engine.T, engine.CL, engine.U, engine.A, engine.N, engine.S, engine.V),
        strict=True,
    ):
        names = manifest["keys"][kind]
        if len(names) > len(rows):
            raise ValueError(f"more {kind} keys than rows")
        ids.names = names
        ids.ids = {name: i for i, name in enumerate(names) if name is not None}
        ids.free = [i for i, name in enumerate(names) if name is None]
        ids.used = np.zeros(max(len(names), 1024), dtype=bool)
        ids.used[[i for i, name in enumerate(names) if name is not None]] = True
    for key, count in zip(arrays["pair_keys"].tolist(), arrays["pair_counts"].tolist(), strict=True):
        engine.pairs[key] = count
    return engine

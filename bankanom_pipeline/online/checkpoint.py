"""The engine's whole state as a file: no pickle, versioned, checksummed, written atomically.

Layout: one JSON header line, then the JSON body. The header names the format and its version, the
feature-set version the engine implements, the body's byte length and sha256. ``read`` refuses another
format, another feature-set version, or a body whose length or digest differs (a corrupt or cut file).
Floats round-trip exactly (orjson writes the shortest representation that reads back to the same double).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from bankanom_pipeline.online.tracks import Track

if TYPE_CHECKING:
    from bankanom_pipeline.online.engine import OnlineEngine

FORMAT = "bankanom-online-state"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """The checkpoint cannot be restored: another format or feature-set version, or a corrupt file."""


def _dump_kind(tracks: Track | dict[str, Track]):
    if isinstance(tracks, Track):
        return tracks.rows()
    return {key: track.rows() for key, track in tracks.items()}


def write(engine: OnlineEngine, path: Path) -> None:
    state = {
        "allowed_lateness_s": engine.allowed_lateness_s,
        "high_water_mark": list(engine._hwm) if engine._hwm is not None else None,
        "swept": engine._swept,
        "counters": engine.counters,
        "kinds": {kind: _dump_kind(tracks) for kind, tracks in engine._kinds().items()},
    }
    body = orjson.dumps(state)
    header = orjson.dumps(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "feature_set_version": engine.FEATURE_SET_VERSION,
            "high_water_mark": state["high_water_mark"],
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


def read(cls: type[OnlineEngine], path: Path) -> OnlineEngine:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read the checkpoint {path}: {error}") from None
    line, _, body = data.partition(b"\n")
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise CheckpointError(f"{path} is not an online-engine checkpoint (no header)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an online-engine checkpoint (format {header!r})")
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {header.get('format_version')}, this engine reads {FORMAT_VERSION}"
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
        state = orjson.loads(body)
        engine = cls(allowed_lateness_s=state["allowed_lateness_s"])
        hwm = state["high_water_mark"]
        engine._hwm = (int(hwm[0]), str(hwm[1])) if hwm is not None else None
        engine._swept = int(state["swept"])
        engine.counters.update({k: int(v) for k, v in state["counters"].items()})
        for kind, current in engine._kinds().items():
            saved = state["kinds"][kind]
            if isinstance(current, Track):
                current.load_rows(saved)
            else:
                for key, rows in saved.items():
                    track = current[key] = engine.new_track(kind)
                    track.load_rows(rows)
        engine._seen.update(engine._all.eid)
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise CheckpointError(f"{path} has a malformed state: {error}") from None
    return engine

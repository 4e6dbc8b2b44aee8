"""The checkpoint file's frame: one JSON header line (the format and its version, the feature-set version
the engine implements, the high-water mark, the body's compression, byte length and sha256), then the
body. The compiled engine's body (format 4) is written and read by ``compiled.write_checkpoint`` and
``compiled.read_checkpoint``; an older format (2: the Python engine's tracks) is refused by name.
"""

from __future__ import annotations

from pathlib import Path

import orjson

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

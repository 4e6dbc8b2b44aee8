"""Text as Arrow binary views, the building blocks of fast rendering.

Each piece of text is one 16-byte Arrow binary view: up to 12 bytes live inside the view itself, longer
text is a (length, prefix, buffer, offset) reference into a data buffer (Arrow's "variable-size binary
view" layout). A renderer lays out every line as a run of pieces, fills whole columns of pieces with numpy
(mostly table look-ups, no per-line Python) and lets one Arrow cast to ``large_binary`` copy all pieces,
in order, into one contiguous buffer. That cast costs ~10 ns a piece, where joining string columns with
polars or Arrow costs 20-40 ns a piece and row.

numpy carries a view as a ``complex128``: the right size and alignment, and numpy only ever copies it
bit for bit (no arithmetic is done on it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import pyarrow as pa

Fill = Callable[[np.ndarray, int, int], None]  # (buffer, part, parts): writes its part of a buffer
VIEW = np.complex128
INLINE = 12  # longest text a view holds itself
EMPTY = np.zeros(1, VIEW)[0]


def _run_all(tasks: list[Callable[[], None]]) -> None:
    for task in tasks:
        task()


def inline(texts: Sequence[bytes]) -> np.ndarray:
    """Views of short texts (at most 12 bytes each), which need no buffer."""
    raw = np.zeros((len(texts), 16), np.uint8)
    raw[:, :4] = np.asarray([len(t) for t in texts], "<i4").view(np.uint8).reshape(-1, 4)
    padded = b"".join(t.ljust(INLINE, b"\0") for t in texts)
    if len(padded) != INLINE * len(texts):
        raise ValueError("a text longer than 12 bytes cannot be inline")
    raw[:, 4:] = np.frombuffer(padded, np.uint8).reshape(-1, INLINE)
    return raw.view(VIEW).ravel()


def inline_matrix(chars: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Views of texts given as rows of a (n, w<=12) byte matrix, row i holding ``lengths[i]`` bytes."""
    n, width = chars.shape
    raw = np.zeros((n, 16), np.uint8)
    raw[:, :4] = lengths.astype("<i4").view(np.uint8).reshape(n, 4)
    kept = np.arange(width) < lengths[:, None]  # Arrow wants the unused inline bytes zeroed
    raw[:, 4 : 4 + width] = np.where(kept, chars, 0)
    return raw.view(VIEW).ravel()


def lengths_of(views: np.ndarray) -> np.ndarray:
    return views.view("<i4").reshape(-1, 4)[:, 0]


def join_inline(*parts: np.ndarray) -> np.ndarray:
    """Row-wise concatenation of inline views (the result must fit inline too), for building tables."""
    n = max(np.size(part) for part in parts)
    chars = np.zeros((n, 2 * INLINE), np.uint8)
    length = np.zeros(n, np.int64)
    for part in parts:
        part = np.ascontiguousarray(np.broadcast_to(part, (n,)))
        data = part.view(np.uint8).reshape(n, 16)[:, 4:]  # zero past the part's end
        for start in np.unique(length):  # few distinct lengths: one slice copy per length
            rows = length == start
            chars[rows, start : start + INLINE] |= data[rows]
        length += lengths_of(part)
    if length.max(initial=0) > INLINE:
        raise ValueError("joined text does not fit inline")
    return inline_matrix(chars[:, :INLINE], length)


def fixed_digits(values: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded decimal digits of non-negative integers as an (n, width) ASCII matrix."""
    values = np.asarray(values, np.int64)
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] // powers) % 10 + ord("0")).astype(np.uint8)


def decimal_views(values: np.ndarray, width: int | None = None) -> np.ndarray:
    """Inline views of integers in decimal: zero-padded to ``width`` digits, or unpadded if None."""
    values = np.asarray(values, np.int64)
    digits = fixed_digits(values, width or 12)
    if width is not None:
        return inline_matrix(digits, np.full(len(values), width))
    length = 1 + (values[:, None] >= 10 ** np.arange(1, 12, dtype=np.int64)).sum(axis=1)
    shift = 12 - length
    columns = np.minimum(np.arange(12)[None, :] + shift[:, None], 11)
    return inline_matrix(np.take_along_axis(digits, columns, axis=1), length)


class Pool:
    """The data buffers that views of long texts point into; a view names its buffer by position.

    Long texts of ``texts`` and ``literal`` go to the pool's arena, a buffer that grows until the pool is
    sealed. A pool made with a ``parent`` starts with the parent's buffers, so the parent's views are valid
    in it; sealing it snapshots the parent's arena, which may keep growing for later children (texts that
    many renders share are stored once, in the parent).
    """

    def __init__(self, parent: Pool | None = None):
        self.parent = parent
        self.buffers: list[pa.Buffer | None] = list(parent.buffers) if parent is not None else []
        self.buffers.append(None)  # the arena, filled in by seal
        self._arena_index = len(self.buffers) - 1
        self._arena = bytearray()
        self._literals: dict[bytes, np.complex128] = {}
        self._deferred: list[tuple[int, np.ndarray, Fill]] = []

    def add(self, data: np.ndarray | bytes) -> int:
        self.buffers.append(pa.py_buffer(data))
        return len(self.buffers) - 1

    def texts(self, texts: Sequence[bytes]) -> np.ndarray:
        """Views of any texts; those longer than 12 bytes are copied into the arena."""
        lengths = np.fromiter((len(t) for t in texts), np.int64, len(texts))
        long = lengths > INLINE
        if not long.any():
            return inline(texts)
        views = np.empty(len(texts), VIEW)
        views[~long] = inline([t for t in texts if len(t) <= INLINE])
        texts_long = [t for t in texts if len(t) > INLINE]
        offsets = len(self._arena) + np.cumsum(lengths[long]) - lengths[long]
        self._arena += b"".join(texts_long)
        raw = np.empty((len(texts_long), 4), np.uint32)
        raw[:, 0] = lengths[long]
        raw[:, 1] = np.frombuffer(b"".join(t[:4] for t in texts_long), np.uint32)
        raw[:, 2] = self._arena_index
        raw[:, 3] = offsets
        views[long] = raw.view(VIEW).ravel()
        return views

    def literal(self, text: bytes) -> np.complex128:
        """The view of a constant text (the same text is stored once)."""
        view = self._literals.get(text)
        if view is None:
            size = len(text).to_bytes(4, "little")
            if len(text) <= INLINE:
                raw = size + text.ljust(INLINE, b"\0")
            else:
                raw = size + text[:4] + self._arena_index.to_bytes(4, "little")
                raw += len(self._arena).to_bytes(4, "little")
                self._arena += text
            view = self._literals[text] = np.frombuffer(raw, VIEW)[0]
        return view

    def deferred(self, size: int, fill: Fill) -> int:
        """A buffer of ``size`` bytes that ``fill(buffer, part, parts)`` writes only in ``prepare``
        (possibly on other threads, a part each); returns its index, for ``views``."""
        self.buffers.append(None)
        self._deferred.append((len(self.buffers) - 1, np.empty(size, np.uint8), fill))
        return len(self.buffers) - 1

    @staticmethod
    def views(index: int, offsets: np.ndarray, lengths, prefixes) -> np.ndarray:
        """Views of texts longer than 12 bytes at ``offsets`` of buffer ``index``; ``prefixes`` holds
        their first 4 bytes as little-endian uint32."""
        raw = np.empty((len(offsets), 4), np.uint32)
        raw[:, 0] = lengths
        raw[:, 1] = prefixes
        raw[:, 2] = index
        raw[:, 3] = offsets
        return raw.view(VIEW).ravel()

    def rows(self, matrix: np.ndarray) -> np.ndarray:
        """One view per row of a C-contiguous (n, w) byte matrix, w > 12; the matrix becomes a buffer."""
        n, width = matrix.shape
        prefixes = matrix[:, :4].copy().view(np.uint32).ravel()
        return self.views(self.add(matrix), np.arange(0, n * width, width), width, prefixes)

    def seal(self) -> None:
        """Fix the arenas' contents (this pool's and, as of now, its parent's); no texts may follow."""
        self.buffers[self._arena_index] = pa.py_buffer(bytes(self._arena))
        if self.parent is not None:
            self.buffers[self.parent._arena_index] = pa.py_buffer(bytes(self.parent._arena))

    def prepare(self, run: Callable[[list[Callable[[], None]]], None] = _run_all, parts: int = 1) -> None:
        """Fill the deferred buffers, each in ``parts`` parts that ``run`` may run in parallel."""
        tasks = []
        for index, buffer, fill in self._deferred:
            tasks += [partial(fill, buffer, part, parts) for part in range(parts)]
            self.buffers[index] = pa.py_buffer(buffer)
        run(tasks)
        self._deferred = []

    def join(self, views: np.ndarray) -> pa.Buffer:
        """All pieces in order, as one contiguous buffer (the pool must be sealed and prepared)."""
        if self._deferred:
            self.prepare()
        if not len(views):
            return pa.py_buffer(b"")
        array = pa.Array.from_buffers(
            pa.binary_view(), len(views), [None, pa.py_buffer(views), *self.buffers]
        )
        # 32-bit offsets halve the offsets' memory traffic, but must not overflow (the cast does not check)
        small = lengths_of(views).sum(dtype=np.int64) < 2**31
        joined = array.cast(pa.binary() if small else pa.large_binary())
        offsets = np.frombuffer(joined.buffers()[1], np.int32 if small else np.int64)
        return joined.buffers()[2][: int(offsets[-1])]

"""The per-window bounds behind safe block-max pruning
(:mod:`lightning_mlsr.retrieval.index.blockmax_kernel`): for every long posting list, one
byte per window of :data:`WINDOW` rows bounding the term's weights there (rounded up and
checked in float32 at build), and where each window's postings start (two bytes relative to
a :data:`SUPER`-row superblock). Built once per index, on the first pruned search."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

__all__ = ["LONG_DIV", "SUPER", "WINDOW", "WindowBounds", "window_bounds"]

#: Rows per window. Measured on the realistic proxy (halves of two SPLADE-tiny WordNet gloss
#: vectors, 1,000 lemma queries) at 1M documents, k=10, 1 thread, CPU time, 2-core EPYC at
#: load ~6.5: windows of 16 rows ran 2.8-3.0x the exhaustive kernel's speed with 39 MiB of
#: bounds; 8 rows 3.0x with 78 MiB; 32 rows 1.8x with 20 MiB.
WINDOW = 16
#: Rows per superblock: window starts are kept as uint16 offsets from the superblock's start
#: (a list holds < 2**16 postings of one superblock before its last window).
SUPER = 2**16
#: A term keeps window bounds when its list holds >= n_docs / LONG_DIV postings: on that
#: proxy 216 terms, 39 MiB (20% of the index); 32: 16 MiB and 2.3x; 128: 88 MiB and 3.0x.
LONG_DIV = 64


@dataclass(frozen=True)
class WindowBounds:
    """Per-window bounds and posting offsets of the long posting lists of one index.

    ``long_row[t]``: row of term ``t`` in the arrays below, -1 for a short list;
    ``q8[r, w]``: bound byte of window ``w`` (0: no posting there); ``scale[r]``: the bound
    is ``float32(q8) * scale``; window ``w`` starts at position ``sup[r, w // per_super] +
    off16[r, w]`` of the list (``w = n_windows``: its end).

    Shape: long_row (n_terms,), q8 (n_long, n_windows), off16 (n_long, n_windows + 1),
    sup (n_long, n_super + 1), scale (n_long,)
    """

    long_row: np.ndarray
    q8: np.ndarray
    off16: np.ndarray
    sup: np.ndarray
    scale: np.ndarray
    window_shift: int
    super_shift: int

    @property
    def nbytes(self) -> int:
        arrays = (self.long_row, self.q8, self.off16, self.sup, self.scale)
        return int(sum(a.nbytes for a in arrays))


def _log2(value: int, name: str) -> int:
    shift = int(value).bit_length() - 1
    if value < 1 or 1 << shift != value:
        raise ValueError(f"{name} must be a power of two, got {value}")
    return shift


def window_bounds(
    p_indptr: np.ndarray,
    p_indices: np.ndarray,
    p_data: np.ndarray,
    n_docs: int,
    window: int | None = None,
    superblock: int | None = None,
    long_div: int | None = None,
) -> WindowBounds:
    """Build the :class:`WindowBounds` of CSC postings (sorted within each list); defaults
    are the module's constants (read at call time, so tests can shrink them).

    Shape: p_indptr (n_terms + 1,) int64, p_indices, p_data (nnz,)
    """
    window_shift = _log2(WINDOW if window is None else window, "window")
    super_shift = _log2(SUPER if superblock is None else superblock, "superblock")
    if not window_shift <= super_shift <= 16:
        raise ValueError("need window <= superblock <= 2**16")
    long_div = LONG_DIV if long_div is None else long_div
    n_windows = max(1, -(-n_docs >> window_shift))
    n_super = -(-n_docs >> super_shift)
    lengths = np.diff(p_indptr)
    long_terms = np.flatnonzero(lengths >= max(1, n_docs // long_div)).astype(np.int64)
    long_row = np.full(len(lengths), -1, np.int64)
    long_row[long_terms] = np.arange(len(long_terms))
    q8 = np.zeros((len(long_terms), n_windows), np.uint8)
    off16 = np.zeros((len(long_terms), n_windows + 1), np.uint16)
    sup = np.zeros((len(long_terms), n_super + 1), np.uint32)
    scale = np.zeros(len(long_terms), np.float32)
    _fill_bounds(
        p_indptr, p_indices, p_data, window_shift, super_shift, n_windows, long_terms,
        q8, off16, sup, scale,
    )  # fmt: skip
    return WindowBounds(long_row, q8, off16, sup, scale, window_shift, super_shift)


@njit(parallel=True, cache=True)
def _fill_bounds(
    p_indptr, p_indices, p_data, shift, super_shift, n_windows, long_terms, q8, off16, sup, scale
):  # pragma: no cover - compiled
    """Fill the bound bytes, scales and window offsets of the long lists."""
    step = super_shift - shift  # windows per superblock: 2**step
    for r in prange(long_terms.shape[0]):
        t = long_terms[r]
        start = p_indptr[t]
        end = p_indptr[t + 1]
        top = np.float32(0)
        for p in range(start, end):
            top = max(top, p_data[p])
        s = np.float32(top / np.float32(255))
        while np.float32(255) * s < top:  # the largest weight must be reachable
            s = np.nextafter(s, np.float32(np.inf))
        scale[r] = s
        p = start
        for w in range(n_windows):
            if w & ((1 << step) - 1) == 0:
                sup[r, w >> step] = p - start
            off16[r, w] = p - start - sup[r, w >> step]
            limit = (w + 1) << shift
            m = np.float32(0)
            while p < end and np.int64(p_indices[p]) < limit:
                m = max(m, p_data[p])
                p += 1
            q = 0
            if m > 0:  # the least q with float32(q) * s >= m (s > 0 as top >= m > 0)
                q = int(min(np.float32(255), np.ceil(m / s)))
                while q < 255 and np.float32(q) * s < m:
                    q += 1
                while q > 1 and np.float32(q - 1) * s >= m:
                    q -= 1
            q8[r, w] = q
        if n_windows & ((1 << step) - 1) == 0:
            sup[r, n_windows >> step] = end - start
        off16[r, n_windows] = end - start - sup[r, n_windows >> step]


# What one query's bounds read, compiled into the pruned kernel: where a window's postings
# start, a long term's window bounds times its query weight, each group's best window.
@njit(cache=True, inline="always")
def _window_start(off16, sup, r, w, step):  # pragma: no cover - compiled
    return np.int64(sup[r, w >> step]) + np.int64(off16[r, w])


@njit(cache=True)
def _bound_long(q8_row, wq, s, ub, first):  # pragma: no cover - compiled
    """``ub[w] (+)= w_query * (float32(q8[w]) * scale)``: a vectorised pass."""
    if first:
        for w in range(np.uint64(ub.shape[0])):
            ub[w] = wq * (np.float32(q8_row[w]) * s)
    else:
        for w in range(np.uint64(ub.shape[0])):
            ub[w] += wq * (np.float32(q8_row[w]) * s)


@njit(cache=True)
def _group_max(ub, group, gmax):  # pragma: no cover - compiled
    n = ub.shape[0]
    for g in range(gmax.shape[0]):
        m = np.float32(0)
        for w in range(g * group, min(g * group + group, n)):
            m = max(m, ub[w])
        gmax[g] = m

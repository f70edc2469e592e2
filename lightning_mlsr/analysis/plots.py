"""Figures for the vocabulary analysis in ``lightning_mlsr.analysis``.

Every function returns a ``matplotlib.figure.Figure`` built without ``pyplot``: nothing is
shown, no global figure state leaks between calls, and it works under any backend (Agg
included). Display it in a notebook, ``fig.savefig(...)`` it, or log it with
``wandb.Image(fig)``. matplotlib is imported lazily so the package imports without it.
Empty input gives a figure with one blank axes saying "no data" instead of an error.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "plot_activation_frequency",
    "plot_coactivation_heatmap",
    "plot_image_grid",
    "plot_nonzeros_histogram",
]


def _figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _no_data(fig: Figure, title: str = "") -> Figure:
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    if title:
        ax.set_title(title)
    return fig


def plot_activation_frequency(
    freqs: Mapping[str, np.ndarray],
    title: str = "Term activation frequency",
    figsize: tuple[float, float] = (6.0, 4.0),
) -> Figure:
    """Rank-frequency curves: each model's active terms sorted by activation frequency.

    One line per model, log-y. A curve that stays near 1 for many ranks means many terms
    fire for almost every image (co-activation); a model with no active term gets an empty
    line so it still appears in the legend.

    Shape: each value (V,) fractions, e.g. from ``analysis.term_activation_frequency``.
    """
    fig = _figure(figsize)
    if not freqs:
        return _no_data(fig, title)
    ax = fig.add_subplot()
    any_positive = False
    for name, freq in freqs.items():
        freq = np.asarray(freq, dtype=np.float64).ravel()
        curve = np.sort(freq[freq > 0])[::-1]
        any_positive |= curve.size > 0
        ax.plot(np.arange(1, curve.size + 1), curve, label=f"{name} ({curve.size} terms)")
    if any_positive:
        ax.set_yscale("log")
    ax.set_xlabel("term rank")
    ax.set_ylabel("fraction of documents where active")
    ax.set_title(title)
    ax.legend()
    return fig


def plot_coactivation_heatmap(
    matrix: np.ndarray,
    labels: Sequence[str],
    title: str = "Term co-activation",
    mask_diagonal: bool = True,
    figsize: tuple[float, float] = (7.0, 6.0),
) -> Figure:
    """Heatmap of a term-by-term co-activation matrix with the terms as tick labels.

    The diagonal (a term with itself) is masked by default so it does not set the colour
    scale; non-finite entries (PMI ``-inf`` for terms that never co-occur) are blank.

    Shape: matrix (n, n), labels (n,), e.g. from ``analysis.coactivation_matrix`` with
    ``[vocab[t] for t in term_ids]``.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square (n, n), got shape {matrix.shape}.")
    if len(labels) != matrix.shape[0]:
        raise ValueError(
            f"got {len(labels)} labels for a {matrix.shape[0]} x {matrix.shape[0]} matrix."
        )
    fig = _figure(figsize)
    if matrix.size == 0:
        return _no_data(fig, title)
    hide = ~np.isfinite(matrix)
    if mask_diagonal:
        hide |= np.eye(matrix.shape[0], dtype=bool)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_array(matrix, mask=hide), cmap="viridis")
    ticks = np.arange(matrix.shape[0])
    ax.set_xticks(ticks, labels=list(labels), rotation=90, fontsize="small")
    ax.set_yticks(ticks, labels=list(labels), fontsize="small")
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    return fig


def plot_image_grid(
    images: Sequence[Any],
    term_lists: Sequence[Sequence[tuple[str, float]]],
    ncols: int = 6,
    n_terms: int = 5,
    cell_size: float = 2.2,
) -> Figure:
    """Images in a grid, each captioned with its top terms and their weights.

    Shows which words the model thinks each picture is about. ``images`` are PIL images
    or (H, W[, C]) arrays; ``term_lists`` as from ``analysis.top_terms`` (the first
    ``n_terms`` of each are shown). One axes per image.
    """
    if len(images) != len(term_lists):
        raise ValueError(
            f"got {len(images)} images but {len(term_lists)} term lists; pass one per image."
        )
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}.")
    if not images:
        return _no_data(_figure((cell_size, cell_size)))
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    fig = _figure((cell_size * ncols, (cell_size + 0.6) * nrows))
    for index, (image, terms) in enumerate(zip(images, term_lists)):
        ax = fig.add_subplot(nrows, ncols, index + 1)
        pixels = np.asarray(image)
        ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None)
        ax.set_axis_off()
        text = ", ".join(f"{token} {weight:.2f}" for token, weight in list(terms)[:n_terms])
        ax.set_title(textwrap.fill(text or "(no active terms)", width=28), fontsize="x-small")
    return fig


def plot_nonzeros_histogram(
    counts: Mapping[str, np.ndarray],
    bins: int = 50,
    title: str = "Active terms per document",
    figsize: tuple[float, float] = (6.0, 4.0),
) -> Figure:
    """Overlaid histograms of non-zeros per row, one step outline per model, shared bins.

    Shape: each value (n_rows,) counts, e.g. from ``analysis.nonzeros_per_row``.
    """
    fig = _figure(figsize)
    arrays = {name: np.asarray(c, dtype=np.float64).ravel() for name, c in counts.items()}
    if not arrays or all(a.size == 0 for a in arrays.values()):
        return _no_data(fig, title)
    ax = fig.add_subplot()
    values = np.concatenate(list(arrays.values()))
    edges = np.histogram_bin_edges(values, bins=bins)
    for name, array in arrays.items():
        mean = f"mean {array.mean():.1f}" if array.size else "empty"
        ax.hist(
            array, bins=edges.tolist(), histtype="step", linewidth=1.5, label=f"{name} ({mean})"
        )
    ax.set_xlabel("non-zero terms")
    ax.set_ylabel("documents")
    ax.set_title(title)
    ax.legend()
    return fig

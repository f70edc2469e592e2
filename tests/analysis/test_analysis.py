"""Tests for lightning_mlsr.analysis and lightning_mlsr.analysis.plots against hand-computed values."""

from __future__ import annotations

import io
import itertools
import math

import matplotlib
import numpy as np
import pytest
import scipy.sparse as sp

from lightning_mlsr import analysis
from lightning_mlsr.analysis import (
    activation_frequency_summary,
    caption_overlap,
    coactivation_matrix,
    coactivation_score,
    compare_models,
    format_comparison_table,
    nonzeros_per_row,
    sparsity_stats,
    term_activation_frequency,
    top_terms,
)

matplotlib.use("Agg")

# The hand example: 4 documents over a 6-term vocabulary.
#   doc 0: a=2.0 cat=1.0 red=0.5  -> active {a, cat, red}    (3 terms)
#   doc 1: a=1.0 dog=3.0          -> active {a, dog}         (2 terms)
#   doc 2: a=0.5 cat=2.0 sofa=1.5 -> active {a, cat, sofa}   (3 terms)
#   doc 3: nothing                -> empty                   (0 terms)
# Documents activating each term: a 3, cat 2, dog 1, sofa 1, red 1, zebra 0.
VOCAB = ["a", "cat", "dog", "sofa", "red", "zebra"]
DENSE = np.array(
    [
        [2.0, 1.0, 0.0, 0.0, 0.5, 0.0],
        [1.0, 0.0, 3.0, 0.0, 0.0, 0.0],
        [0.5, 2.0, 0.0, 1.5, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ]
)
DOCS = sp.csr_matrix(DENSE)


def random_docs(n_docs: int, n_terms: int, density: float, seed: int) -> sp.csr_matrix:
    """Seeded random non-negative sparse matrix, a few rows forced empty."""
    docs = sp.random(n_docs, n_terms, density=density, format="csr", random_state=seed)
    docs = sp.lil_matrix(docs)
    docs[:3] = 0  # empty rows must be ignored, not counted as zero overlap
    return sp.csr_matrix(docs)


def brute_force_pairwise_jaccard(docs: sp.csr_matrix) -> float:
    """Reference: plain python sets over every pair of distinct non-empty documents."""
    sets = [set(docs[i].indices.tolist()) for i in range(docs.shape[0])]
    sets = [s for s in sets if s]
    values = [len(a & b) / len(a | b) for a, b in itertools.combinations(sets, 2)]
    return sum(values) / len(values)


# ------------------------------------------------------------------ term frequency


def test_term_activation_frequency_hand_example() -> None:
    # counts / 4 documents
    expected = np.array([3, 2, 1, 1, 1, 0]) / 4
    np.testing.assert_allclose(term_activation_frequency(DOCS), expected)
    np.testing.assert_allclose(term_activation_frequency(DENSE), expected)


def test_explicit_zeros_are_not_active() -> None:
    stored_zero = sp.csr_matrix(
        (np.array([0.0, 1.0]), np.array([0, 1]), np.array([0, 2])), shape=(1, 3)
    )
    assert stored_zero.nnz == 2
    np.testing.assert_allclose(term_activation_frequency(stored_zero), [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(nonzeros_per_row(stored_zero), [1])


def test_activation_frequency_summary_hand_example() -> None:
    summary = activation_frequency_summary(term_activation_frequency(DOCS))
    assert summary["n_terms"] == 6
    assert summary["n_active_terms"] == 5  # zebra never fires
    assert summary["n_terms_over_50pct"] == 1  # only "a" (0.75); "cat" is 0.5, not > 0.5
    assert summary["n_terms_over_90pct"] == 0
    assert summary["max_frequency"] == 0.75
    assert summary["mean_terms_per_doc"] == pytest.approx(2.0)  # 8 non-zeros / 4 docs
    # Gini over active frequencies sorted [.25, .25, .25, .5, .75], n = 5, sum = 2:
    # 2 * (1*.25 + 2*.25 + 3*.25 + 4*.5 + 5*.75) / (5 * 2) - 6/5 = 1.45 - 1.2 = 0.25
    assert summary["gini"] == pytest.approx(0.25)
    # p = freq / 2 = [.375, .25, .125, .125, .125];
    # H = .375 log2(8/3) + .25 * 2 + 3 * .125 * 3 = 2.75 - .375 log2(3) bits
    entropy = 2.75 - 0.375 * math.log2(3)
    assert summary["entropy_bits"] == pytest.approx(entropy)
    assert summary["effective_terms"] == pytest.approx(2**entropy)
    # quantiles of [.25, .25, .25, .5, .75] (linear): median .25; q90 at position 3.6 -> .65
    assert summary["freq_q50"] == pytest.approx(0.25)
    assert summary["freq_q90"] == pytest.approx(0.65)
    assert summary["freq_q99"] == pytest.approx(0.74)


def test_activation_frequency_summary_uniform_and_empty() -> None:
    uniform = activation_frequency_summary(np.array([0.5, 0.5, 0.5, 0.5, 0.0]))
    assert uniform["gini"] == pytest.approx(0.0)
    assert uniform["entropy_bits"] == pytest.approx(2.0)
    assert uniform["effective_terms"] == pytest.approx(4.0)
    nothing = activation_frequency_summary(np.zeros(6))
    assert nothing["n_active_terms"] == 0
    assert math.isnan(nothing["gini"]) and math.isnan(nothing["entropy_bits"])
    assert math.isnan(nothing["freq_q50"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        activation_frequency_summary(np.array([0.5, 3.0]))


# -------------------------------------------------------------------- co-activation

# top_n=3 picks a (3 docs), cat (2), then dog: dog/sofa/red tie at 1 doc, lowest id wins.
# c = [3, 2, 1]; both active: a&cat in docs 0,2 -> 2; a&dog in doc 1 -> 1; cat&dog -> 0. N = 4.
LN43 = math.log(4 / 3)
EXPECTED_COACTIVATION = {
    "count": [[3, 2, 1], [2, 2, 0], [1, 0, 1]],
    # c_ij / (c_i + c_j - c_ij): a&cat 2/3, a&dog 1/3, cat&dog 0
    "jaccard": [[1, 2 / 3, 1 / 3], [2 / 3, 1, 0], [1 / 3, 0, 1]],
    # ln(c_ij N / (c_i c_j)): a&cat ln(8/6), a&dog ln(4/3), cat&dog -inf; diagonal ln(N / c_i)
    "pmi": [[LN43, LN43, LN43], [LN43, math.log(2), -math.inf], [LN43, -math.inf, math.log(4)]],
    # pmi / -ln(c_ij / N): a&cat ln(4/3)/ln 2, a&dog ln(4/3)/ln 4, never together -1
    "npmi": [
        [1, LN43 / math.log(2), LN43 / math.log(4)],
        [LN43 / math.log(2), 1, -1],
        [LN43 / math.log(4), -1, 1],
    ],
}


@pytest.mark.parametrize("measure", sorted(EXPECTED_COACTIVATION))
def test_coactivation_matrix_hand_example(measure: str) -> None:
    matrix, term_ids = coactivation_matrix(DOCS, top_n=3, measure=measure)  # type: ignore[arg-type]
    np.testing.assert_array_equal(term_ids, [0, 1, 2])
    np.testing.assert_allclose(matrix, EXPECTED_COACTIVATION[measure])


def test_coactivation_matrix_explicit_terms_and_never_active() -> None:
    # explicit ids in the given order; zebra (5) never fires, so its Jaccard is undefined
    matrix, term_ids = coactivation_matrix(DOCS, terms=[1, 0, 5], measure="jaccard")
    np.testing.assert_array_equal(term_ids, [1, 0, 5])
    assert matrix[0, 1] == pytest.approx(2 / 3)
    assert np.isnan(matrix[2]).all() and np.isnan(matrix[:, 2]).all()
    counts, _ = coactivation_matrix(DOCS, terms=[1, 0, 5], measure="count")
    assert counts[2, 2] == 0
    # asking for more terms than ever fire returns only the active ones
    _, ids = coactivation_matrix(DOCS, top_n=30)
    np.testing.assert_array_equal(ids, [0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        coactivation_matrix(DOCS, terms=[6])
    with pytest.raises(ValueError, match="unknown measure"):
        coactivation_matrix(DOCS, measure="cosine")  # type: ignore[arg-type]


def test_npmi_of_terms_always_together_is_one() -> None:
    docs = sp.csr_matrix(np.ones((3, 2)))
    matrix, _ = coactivation_matrix(docs, measure="npmi")
    np.testing.assert_allclose(matrix, np.ones((2, 2)))


def test_coactivation_score_hand_example() -> None:
    # doc 3 is empty and left out. Pairs of {a,cat,red}, {a,dog}, {a,cat,sofa}:
    # 0-1: {a} / {a,cat,red,dog} = 1/4; 0-2: {a,cat} / {a,cat,red,sofa} = 1/2;
    # 1-2: {a} / {a,dog,cat,sofa} = 1/4; mean = (1/4 + 1/2 + 1/4) / 3 = 1/3
    assert coactivation_score(DOCS) == pytest.approx(1 / 3)
    assert coactivation_score(DOCS, exact=False, n_pairs=20_000) == pytest.approx(1 / 3, abs=0.01)


def test_coactivation_score_exact_matches_brute_force() -> None:
    docs = random_docs(120, 40, density=0.08, seed=1)
    assert coactivation_score(docs, exact=True) == pytest.approx(brute_force_pairwise_jaccard(docs))


def test_coactivation_score_sampled_agrees_with_exact() -> None:
    docs = random_docs(400, 60, density=0.1, seed=2)
    exact = coactivation_score(docs, exact=True)
    sampled = coactivation_score(docs, exact=False, n_pairs=50_000, seed=0)
    assert 0.02 < exact < 0.2  # the matrix is neither trivially disjoint nor identical
    assert sampled == pytest.approx(exact, abs=0.005)
    assert sampled != exact  # it really sampled
    assert coactivation_score(docs, exact=False, n_pairs=50_000, seed=0) == sampled  # seeded


def test_coactivation_score_samples_above_exact_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = random_docs(50, 30, density=0.2, seed=3)
    assert coactivation_score(docs) == coactivation_score(docs, exact=True)
    monkeypatch.setattr(analysis.coactivation, "EXACT_MAX_DOCS", 10)
    assert coactivation_score(docs, n_pairs=1000) == coactivation_score(
        docs, exact=False, n_pairs=1000
    )


def test_coactivation_score_needs_two_nonempty_docs() -> None:
    assert math.isnan(coactivation_score(DOCS[2:]))  # doc 2 and the empty doc 3
    assert coactivation_score(DOCS[:2]) == pytest.approx(1 / 4)


# ------------------------------------------------------------------ interpretability


def test_top_terms_hand_example() -> None:
    assert top_terms(DOCS, VOCAB, k=2) == [
        [("a", 2.0), ("cat", 1.0)],
        [("dog", 3.0), ("a", 1.0)],
        [("cat", 2.0), ("sofa", 1.5)],
        [],
    ]
    assert top_terms(DOCS, VOCAB, k=10)[0] == [("a", 2.0), ("cat", 1.0), ("red", 0.5)]
    ties = sp.csr_matrix(np.array([[0.0, 1.0, 1.0, 1.0, 0.0, 0.0]]))
    assert top_terms(ties, VOCAB, k=2) == [[("cat", 1.0), ("dog", 1.0)]]  # lower id first
    with pytest.raises(ValueError, match="vocab has 3 tokens"):
        top_terms(DOCS, VOCAB[:3])


CAPTIONS = ["a cat on a mat", "a red sofa", "zebra", "a dog"]


def test_caption_overlap_hand_example() -> None:
    # top-2: doc 0 {a, cat} vs {a, cat, on, mat} -> 2/2; doc 1 {dog, a} vs {a, red, sofa} -> 1/2;
    # doc 2 {cat, sofa} vs {zebra} -> 0/2; doc 3 empty -> excluded. mean = (1 + .5 + 0) / 3
    result = caption_overlap(DOCS, CAPTIONS, str.split, k=2, vocab=VOCAB)
    np.testing.assert_allclose(result["per_doc"], [1.0, 0.5, 0.0, np.nan])
    assert result["mean"] == pytest.approx(0.5)
    assert result["n_empty_docs"] == 1
    assert result["n_empty_captions"] == 0
    assert result["n_docs"] == 4 and result["k"] == 2
    # k=10: doc 0 has only 3 terms {a, cat, red} -> 2/3; doc 2 {cat, sofa, a} -> 0
    result = caption_overlap(DOCS, CAPTIONS, str.split, k=10, vocab=VOCAB)
    np.testing.assert_allclose(result["per_doc"], [2 / 3, 0.5, 0.0, np.nan])


def test_caption_overlap_tokenizer_kinds_and_caption_lists() -> None:
    token_to_id = {t: i for i, t in enumerate(VOCAB)}

    def to_ids(text: str) -> list[int]:
        return [token_to_id[t] for t in text.split() if t in token_to_id]

    class FakeHFTokenizer:
        def tokenize(self, text: str) -> list[str]:
            return text.split()

        def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
            return [token_to_id.get(t, 100) for t in tokens]

    by_ids = caption_overlap(DOCS, CAPTIONS, to_ids, k=2)
    by_tokenizer = caption_overlap(DOCS, CAPTIONS, FakeHFTokenizer(), k=2)
    np.testing.assert_allclose(by_ids["per_doc"], [1.0, 0.5, 0.0, np.nan])
    np.testing.assert_allclose(by_tokenizer["per_doc"], [1.0, 0.5, 0.0, np.nan])
    # a list of captions pools its tokens; an empty caption is excluded and counted
    captions = [["a mat", "cat"], "", None, "a dog"]
    result = caption_overlap(DOCS, captions, str.split, k=2, vocab=VOCAB)
    np.testing.assert_allclose(result["per_doc"], [1.0, np.nan, np.nan, np.nan])
    assert result["n_empty_captions"] == 2 and result["n_empty_docs"] == 1
    assert result["mean"] == 1.0


def test_caption_overlap_errors() -> None:
    with pytest.raises(ValueError, match="pass vocab"):
        caption_overlap(DOCS, CAPTIONS, str.split)
    with pytest.raises(ValueError, match="3 captions for 4 documents"):
        caption_overlap(DOCS, CAPTIONS[:3], str.split, vocab=VOCAB)
    all_empty = caption_overlap(DOCS[3:], ["a dog"], str.split, vocab=VOCAB)
    assert math.isnan(all_empty["mean"]) and all_empty["n_empty_docs"] == 1


# ------------------------------------------------------------------------ sparsity


def test_sparsity_stats_hand_example() -> None:
    # non-zeros per row [3, 2, 3, 0]: mean 2, median (2 + 3) / 2, max 3, one empty of four
    assert sparsity_stats(DOCS) == {
        "n_rows": 4,
        "mean_nnz": 2.0,
        "median_nnz": 2.5,
        "max_nnz": 3,
        "n_empty": 1,
        "frac_empty": 0.25,
    }
    np.testing.assert_array_equal(nonzeros_per_row(DOCS), [3, 2, 3, 0])


def test_invalid_matrices_fail_with_a_message() -> None:
    with pytest.raises(ValueError, match="negative weights"):
        sparsity_stats(-DOCS)
    with pytest.raises(ValueError, match="NaN"):
        term_activation_frequency(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="no rows"):
        term_activation_frequency(sp.csr_matrix((0, 6)))
    with pytest.raises(ValueError, match="2-D"):
        sparsity_stats(np.ones(6))


# ---------------------------------------------------------------------- comparison


def test_compare_models_side_by_side() -> None:
    # "spread": every doc its own two terms (no overlap); "collapsed": the same two terms
    # fire for every doc (the co-activation finding 3 is about), plus one own term each.
    n_docs, n_terms = 6, 16
    spread = sp.lil_matrix((n_docs, n_terms))
    collapsed = sp.lil_matrix((n_docs, n_terms))
    for i in range(n_docs):
        spread[i, 2 * i] = spread[i, 2 * i + 1] = 1.0
        collapsed[i, 0] = collapsed[i, 1] = 1.0
        collapsed[i, 2 + i] = 2.0
    vocab = [f"t{i}" for i in range(n_terms)]
    result = compare_models(
        {"spread": spread.tocsr(), "collapsed": collapsed.tocsr()}, vocab, top_n=3
    )
    assert list(result) == ["spread", "collapsed"]
    s, c = result["spread"], result["collapsed"]
    assert s["coactivation"] == 0.0
    assert c["coactivation"] == pytest.approx(0.5)  # {0, 1, x} vs {0, 1, y}: 2 / 4
    assert s["n_terms_over_90pct"] == 0 and c["n_terms_over_90pct"] == 2
    # top 3 terms (ties by lower id) are t0, t1, t2 in both. spread: t0 & t1 both only in
    # doc 0 -> 1, t2 is doc 1's -> 0, 0; mean 1/3. collapsed: t0 & t1 in all six -> 1,
    # t2 only in doc 0 -> 1/6 with each; mean (1 + 1/6 + 1/6) / 3 = 4/9
    assert s["top3_mean_jaccard"] == pytest.approx(1 / 3)
    assert c["top3_mean_jaccard"] == pytest.approx(4 / 9)
    assert s["n_docs"] == 6 and c["mean_nnz"] == 3.0
    assert c["frequent_terms"].startswith("t0 (1.00), t1 (1.00)")
    assert all(
        isinstance(v, (int, float, str)) for stats in result.values() for v in stats.values()
    )

    with_captions = compare_models(
        {"M": DOCS}, VOCAB, captions=CAPTIONS, tokenize=str.split, k=2, top_n=3
    )
    assert with_captions["M"]["caption_overlap@2"] == pytest.approx(0.5)
    assert with_captions["M"]["coactivation"] == pytest.approx(1 / 3)
    assert with_captions["M"]["top3_mean_jaccard"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    with pytest.raises(ValueError, match="both captions and tokenize"):
        compare_models({"M": DOCS}, VOCAB, captions=CAPTIONS)
    with pytest.raises(ValueError, match="at least one"):
        compare_models({}, VOCAB)


def test_format_comparison_table() -> None:
    table = format_comparison_table(
        {"M1": {"coactivation": 0.123456, "n_docs": 4, "terms": "a|b"}, "M2": {"n_docs": 5}}
    )
    assert table.splitlines() == [
        "| statistic | M1 | M2 |",
        "|---|---:|---:|",
        "| coactivation | 0.1235 | - |",
        "| n_docs | 4 | 5 |",
        "| terms | a\\|b | - |",
    ]
    only = format_comparison_table({"M1": {"a": 1, "b": 2.0}}, keys=["b"])
    assert only.splitlines()[2:] == ["| b | 2 |"]
    with pytest.raises(ValueError, match="no models"):
        format_comparison_table({})


# ------------------------------------------------------------------------- plots


def _render(fig) -> None:  # type: ignore[no-untyped-def]
    fig.savefig(io.BytesIO(), format="png", dpi=40)


def test_plot_activation_frequency() -> None:
    from lightning_mlsr.analysis.plots import plot_activation_frequency

    freqs = {
        "M1": term_activation_frequency(DOCS),
        "M3": np.array([0.1, 0.0, 0.9]),
        "dead": np.zeros(6),
    }
    fig = plot_activation_frequency(freqs)
    (ax,) = fig.axes
    assert len(ax.lines) == 3
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.75, 0.5, 0.25, 0.25, 0.25])
    assert ax.lines[2].get_ydata().size == 0
    assert ax.get_yscale() == "log"
    _render(fig)
    empty = plot_activation_frequency({})
    assert len(empty.axes) == 1 and not empty.axes[0].lines
    _render(empty)
    _render(plot_activation_frequency({"dead": np.zeros(6)}))


def test_plot_coactivation_heatmap() -> None:
    from lightning_mlsr.analysis.plots import plot_coactivation_heatmap

    matrix, ids = coactivation_matrix(DOCS, top_n=3, measure="pmi")  # holds -inf
    fig = plot_coactivation_heatmap(matrix, [VOCAB[t] for t in ids], title="PMI")
    assert len(fig.axes) == 2  # heatmap + colorbar
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "cat", "dog"]
    assert fig.axes[0].images[0].get_array().mask.diagonal().all()
    _render(fig)
    empty = plot_coactivation_heatmap(np.zeros((0, 0)), [])
    assert len(empty.axes) == 1
    _render(empty)
    with pytest.raises(ValueError, match="labels"):
        plot_coactivation_heatmap(matrix, ["a"])


def test_plot_image_grid() -> None:
    from PIL import Image

    from lightning_mlsr.analysis.plots import plot_image_grid

    images = [Image.new("RGB", (8, 8), color=(i * 30, 0, 0)) for i in range(7)]
    images[1] = np.zeros((8, 8))  # a grayscale array works too
    terms = top_terms(sp.vstack([DOCS, DOCS[:3]]), VOCAB, k=3)
    fig = plot_image_grid(images, terms, ncols=3)
    assert len(fig.axes) == 7  # one per image, no blank cells
    assert fig.axes[0].get_title().startswith("a 2.00, cat 1.00")
    assert fig.axes[3].get_title() == "(no active terms)"
    _render(fig)
    empty = plot_image_grid([], [])
    assert len(empty.axes) == 1
    _render(empty)
    with pytest.raises(ValueError, match="one per image"):
        plot_image_grid(images, terms[:2])


def test_plot_nonzeros_histogram() -> None:
    from lightning_mlsr.analysis.plots import plot_nonzeros_histogram

    counts = {"M1": nonzeros_per_row(DOCS), "M2": np.array([10, 12, 30]), "none": np.array([])}
    fig = plot_nonzeros_histogram(counts, bins=5)
    (ax,) = fig.axes
    assert len(ax.get_legend().get_texts()) == 3
    assert len(ax.patches) == 3  # one step outline per model
    _render(fig)
    for empty_input in ({}, {"M1": np.array([])}):
        empty = plot_nonzeros_histogram(empty_input)
        assert len(empty.axes) == 1
        _render(empty)

"""Teacher-labelled pseudo-queries (lightning_mlsr.generate.pseudo_queries): the written
collection keeps every source judgment, adds each kept word judged relevant to the caption a
brute-force cosine ranking of the teacher puts first, and reads back as a collection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_mlsr.data import load_collection
from lightning_mlsr.data.errors import DataError
from tests.helpers import dense_teacher_checkpoint, teacher_cosines, write_atomic

#: "colours blue" is the query of training text T2 of the helper collection
WORDS = ["crimson", "azure", "banana", "the", "of", "transparent", "glass", "azure", "Colours Blue"]


def _train_queries(source: Path) -> set[str]:
    c = load_collection(source)
    return {c.texts.query(c.texts.index(t)).lower() for t in c.query_ids("train")}


def _candidates(source: Path) -> list[str]:
    """WORDS as the builder should consider them: once each, training queries left out."""
    train = _train_queries(source)
    return [w for w in dict.fromkeys(WORDS) if w.lower() not in train]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """The source collection, the written one, the teacher, the provenance, the brute-force cosines of the
    distinct WORDS and the threshold used (halfway between two words' best cosines)."""
    from lightning_mlsr.generate.pseudo_queries import build_pseudo_query_collection

    tmp = tmp_path_factory.mktemp("pseudo")
    source = write_atomic(tmp / "source")  # 4 images in two files, queries of 3 fields
    ckpt = dense_teacher_checkpoint(tmp / "teacher.pt")
    cos = teacher_cosines(ckpt, _candidates(source), load_collection(source).images.captions())
    best = cos.max(dim=1).values.sort().values
    threshold = float(best[len(best) // 2 - 1] + best[len(best) // 2]) / 2
    info = build_pseudo_query_collection(
        source, tmp / "out", ckpt, words=WORDS, min_score=threshold, positives=2
    )
    return source, tmp / "out", ckpt, info, cos, threshold


def test_pseudo_queries_are_judged_relevant_to_the_teachers_top_captions(built) -> None:
    src, out, _, info, cos, threshold = built
    source, pseudo = load_collection(src), load_collection(out)
    words = _candidates(src)
    assert "colours blue" in _train_queries(src) and len(words) == 7
    best, order = cos.max(dim=1).values, cos.argsort(dim=1, descending=True)  # cos: (W, N)
    want = {w for w, b in zip(words, best.tolist(), strict=True) if b >= threshold}
    assert 0 < len(want) < len(words)  # the threshold keeps some words and drops others
    new = [t for t in pseudo.query_ids("train") if t.startswith("pseudo-")]
    got = {pseudo.texts.query(pseudo.texts.index(t)): t for t in new}
    assert set(got) == want and info["pseudo_queries"] == len(want)
    assert info["candidates"] == len(words)
    ids = list(source.images.ids)
    for w, tid in got.items():
        row = words.index(w)
        assert set(pseudo.qrels["train"][tid]) == {ids[j] for j in order[row, :2].tolist()}
        assert all(rel == 1 for rel in pseudo.qrels["train"][tid].values())


def test_pseudo_query_collection_keeps_every_source_judgment_and_image(built) -> None:
    src, out, _, info, _, _ = built
    source, pseudo = load_collection(src), load_collection(out)
    assert pseudo.name == f"{source.name}+pseudo" and len(pseudo.images) == len(source.images)
    assert pseudo.images.captions() == source.images.captions()
    for split in ("validation", "test"):
        assert pseudo.qrels[split] == source.qrels[split]
    train = {t: d for t, d in pseudo.qrels["train"].items() if not t.startswith("pseudo-")}
    assert train == source.qrels["train"]
    assert (out / "pseudo_queries.tsv").read_text().count("\n") == info["pseudo_queries"] + 1


def test_a_source_that_shares_another_collections_images_gives_a_self_contained_output(
    tmp_path: Path, built
) -> None:
    """A variant collection points its images at another's (``folders`` in collection.json);
    the pseudo-query collection built from it holds its own folders and loads on its own."""
    import shutil

    from lightning_mlsr.generate.pseudo_queries import build_pseudo_query_collection

    src, _, ckpt, _, _, threshold = built
    variant = tmp_path / "variant"
    shutil.copytree(src, variant)
    shutil.move(variant / "images", tmp_path / "shared-images")
    json_path = variant / "collection.json"
    config = json.loads(json_path.read_text()) if json_path.is_file() else {}
    config["folders"] = {"images": "../shared-images"}
    json_path.write_text(json.dumps(config))
    out = tmp_path / "out"
    build_pseudo_query_collection(variant, out, ckpt, words=WORDS, min_score=threshold)
    assert "folders" not in json.loads((out / "collection.json").read_text())
    pseudo = load_collection(out)
    assert pseudo.images.captions() == load_collection(src).images.captions()


def test_max_queries_draws_a_seeded_subset(tmp_path: Path, built) -> None:
    from lightning_mlsr.generate.pseudo_queries import build_pseudo_query_collection

    src, ckpt = built[0], built[2]
    picks = []
    for _ in range(2):
        info = build_pseudo_query_collection(
            src,
            tmp_path / f"s{len(picks)}",
            ckpt,
            words=WORDS,
            min_score=0.0,
            max_queries=3,
            seed=7,
        )
        assert info["pseudo_queries"] == 3 and info["passed_min_score"] == len(_candidates(src))
        picks.append((tmp_path / f"s{len(picks)}" / "pseudo_queries.tsv").read_text())
    assert picks[0] == picks[1]  # same seed, same words
    kept = [line.split("\t")[1] for line in picks[0].splitlines()[1:]]
    assert len(set(kept)) == 3 and set(kept) <= set(_candidates(src))


def test_bad_requests_fail_clearly(tmp_path: Path, built) -> None:
    from lightning_mlsr.generate.pseudo_queries import build_pseudo_query_collection

    src, ckpt = built[0], built[2]
    with pytest.raises(DataError, match="source collection itself"):
        build_pseudo_query_collection(src, src, ckpt, words=WORDS)
    with pytest.raises(DataError, match="lower min_score"):
        build_pseudo_query_collection(src, tmp_path / "x", ckpt, words=WORDS, min_score=1.5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_pseudo_query_collection(src, tmp_path / "y", tmp_path / "none.pt", words=WORDS)


def test_more_words_than_one_scoring_block_keep_their_own_labels(tmp_path: Path, built) -> None:
    """Words are scored in blocks of 1024: the 1030 words here span two blocks."""
    from lightning_mlsr.generate.candidates import vocabulary_words
    from lightning_mlsr.generate.pseudo_queries import build_pseudo_query_collection
    from lightning_mlsr.io.pretrained import load_tokenizer

    src, ckpt = built[0], built[2]
    train = _train_queries(src)
    words = [w for w in vocabulary_words(load_tokenizer("minilm-l6"))[:1030] if w not in train]
    assert len(words) > 1024
    build_pseudo_query_collection(src, tmp_path / "o", ckpt, words=words, min_score=-1.0)
    cos = teacher_cosines(ckpt, words, load_collection(src).images.captions())
    pseudo = load_collection(tmp_path / "o")
    ids = list(pseudo.images.ids)
    got = {
        pseudo.texts.query(pseudo.texts.index(t)): set(pseudo.qrels["train"][t])
        for t in pseudo.query_ids("train")
        if t.startswith("pseudo-")
    }
    assert len(got) == len(words)
    wrong = [w for i, w in enumerate(words) if got[w] != {ids[int(cos[i].argmax())]}]
    assert not wrong, wrong[:5]


def test_english_words_are_wordfreqs_most_frequent_plain_words() -> None:
    from wordfreq import top_n_list, word_frequency

    from lightning_mlsr.generate.candidates import english_words

    got = english_words(2000)
    plain = [w for w in top_n_list("en", 2000) if len(w) >= 3 and w.isascii() and w.isalpha()]
    assert got == [w for w in plain if w.islower()] and 1000 < len(got) < 2000
    freqs = [word_frequency(w, "en") for w in got]
    assert all(a >= b for a, b in zip(freqs, freqs[1:]))  # most frequent first
    with pytest.raises(ValueError, match="n must be"):
        english_words(0)


def test_english_words_join_the_candidates(tmp_path: Path, built) -> None:
    from lightning_mlsr.generate.candidates import english_words
    from lightning_mlsr.generate.pseudo_queries import build_pseudo_query_collection

    src, ckpt = built[0], built[2]
    info = build_pseudo_query_collection(
        src, tmp_path / "e", ckpt, words=WORDS, english=40, min_score=-1.0
    )
    train = _train_queries(src)
    want = [w for w in dict.fromkeys(WORDS + english_words(40)) if w.lower() not in train]
    assert "the" in WORDS and "of" not in english_words(40)  # a word of both is counted once
    assert info["candidates"] == info["pseudo_queries"] == len(want) > len(_candidates(src))
    assert info["words"] == "given list + wordfreq top 40 English words"
    tsv = (tmp_path / "e" / "pseudo_queries.tsv").read_text("utf-8").splitlines()[1:]
    assert [line.split("\t")[1] for line in tsv] == want


def test_expanded_captions_append_each_word_to_its_top_caption(tmp_path: Path, built) -> None:
    """Doc2query-style expansion: a caption gains the kept words the teacher ranks it first
    for, in order of the teacher's cosine; images, ids and judgments stay the same."""
    from lightning_mlsr.generate.pseudo_queries import build_pseudo_query_collection

    src, _, ckpt, _, cos, threshold = built
    words = _candidates(src)
    info = build_pseudo_query_collection(
        src, tmp_path / "x", ckpt, words=WORDS, min_score=threshold, expand_captions=1
    )
    source, expanded = load_collection(src), load_collection(tmp_path / "x")
    best, top = cos.max(dim=1)  # (W,), over the source's captions
    gained = 0
    for j, (caption, got) in enumerate(
        zip(source.images.captions(), expanded.images.captions(), strict=True)
    ):
        mine = [(float(b), w) for w, b, t in zip(words, best, top, strict=True) if t == j]
        kept = [w for b, w in sorted(mine, reverse=True) if b >= threshold]
        first, *rest = caption.split(" ; ")  # entries are joined with " ; "
        assert got.split(" ; ")[0] == " ".join([first, *kept]), (caption, got)
        assert set(got.split(" ; ")[1:]) | {first} >= set(rest)  # other entries kept
        gained += bool(kept)
    assert gained and info["expanded_images"] == gained
    assert list(expanded.images.ids) == list(source.images.ids)
    assert expanded.images.image_bytes(0) == source.images.image_bytes(0)
    assert expanded.qrels["test"] == source.qrels["test"]
    with pytest.raises(ValueError, match="expand_captions"):
        build_pseudo_query_collection(src, tmp_path / "y", ckpt, words=WORDS, expand_captions=4)


@pytest.mark.slow
def test_evaluation_queries_are_left_out_unless_transductive(tmp_path: Path, built) -> None:
    """A candidate equal to a validation or test query (any case, any padding) never becomes
    a pseudo-query or a caption expansion by default; --transductive keeps it."""
    from lightning_mlsr.baselines.common import split_texts
    from lightning_mlsr.generate.pseudo_queries import build_pseudo_query_collection, main

    src, ckpt = built[0], built[2]
    source = load_collection(src)
    test_query = split_texts(source, "test")[1][0]
    words = [*WORDS, f"  {test_query.upper()} "]
    kept = {}
    for transductive in (False, True):
        out = tmp_path / f"t{transductive}"
        info = build_pseudo_query_collection(
            src,
            out,
            ckpt,
            words=words,
            min_score=-1.0,
            expand_captions=3,
            include_evaluation_queries=transductive,
        )
        tsv = (out / "pseudo_queries.tsv").read_text("utf-8").splitlines()[1:]
        kept[transductive] = [line.split("\t")[1].lower() for line in tsv]
        captions = " ".join(load_collection(out).images.captions()).lower()
        assert (test_query.lower() in captions) is transductive
        assert info["excluded_evaluation_queries"] == (0 if transductive else 1)
        assert info["evaluation_queries"] == (
            "included (transductive)" if transductive else "excluded"
        )
    assert kept[True] == [*kept[False], test_query.lower()]
    assert kept[False] == [w.lower() for w in _candidates(src)]
    words_file = tmp_path / "words.txt"
    words_file.write_text("\n".join(words), "utf-8")
    out = tmp_path / "cli"  # the command line's switch for the transductive variant
    argv = [str(src), "--teacher", str(ckpt), "--out", str(out), "--words", str(words_file)]
    assert main([*argv, "--min-score", "-1", "--transductive"]) == 0
    info = json.loads((out / "collection.json").read_text())["pseudo_queries"]
    assert info["candidates"] == len(_candidates(src)) + 1


def test_unseen_queries_by_hand() -> None:
    from lightning_mlsr.generate.candidates import unseen_queries

    ids = ["q1", "q2", "q3", "q4", "q5"]
    texts = ["red apple", "Apple", " banana ", "kiwi", "grape"]
    train, candidates = ["RED APPLE"], {"apple", "banana", "pear"}
    assert unseen_queries(ids, texts, train, candidates) == ["q4", "q5"]
    assert unseen_queries(ids, texts, train) == ["q2", "q3", "q4", "q5"]
    assert unseen_queries(ids, texts) == ids
    with pytest.raises(ValueError, match="5 query ids but 4 texts"):
        unseen_queries(ids, texts[:4])

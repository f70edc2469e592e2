"""Visual concepts as document text (lightning_mlsr.generate.visual_concepts): each image's
caption field holds the names of the classes timm's own EfficientNet-Lite0 classifier ranks
first for its pixels, computed here image by image without the generator's batching."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_mlsr.data import load_collection
from lightning_mlsr.data.errors import DataError
from tests.helpers import YELLOW, default_images, image_row, write_atomic

TOP_K = 3


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    from lightning_mlsr.generate.visual_concepts import build_visual_concept_collection

    tmp = tmp_path_factory.mktemp("visual")
    first, second = default_images()
    broken = image_row("I5", b"not an image", ["en"], ["broken"])
    source = write_atomic(tmp / "source", images=(first, [*second, broken]))
    made = build_visual_concept_collection(source, tmp / "out", top_k=TOP_K, batch_size=2)
    return source, tmp / "out", made


def _expected_concepts(source) -> dict[str, str]:
    """timm's classifier on each decodable image alone: its top classes' first lemmas."""
    import timm
    import timm.data
    from timm.data import ImageNetInfo

    from lightning_mlsr.models.image_backbone import ImageBackbone

    model = ImageBackbone("tf_efficientnet_lite0").model.eval()
    transform = timm.data.create_transform(
        **timm.data.resolve_data_config({}, model=model), is_training=False
    )
    info = ImageNetInfo()
    collection = load_collection(source)
    out = {}
    for row, image_id in enumerate(collection.images.ids):
        try:
            image = collection.images.load_image(row)
        except DataError:
            continue
        with torch.no_grad():
            logits = model(transform(image)[None])[0]
        top = logits.topk(TOP_K).indices.tolist()
        out[image_id] = ", ".join(info.index_to_description(j).split(",")[0] for j in top)
    return out


def test_each_image_gets_its_top_classes_as_a_caption_field(built) -> None:
    source, out, made = built
    expected = _expected_concepts(source)
    assert set(expected) == {"I1", "I2", "I3", "I4"}
    concepts = load_collection(
        out, caption_fields=["caption_visual_concepts"], on_missing_caption="keep"
    )
    got = dict(zip(concepts.images.ids, concepts.images.captions(), strict=True))
    assert {k: v for k, v in got.items() if v} == expected
    assert got["I5"] == ""  # undecodable: no concepts
    assert made["images"] == 5 and made["undecodable"] == 1 and made["top_k"] == TOP_K
    rows = (out / "visual_concepts.tsv").read_text("utf-8").splitlines()
    assert rows[0].split("\t") == ["image_id", "caption", "concepts", "probabilities"]
    broken = next(r for r in rows if r.startswith("I5\t")).split("\t")
    assert broken[2] == "" and "I5" in broken[3]


def test_concepts_sit_at_the_english_entries_only(built) -> None:
    source, out, _ = built
    both = load_collection(
        out,
        caption_fields=["caption_reference_description", "caption_visual_concepts"],
        caption_languages="all",
    )
    original = load_collection(source, caption_languages="all")
    expected = _expected_concepts(source)
    for image_id, caption in zip(both.images.ids, both.images.captions(), strict=True):
        before = original.images.caption(original.images.index(image_id))
        want = (
            f"{before} ; {expected[image_id]}" if image_id in expected else before
        )  # entries: " ; "
        assert caption == want, image_id
    german = load_collection(
        out,
        caption_fields=["caption_visual_concepts"],
        caption_languages=["de"],
        on_missing_caption="keep",
    )
    assert set(german.images.captions()) == {""}


def test_the_rest_of_the_collection_is_the_source(built) -> None:
    source, out, _ = built
    a, b = load_collection(source), load_collection(out)
    assert list(a.images.ids) == list(b.images.ids)
    assert a.images.captions() == b.images.captions()  # the default fields are untouched
    assert a.texts.queries() == b.texts.queries()
    assert {s: a.qrels[s] for s in a.splits} == {s: b.qrels[s] for s in b.splits}
    meta = json.loads((out / "collection.json").read_text("utf-8"))
    assert meta["visual_concepts"]["backbone"] == "tf_efficientnet_lite0"


def test_bad_options_are_errors(tmp_path) -> None:
    from lightning_mlsr.generate.visual_concepts import build_visual_concept_collection

    source = write_atomic(tmp_path / "source")
    with pytest.raises(ValueError, match="top_k"):
        build_visual_concept_collection(source, tmp_path / "out", top_k=0)
    with pytest.raises(DataError, match="source collection itself"):
        build_visual_concept_collection(source, source)


def test_a_collection_read_without_english_gets_the_concepts_at_its_first_language(
    tmp_path,
) -> None:
    """stamps reads its documents in de, es, fr, it and nl (English is the query side): the
    concepts go to the first of those each image has (some stamps have no German caption),
    once, so its documents read them once, as configured."""
    from lightning_mlsr.generate.visual_concepts import (
        build_visual_concept_collection,
        concept_languages,
    )

    assert concept_languages(None) == ("en",)
    assert concept_languages(("en", "de")) == ("en",)
    assert concept_languages(("de", "nl")) == ("de", "nl")
    first, _ = default_images()
    # no German caption: the Dutch one gets the concepts
    yellow = image_row("I4", YELLOW, ["en", "nl", "nl"], ["yellow square", "geel", "gele"])
    source = write_atomic(
        tmp_path / "source",
        images=(first, [yellow]),
        collection_json={"caption_languages": ["de", "nl"]},
    )
    made = build_visual_concept_collection(source, tmp_path / "out", top_k=TOP_K, batch_size=2)
    assert made["languages"] == ["de", "nl"]
    expected = _expected_concepts(source)
    concepts = load_collection(tmp_path / "out", caption_fields=["caption_visual_concepts"])
    assert sorted(concepts.images.ids) == ["I1", "I2", "I3", "I4"]
    for image_id, caption in zip(concepts.images.ids, concepts.images.captions(), strict=True):
        assert caption == expected[image_id], image_id
    english = load_collection(
        tmp_path / "out",
        caption_fields=["caption_visual_concepts"],
        caption_languages=["en"],
        on_missing_caption="keep",
    )
    assert set(english.images.captions()) == {""}

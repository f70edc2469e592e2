"""RetrievalDataModule: its settings, batches, false negatives, sharding, the frozen-feature
cache."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

from lightning_mlsr.data import DataError
from lightning_mlsr.data.datamodule import RetrievalDataModule, shard_indices
from lightning_mlsr.data.settings import (
    FLAT_KEYS,
    BatchingSettings,
    EvaluationSettings,
    FeatureSettings,
    NegativeSettings,
    ReadingSettings,
    grouped_hparams,
)
from lightning_mlsr.data.training.pairs import false_negative_mask
from lightning_mlsr.io.checkpoints import load_checkpoint
from lightning_mlsr.io.encoder_reads import BatchInputs
from lightning_mlsr.models import ImageMLMHead, MLPHead
from lightning_mlsr.objectives.ranking import gathered_false_negatives
from tests.helpers import HEAD_CONFIGS, batch_inputs, make_head, write_atomic

# T1 is relevant to I1 and I2, T2 to I2: in one batch of all three pairs, the other
# image relevant to the same query must not be used as a negative.
QRELS = {
    "train.trec": "T1 Q0 I1 1\nT1 Q0 I2 1\nT2 Q0 I2 1\n",
    "validation.trec": "T2 Q0 I3 1\n",
    "test.trec": "T3 Q0 I4 1\n",
}


TINY_FROZEN_IMAGE = {"image_backbone": "test_efficientnet", "image_pretrained": False}


@pytest.fixture
def collection_dir(tmp_path: Path) -> Path:
    return write_atomic(tmp_path / "atomic", qrels=QRELS, qrels_parquet={})


@pytest.fixture(scope="module")
def text_heads() -> tuple[MLPHead, MLPHead]:
    return MLPHead(pooling="sum"), MLPHead(pooling="max")


def test_training_batch_and_false_negatives(collection_dir: Path, text_heads) -> None:
    dm = RetrievalDataModule(
        str(collection_dir), batching=BatchingSettings(batch_size=3, query_max_length=8)
    )
    dm.set_batch_inputs(batch_inputs(*text_heads))
    dm.setup("fit")
    pairs = dm._split_pairs("train")
    # pairs in a fixed order: (T1, I1), (T1, I2), (T2, I2) as table rows
    texts, images = dm.collection.texts, dm.collection.images
    assert [(texts.ids[t], images.ids[i]) for t, i in pairs] == [
        ("T1", "I1"),
        ("T1", "I2"),
        ("T2", "I2"),
    ]
    batch = dm.train_dataloader().collate_fn([0, 1, 2])
    assert set(batch) == {
        "query",
        "doc",
        "false_negatives",
        "query_idx",
        "doc_idx",
        "relevant_doc_idx",
        "skipped_images",  # taken out by the loader, reported once per pass
    }
    assert batch["skipped_images"] == []
    assert batch["query"]["input_ids"].shape[0] == 3
    assert batch["query"]["input_ids"].shape[1] <= 8
    assert "image_features" not in batch["doc"]  # caption-only model: no images loaded
    expected = torch.tensor(
        [
            [False, True, True],  # T1: I2 (cols 1, 2) is relevant too
            [True, False, True],  # T1: I1 (col 0) relevant; col 2 is its positive I2 again
            [False, True, False],  # T2: col 1 holds I2 as well
        ]
    )
    assert torch.equal(batch["false_negatives"], expected)
    # gathered across ranks, from ids alone (what the module does under DDP): the
    # positive of query i sits at column offset + i
    i1, i2 = images.ids.positions(["I1", "I2"]).tolist()
    assert batch["relevant_doc_idx"].tolist() == [[i1, i2], [i1, i2], [i2, -1]]
    doc_idx = torch.cat([batch["doc_idx"], batch["doc_idx"]])
    gathered = gathered_false_negatives(batch["relevant_doc_idx"], doc_idx, offset=3)
    assert gathered[:, 3:].equal(expected)
    assert gathered[:, :3].equal(
        torch.tensor([[True, True, True], [True, True, True], [False, True, True]])
    )
    oracle = false_negative_mask(dm._relevant["train"], batch["query_idx"], doc_idx, offset=3)
    assert gathered.equal(oracle)


def test_the_batch_inputs_are_required_and_named(
    collection_dir: Path, text_heads, tmp_path: Path
) -> None:
    dm = RetrievalDataModule(
        str(collection_dir),
        batching=BatchingSettings(batch_size=2),
        features=FeatureSettings(cache_dir=str(tmp_path / "cache")),
    )
    dm.setup("fit")  # under a Trainer the inputs come after this hook: no error yet
    with pytest.raises(RuntimeError, match=r"set_batch_inputs\(model.batch_inputs\(\)\)"):
        dm.train_dataloader()
    dm.set_batch_inputs(batch_inputs(*text_heads))
    dm.setup("fit")  # known now: the collator is ready
    collator = dm.collator
    assert collator.query == text_heads[0].reads()  # as the encoder declared it
    assert collator.tokenizers.keys() == {"splade-tiny"} and collator.query_max_length == 32
    dm.set_batch_inputs(batch_inputs(*text_heads))  # equal inputs keep the batches built
    assert dm.collator is collator
    dm.set_batch_inputs(batch_inputs(text_heads[0], ImageMLMHead(**TINY_FROZEN_IMAGE)))
    assert dm.collator is not collator and dm.collator.features is not None


@pytest.mark.parametrize("config", [*HEAD_CONFIGS, "image_mlm-pixels"])
def test_each_heads_reads_reach_the_collator_unchanged(
    collection_dir: Path, text_heads, tmp_path: Path, config: str
) -> None:
    """Every registered head (real ones, test-sized) as the document encoder, and as the
    query encoder where it reads text only: the collator holds its Reads as declared, and
    the batches hold what they declare, which the head then encodes."""
    if config == "image_mlm-pixels":
        head = ImageMLMHead(**TINY_FROZEN_IMAGE, image_size=32, freeze_image_backbone=False)
    else:
        head = make_head(config)
    reads = head.reads()
    query = head if reads.modalities == {"text"} else text_heads[0]
    inputs = BatchInputs(query.reads(), reads)
    dm = RetrievalDataModule(
        str(collection_dir),
        batching=BatchingSettings(batch_size=2),
        features=FeatureSettings(cache_dir=str(tmp_path / "cache")),
    )
    dm.set_batch_inputs(inputs)
    dm.setup("fit")
    collator = dm.collator
    assert collator.query is inputs.query and collator.doc is inputs.doc
    if reads.pixels is None:  # a transform is a new object each time: equal only to itself
        assert collator.doc == head.reads()  # declared again: equal
    assert collator.doc_max_length == min(32, reads.max_length or 32)
    docs = dm.train_dataloader().collate_fn([0, 1])["doc"]
    assert ("input_ids" in docs) == reads.text
    assert ("image_features" in docs) == (reads.features is not None)
    assert ("pixel_values" in docs) == (reads.pixels is not None)
    head.eval()
    with torch.no_grad():
        assert head(docs).shape == (2, head.width)
        queries = dm.collator.query_batch([0, 1])["query"]
        assert query(queries).shape == (2, query.width)


def test_eval_loaders_cover_corpus_and_split_queries(collection_dir: Path, text_heads) -> None:
    dm = RetrievalDataModule(
        str(collection_dir), batching=BatchingSettings(batch_size=2, eval_batch_size=3)
    )
    dm.set_batch_inputs(batch_inputs(*text_heads))
    rows = [r for b in dm.corpus_dataloader() for r in b["doc_idx"].tolist()]
    assert sorted(rows) == list(range(len(dm.collection.images)))
    shards = [
        [r for b in dm.corpus_dataloader(rank, 2) for r in b["doc_idx"].tolist()] for rank in (0, 1)
    ]
    assert sorted(shards[0] + shards[1]) == rows and not set(shards[0]) & set(shards[1])
    queries = [r for b in dm.query_dataloader("validation") for r in b["query_idx"].tolist()]
    assert [dm.collection.texts.ids[r] for r in queries] == ["T2"]


def test_shard_indices_are_disjoint_and_cover() -> None:
    parts = [shard_indices(10, r, 3) for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    assert [len(p) for p in parts] == [4, 3, 3]


def test_image_queries_are_refused(collection_dir: Path, text_heads) -> None:
    image_head = ImageMLMHead(image_backbone="test_efficientnet", image_pretrained=False)
    dm = RetrievalDataModule(str(collection_dir))
    dm.set_batch_inputs(batch_inputs(image_head, text_heads[1]))
    with pytest.raises(DataError, match="query encoder must be a text head"):
        dm.setup("fit")


def test_frozen_features_are_computed_lazily_and_cached_by_content(
    collection_dir: Path, text_heads, tmp_path: Path
) -> None:
    head = ImageMLMHead(image_backbone="test_efficientnet", image_pretrained=False, image_size=32)
    cache = tmp_path / "cache"
    encoded: list[int] = []

    def build(fill: Literal["lazy", "upfront"] = "lazy") -> RetrievalDataModule:
        dm = RetrievalDataModule(
            str(collection_dir),
            batching=BatchingSettings(batch_size=2),
            features=FeatureSettings(cache_dir=str(cache), fill=fill),
        )
        dm.set_batch_inputs(batch_inputs(text_heads[0], head))
        dm.prepare_data()
        dm.setup("fit")
        store = dm.collator.features
        assert store is not None
        assert store.computer.compute is not head.image_backbone  # a frozen copy, not the model's
        store.computer.compute.register_forward_pre_hook(
            lambda _m, args: encoded.append(len(args[0]))
        )
        return dm

    dm = build()
    assert sum(encoded) == 0 and not list(cache.rglob("*.npy"))  # nothing before a batch
    batch = dm.train_dataloader().collate_fn([0, 1])  # pairs (T1, I1), (T1, I2)
    assert sum(encoded) == 2  # only the batch's images, not the collection's
    assert batch["doc"]["image_features"].shape == (2, head.image_backbone.num_features)
    # the cached features are the backbone's own output on the preprocessed image
    backbone = head.image_backbone.eval()
    row = int(batch["doc_idx"][0])
    pixels = backbone.transform()(dm.collection.images.load_image(row))[None]
    with torch.no_grad():
        direct = backbone(pixels)[0]
    torch.testing.assert_close(batch["doc"]["image_features"][0], direct, rtol=1e-4, atol=1e-5)

    # a second run reads the cache: the same batch computes nothing, a new image is computed
    dm.teardown("fit")  # writes what was computed lazily, as a Trainer would at the end
    encoded.clear()
    dm = build()
    again = dm.train_dataloader().collate_fn([0, 1])
    assert sum(encoded) == 0
    torch.testing.assert_close(again["doc"]["image_features"], batch["doc"]["image_features"])
    dm.val_dataloader().collate_fn([0])  # (T2, I3)
    assert sum(encoded) == 1

    # features.fill="upfront" fills every image the run needs in prepare_data, once
    encoded.clear()
    dm = build(fill="upfront")
    assert sum(encoded) == 0  # the hook is attached after prepare_data: count the cache
    store = dm.collator.features
    assert store is not None and len(store) == len(dm.collection.images)
    build(fill="upfront")
    assert sum(encoded) == 0

    # different image content -> recomputed, not served from the cache
    import pyarrow as pa
    import pyarrow.parquet as pq

    part = collection_dir / "images" / "part-1.parquet"
    table = pq.read_table(part)
    from tests.helpers import png

    table = table.set_column(
        table.schema.get_field_index("image"), "image", pa.array([png((1, 2, 3, 255))])
    )
    pq.write_table(table, part)
    dm = build()
    changed = dm.collection.images.index(pq.read_table(part)["image_id"][0].as_py())
    dm.collator.docs([changed])
    assert sum(encoded) == 1


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: BatchingSettings(batch_size=1), "data.batching.batch_size must be >= 2"),
        (lambda: BatchingSettings(num_workers=-1), "data.batching.num_workers must be >= 0"),
        (lambda: ReadingSettings(max_query_chars=0), "data.reading.max_query_chars must be >= 1"),
        (lambda: FeatureSettings(batch_size=0), "data.features.batch_size must be >= 1"),
        (lambda: EvaluationSettings(distractors=-1), "data.evaluation.distractors must be >= 0"),
        (lambda: NegativeSettings(depth=0), "data.negatives.depth must be >= 1, got 0"),
    ],
)
def test_settings_out_of_range_name_their_key(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_the_parser_reads_nested_keys_and_checks_the_choices() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(RetrievalDataModule, "data")
    config = parser.parse_args(
        [
            "--data.collection=DIR",
            "--data.batching.batch_size=8",
            "--data.evaluation.corpus=judged",
            "--data.features.fill=upfront",
            "--data.predict=queries",
        ]
    )
    dm = parser.instantiate_classes(config).data
    assert dm.collection_source == "DIR" and dm.predict_name == "queries_test"
    assert dm.batching == BatchingSettings(batch_size=8)  # the group's other keys: defaults
    assert dm.evaluation.corpus == "judged" and dm.features.fill == "upfront"
    for bad in ("--data.evaluation.corpus=some", "--data.features.fill=eager"):
        with pytest.raises(Exception, match="Expected a typing.Literal"):
            parser.parse_args([bad])


def test_checkpoint_hparams_are_plain_and_rebuild_the_datamodule(tmp_path: Path) -> None:
    dm = RetrievalDataModule(
        "emoji",
        batching=BatchingSettings(batch_size=8, query_max_length=16),
        evaluation=EvaluationSettings(corpus="judged+sampled", distractors=5),
        predict="queries",
        predict_split="validation",
    )
    path = tmp_path / "dm.ckpt"
    torch.save({RetrievalDataModule.CHECKPOINT_HYPER_PARAMS_KEY: dict(dm.hparams)}, path)
    saved = load_checkpoint(path)[RetrievalDataModule.CHECKPOINT_HYPER_PARAMS_KEY]  # weights_only
    assert saved["batching"]["batch_size"] == 8
    again = RetrievalDataModule.from_hparams(saved)
    assert (again.batching, again.evaluation) == (dm.batching, dm.evaluation)
    assert again.predict_name == "queries_validation"

    # the flat keys of earlier checkpoints land in their groups
    flat = {
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
        "collection": "emoji",
        "batch_size": 8,
        "query_max_length": 16,
        "eval_corpus": "judged+sampled",
        "eval_distractors": 5,
        "feature_fill": "upfront",
        "hard_negatives": "neg.tsv",
        "predict_target": "queries:validation",
    }
    old = RetrievalDataModule.from_hparams(flat)
    assert (old.batching, old.evaluation) == (dm.batching, dm.evaluation)
    assert old.features.fill == "upfront" and old.negatives.file == "neg.tsv"
    assert old.predict_name == "queries_validation"
    assert grouped_hparams({"predict_target": "corpus"}) == {"predict": "corpus"}
    assert {group for group, _ in FLAT_KEYS.values()} == {
        "reading", "batching", "features", "evaluation", "negatives"
    }  # fmt: skip


def test_predict_encodes_the_corpus_or_a_splits_queries(collection_dir: Path, text_heads) -> None:
    corpus = RetrievalDataModule(str(collection_dir))
    queries = RetrievalDataModule(
        str(collection_dir), predict="queries", predict_split="validation"
    )
    for dm in (corpus, queries):
        dm.set_batch_inputs(batch_inputs(*text_heads))
    rows = [r for b in corpus.predict_dataloader() for r in b["doc_idx"].tolist()]
    assert sorted(rows) == list(range(len(corpus.collection.images)))
    texts = [r for b in queries.predict_dataloader() for r in b["query_idx"].tolist()]
    assert [queries.collection.texts.ids[r] for r in texts] == ["T2"]
    with pytest.raises(
        DataError, match=r"no 'dev' qrels \(has: \['test', 'train', 'validation'\]\)"
    ):
        RetrievalDataModule(str(collection_dir), predict="queries", predict_split="dev").query_rows(
            "dev"
        )

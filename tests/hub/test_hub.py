"""Exported heads: round trips, sentence-transformers as the oracle of the exported text
sides, public sparse checkpoints (written by sentence-transformers itself) as starting
points, the static query head and MarginMSE against hand-computed values."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import cast

import pytest
import torch

from lightning_mlsr.hub import load_encoder, save_encoder
from lightning_mlsr.hub.weight_files import save_masked_lm
from lightning_mlsr.io.pretrained import load_tokenizer, resolve_text_backbone
from lightning_mlsr.models import (
    FusedImageTextHead,
    ImageMLMHead,
    LateFusionHead,
    MLMHead,
    MLPHead,
    StaticQueryHead,
)
from lightning_mlsr.models.static import idf_weights
from lightning_mlsr.objectives.distillation import MarginMSE, margin_mse

TEXTS = ["a cat sitting on a red sofa", "two dogs, two dogs and a ball [SEP] on the grass"]
TINY_IMAGE = {"image_backbone": "test_efficientnet", "image_pretrained": False}


@functools.cache
def tokenizer():
    return load_tokenizer("splade-tiny")


def text_batch(texts: list[str] = TEXTS) -> dict[str, torch.Tensor]:
    tokens = tokenizer()(texts, return_tensors="pt", padding=True)
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {**text_batch(), "image_features": torch.rand(2, 256, generator=generator) * 2}


def perturbed(head: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every trainable weight moved off its initial value, as training would (so a folder
    that silently loaded the original backbone would fail the round trip)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.01)
    return head.eval()


def _heads() -> dict[str, torch.nn.Module]:
    return {
        "mlm": MLMHead(),
        "mlm-sum-nospecial": MLMHead(pooling="sum", exclude_special_tokens=True),
        "mlp": MLPHead(),
        "static": StaticQueryHead(),
        "image_mlm": ImageMLMHead(**TINY_IMAGE),
        "fused-mlp": FusedImageTextHead(**TINY_IMAGE),
        "late_fusion": LateFusionHead(MLPHead(), ImageMLMHead(**TINY_IMAGE)),
    }


@pytest.mark.parametrize("name", list(_heads()))
def test_every_exported_side_loads_back_with_the_same_vectors(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    head = perturbed(_heads()[name])
    manifest = save_encoder(head, tmp_path / name, max_length=32)
    loaded = load_encoder(tmp_path / name)
    assert type(loaded) is type(head)
    with torch.no_grad():
        before, after = head(batch()), loaded(batch())
    assert (before > 0).any(dim=1).all()
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert json.loads((tmp_path / name / "lightning_mlsr.json").read_text()) == manifest
    if head.reads().images and name != "late_fusion":
        assert manifest["image_backbone"]["name"] == "test_efficientnet"
        assert manifest["image_backbone"]["preprocessing"]["input_size"][0] == 3


def test_exported_mlm_side_is_a_sentence_transformers_model_with_identical_vectors(
    tmp_path: Path,
) -> None:
    """Every column, the special tokens' included: sentence-transformers does not zero them
    (MLMHead does), so the export must make them unable to activate."""
    from sentence_transformers import SparseEncoder

    from lightning_mlsr.models.transformer import mlm_head_parts

    special = tokenizer().all_special_ids
    torch.manual_seed(0)
    head = perturbed(MLMHead())
    _, decoder = mlm_head_parts(head.mlm_head)
    with torch.no_grad():
        decoder.bias[special] = 5.0  # every special term active before MLMHead zeroes it
    # the premise, on the oracle itself: without the export's silencing they activate there
    unsilenced = tmp_path / "unsilenced"
    save_masked_lm(head, unsilenced, silence=False)
    tokenizer().save_pretrained(unsilenced)
    raw = SparseEncoder(str(unsilenced), local_files_only=True)
    assert (raw.encode(TEXTS, convert_to_tensor=True).to_dense()[:, special] > 0).any(dim=1).all()
    save_encoder(head, tmp_path / "mlm")
    model = SparseEncoder(str(tmp_path / "mlm"), local_files_only=True)
    got = model.encode(TEXTS, convert_to_tensor=True).to_dense()
    with torch.no_grad():
        expected = head(text_batch())
    assert (got[:, special] == 0).all()
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # the bound holds for any LayerNorm input, not only these texts
    loaded = load_encoder(tmp_path / "mlm")
    assert isinstance(loaded, MLMHead) and loaded.mlm_head is not None
    hidden = torch.randn(4096, loaded.hidden_size) * 1000
    with torch.no_grad():
        logits = loaded.mlm_head(hidden)[:, special]
    assert (logits < 0).all()


def test_exported_static_side_is_a_sentence_transformers_static_embedding(tmp_path: Path) -> None:
    from sentence_transformers import SparseEncoder

    torch.manual_seed(0)
    head = perturbed(StaticQueryHead())
    with torch.no_grad():
        head.term_scorer[tokenizer().convert_tokens_to_ids("cat")] = -1.0  # relu: never active
    save_encoder(head, tmp_path / "static")
    model = SparseEncoder(str(tmp_path / "static"), local_files_only=True)
    got = model.encode(TEXTS, convert_to_tensor=True).to_dense()
    with torch.no_grad():
        expected = head(text_batch())
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["mlp", "image_mlm", "mlm-sum-nospecial", "late_fusion"])
def test_sentence_transformers_refuses_a_side_it_cannot_compute(name: str, tmp_path: Path) -> None:
    """Without the refusal, ``SparseEncoder(DIR)`` on an MLP side built a SPLADE model with an
    untrained MLM head from its config.json, silently."""
    from sentence_transformers import SparseEncoder

    folder = tmp_path / name
    manifest = save_encoder(_heads()[name], folder)
    assert manifest["sentence_transformers"] is None
    with pytest.raises(ValueError, match="LoadWithLightningMLSR"):
        SparseEncoder(str(folder), local_files_only=True)
    with pytest.raises(ValueError, match=r"lightning_mlsr encoder .* load_encoder\("):
        SparseEncoder(str(folder), local_files_only=True, trust_remote_code=True)
    assert type(load_encoder(folder)) is type(_heads()[name])  # lightning_mlsr still loads it


# --------------------------------------------------------------- public checkpoints


@functools.cache
def _st_folders(root: str) -> tuple[Path, Path, torch.Tensor]:
    """A SPLADE and an inference-free SparseEncoder, saved by sentence-transformers from
    SPLADE-tiny (decoder bias and static weights random, so nothing matches by chance)."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Router, Transformer
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding, SpladePooling

    path = resolve_text_backbone("splade-tiny")
    torch.manual_seed(1)

    def splade_modules() -> list[torch.nn.Module]:
        mlm = Transformer(path, transformer_task="fill-mask")
        with torch.no_grad():
            for p in mlm.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        return [mlm, SpladePooling("max")]

    splade = Path(root) / "splade"
    SparseEncoder(modules=splade_modules()).save(str(splade))
    weight = torch.rand(len(tokenizer())) * 3
    router = Router.for_query_document(
        query_modules=[SparseStaticEmbedding(tokenizer(), weight=weight.clone())],
        document_modules=splade_modules(),
    )
    inference_free = Path(root) / "inference_free"
    SparseEncoder(modules=[router]).save(str(inference_free))
    return splade, inference_free, weight


@pytest.fixture(scope="module")
def st_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, torch.Tensor]:
    return _st_folders(str(tmp_path_factory.mktemp("st")))


def _non_special(x: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(x.shape[1], dtype=torch.bool)
    keep[tokenizer().all_special_ids] = False
    return x[:, keep]


def test_an_mlm_head_starts_from_a_sentence_transformers_splade_folder(st_folders) -> None:
    from sentence_transformers import SparseEncoder

    splade, inference_free, _ = st_folders
    for folder, encode in ((splade, "encode"), (inference_free, "encode_document")):
        model = SparseEncoder(str(folder), local_files_only=True)
        expected = getattr(model, encode)(TEXTS, convert_to_tensor=True).to_dense()
        head = MLMHead(backbone=str(folder)).eval()
        with torch.no_grad():
            got = head(text_batch())
        # MLMHead zeroes the special terms; every other column is the checkpoint's
        assert (got[:, tokenizer().all_special_ids] == 0).all()
        torch.testing.assert_close(_non_special(got), _non_special(expected), rtol=0, atol=1e-6)


def test_a_static_head_starts_from_an_inference_free_folder(st_folders) -> None:
    from sentence_transformers import SparseEncoder

    _, inference_free, weight = st_folders
    head = StaticQueryHead(backbone=str(inference_free), checkpoint=str(inference_free))
    torch.testing.assert_close(head.term_scorer.detach(), weight, rtol=0, atol=0)
    model = SparseEncoder(str(inference_free), local_files_only=True)
    expected = model.encode_query(TEXTS, convert_to_tensor=True).to_dense()
    with torch.no_grad():
        got = head(text_batch())
    torch.testing.assert_close(_non_special(got), _non_special(expected), rtol=0, atol=0)


def test_a_folder_that_is_not_a_sparse_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text("[]")
    with pytest.raises(ValueError, match="0 masked-LM modules"):
        MLMHead(backbone=str(tmp_path))
    with pytest.raises(ValueError, match="0 SparseStaticEmbedding"):
        StaticQueryHead(checkpoint=str(tmp_path))
    with pytest.raises(ValueError, match="lightning_mlsr.json"):
        load_encoder(tmp_path)


# --------------------------------------------------------------- static head, by hand


def test_static_head_weights_each_distinct_input_term_once() -> None:
    head = StaticQueryHead()
    ids = {w: tokenizer().convert_tokens_to_ids(w) for w in ("two", "dogs", "ball", "cat")}
    with torch.no_grad():
        head.term_scorer.fill_(0.0)
        head.term_scorer[ids["two"]] = 0.5
        head.term_scorer[ids["dogs"]] = 2.0
        head.term_scorer[ids["ball"]] = -3.0  # relu: 0
        head.term_scorer[tokenizer().sep_token_id] = 7.0  # a special token: never a term
        head.term_scorer[tokenizer().pad_token_id] = 7.0
    inputs = text_batch(["two dogs two dogs ball [SEP]", "cat"])
    out = head(inputs)
    expected = torch.zeros(2, head.vocab_size)
    expected[0, ids["two"]] = 0.5  # twice in the text, counted once
    expected[0, ids["dogs"]] = 2.0
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    out.sum().backward()
    grad = head.term_scorer.grad
    assert grad is not None
    assert grad[ids["two"]] == 1 and grad[ids["dogs"]] == 1 and grad[ids["ball"]] == 0


def test_idf_weights_by_hand() -> None:
    texts = ["cat cat dog", "dog", "bird dog"]
    idf = idf_weights(texts, tokenizer(), len(tokenizer()))

    def expected(df: int) -> float:
        return math.log(1 + (3 - df + 0.5) / (df + 0.5))

    for word, df in (("cat", 1), ("dog", 3), ("bird", 1), ("fish", 0)):
        assert idf[tokenizer().convert_tokens_to_ids(word)].item() == pytest.approx(expected(df))


def test_static_head_starts_from_idf_of_the_bundled_captions() -> None:
    from lightning_mlsr.data.collection.load import load_collection

    head = StaticQueryHead(init="idf")
    assert head.wants_idf_start and bool((head.term_scorer == 1).all())
    captions = load_collection("emoji").images.captions()
    head.start_from_idf(captions)
    assert not head.wants_idf_start
    n = len(captions)
    word = "face"
    df = sum(word in tokenizer().tokenize(c) for c in captions)
    assert 0 < df < n
    value = head.term_scorer[tokenizer().convert_tokens_to_ids(word)].item()
    assert value == pytest.approx(math.log(1 + (n - df + 0.5) / (df + 0.5)), rel=1e-6)


def test_the_module_starts_a_static_table_from_the_training_captions_unless_weights_load() -> None:
    """SparseBiEncoder.setup("fit") hands the DataModule's captions to a static query table
    that waits for its IDF start; weights read into a table (a checkpoint, a folder) cancel it."""
    from types import SimpleNamespace

    from lightning_mlsr.data.datamodule import RetrievalDataModule
    from lightning_mlsr.models import MLPHead
    from lightning_mlsr.models.static import idf_weights
    from lightning_mlsr.training.system.module import SparseBiEncoder

    datamodule = RetrievalDataModule()
    model = SparseBiEncoder(StaticQueryHead(init="idf"), MLPHead())
    model._trainer = SimpleNamespace(datamodule=datamodule)  # type: ignore[assignment]
    model.setup("validate")  # only a fit starts the table
    assert cast(StaticQueryHead, model.query_encoder).wants_idf_start
    model.setup("fit")
    captions = datamodule.collection.images.captions()
    expected = idf_weights(captions, tokenizer(), len(tokenizer()))
    torch.testing.assert_close(model.query_encoder.term_scorer.detach(), expected)
    loaded = StaticQueryHead(init="idf")
    loaded.load_state_dict(model.query_encoder.state_dict())
    assert not loaded.wants_idf_start


# --------------------------------------------------------------- MarginMSE, by hand


def test_margin_mse_by_hand() -> None:
    # B = 2 queries, n = 1 negative each: columns [pos0, pos1, neg0, neg1]
    student = torch.tensor([[5.0, 1.0, 3.0, 9.0], [0.0, 4.0, 8.0, 1.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.5, 0.0], [0.0, 1.0, 0.0, 3.0]])
    # margins: q0 student 5-3=2, teacher 2-1.5=0.5; q1 student 4-1=3, teacher 1-3=-2
    assert margin_mse(student, teacher, 1).item() == pytest.approx(((2 - 0.5) ** 2 + 5**2) / 2)
    drop = torch.zeros(2, 4, dtype=torch.bool)
    drop[1, 3] = True  # q1's negative is also relevant: left out
    assert margin_mse(student, teacher, 1, drop).item() == pytest.approx(1.5**2)


def test_margin_mse_with_two_negatives_per_query_by_hand() -> None:
    # B = 1, n = 2: columns [pos, neg_a, neg_b]
    student = torch.tensor([[4.0, 1.0, 2.0]])
    teacher = torch.tensor([[1.0, 0.0, 1.0]])
    assert margin_mse(student, teacher, 2).item() == pytest.approx(
        ((3 - 1) ** 2 + (2 - 0) ** 2) / 2
    )


def test_margin_mse_module_scores_with_the_teacher_and_weights_the_loss() -> None:
    q_emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # the teacher's embeddings
    d_emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.0], [0.0, 0.25]])
    teacher = q_emb @ d_emb.T  # (2, 4) the teacher's scores
    loss = MarginMSE(weight=2.0, teacher_temperature=0.5)
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # student vectors (V = 2)
    d = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    value = loss(q, d, teacher)
    # teacher scores / 0.5: q0 pos 2, neg0 1 -> margin 1; q1 pos 2, neg1 0.5 -> 1.5
    # student: q0 pos 3, neg0 1 -> 2; q1 pos 2, neg1 2 -> 0
    assert value.item() == pytest.approx(2.0 * ((2 - 1) ** 2 + (0 - 1.5) ** 2) / 2)
    # no hard negatives (validation batches): the other query's positive is the negative
    # teacher: q0 2 - 0 = 2, q1 2 - 0 = 2; student: q0 3 - 0 = 3, q1 2 - 0 = 2
    value = loss(q, d[:2], teacher[:, :2])
    assert value.item() == pytest.approx(2.0 * ((3 - 2) ** 2 + 0**2) / 2)
    with pytest.raises(ValueError, match="same number of hard negatives"):
        loss(q, d[:3], teacher[:, :3])


def test_in_batch_margin_mse_by_hand() -> None:
    student = torch.tensor([[4.0, 1.0, 0.0], [2.0, 2.0, 1.0], [0.0, 0.0, 3.0]])
    teacher = torch.zeros(3, 3)
    # margins s_ii - s_ij: q0 3, 4; q1 0, 1; q2 3, 3
    assert margin_mse(student, teacher, 0).item() == pytest.approx((9 + 16 + 0 + 1 + 9 + 9) / 6)


def test_export_refuses_a_folder_that_holds_files(tmp_path: Path) -> None:
    (tmp_path / "side").mkdir()
    (tmp_path / "side" / "lightning_mlsr_head.safetensors").write_bytes(b"stale")
    with pytest.raises(ValueError, match="not empty"):
        save_encoder(StaticQueryHead(), tmp_path / "side")

"""Every experiment config trains through the CLI (fast_dev_run), as a user would run it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import yaml

from lightning_mlsr.retrieval.metrics import evaluate
from lightning_mlsr.training.callbacks.split_encoding import encode_split
from lightning_mlsr.training.cli import main
from tests.helpers import brute_force_run, dense_teacher_checkpoint

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
#: every experiment: parts/ holds the blocks they include, atomic/ needs the network
EXPERIMENTS = sorted(
    p
    for p in EXPERIMENTS_DIR.rglob("*.yaml")
    if p.relative_to(EXPERIMENTS_DIR).parts[0] not in ("parts", "atomic")
)
IDS = [p.relative_to(EXPERIMENTS_DIR).with_suffix("").as_posix() for p in EXPERIMENTS]


def config_text(config: Path) -> str:
    """The experiment file with the text of every file it includes (``../parts/...yaml``,
    or a whole experiment with ``config: ../paper/...yaml``)."""
    text = config.read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())  # not comments
    for included in re.findall(r"[\w./-]+\.yaml", code):
        part = (config.parent / included).resolve()
        if part.is_file() and EXPERIMENTS_DIR in part.parents:
            text += config_text(part)
    return text


def _reads_stamps(config: Path) -> bool:
    """Whether the experiment trains on the stamps collection, which is built on the machine
    from a Debian package (the ``stamps_collection`` fixture builds it or skips)."""
    return "collection: stamps" in config_text(config)


def _reads_images(config: Path) -> bool:
    text = config_text(config)
    return any(name in text for name in ("ImageMLMHead", "FusedImageTextHead", "DenseImageHead"))


def fast_args(
    config: Path, tmp_path: Path, inputs: Path | None = None, stamps: Path | None = None
) -> list[str]:
    """CLI overrides that keep a smoke run small without changing what is trained.

    One corpus batch and one query batch of 64 are evaluated (``fast_dev_run``). Teacher-
    built inputs (pseudo-query collections, hard negatives) go under ``inputs``, where the
    configs that need the same one share it (default: ``tmp_path``, built afresh). ``stamps``
    is where this session built the stamps collection, for the configs that read it.
    """
    args = [
        "--config",
        str(config),
        "--trainer.fast_dev_run=1",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--data.batching.batch_size=8",
        "--data.batching.eval_batch_size=64",
    ]
    inputs = tmp_path if inputs is None else inputs
    text = config_text(config)
    if "outputs/pseudo/" in text:  # its collection is labelled by a teacher
        expand = "-docexp" in text  # captions expanded with the pseudo-queries
        built = inputs / ("expanded" if expand else "plain")
        args += _pseudo_query_collection(built, expand=expand)
        if "hard_negatives-depth" in text:  # mined by a teacher for its collection
            args += _hard_negatives(built / "pseudo", built / "negatives.tsv")
    elif "hard_negatives-depth" in text:
        args += _hard_negatives(tmp_path / "pseudo", tmp_path / "negatives.tsv")
    if stamps is not None:
        args.append(f"--data.collection={stamps}")
    if _reads_images(config):
        # 64 px instead of 224: the frozen-feature cache fills in seconds, not minutes
        args.append("--model.doc_encoder.init_args.image_size=64")
    return args


def _pseudo_query_collection(tmp_path: Path, expand: bool = False) -> list[str]:
    """A small pseudo-query collection (three words, MiniLM as shipped as the teacher) and
    the options that train on it, for experiments whose collection a teacher builds."""
    from lightning_mlsr.generate.pseudo_queries import build_pseudo_query_collection

    teacher, out = tmp_path / "teacher.pt", tmp_path / "pseudo"
    if (tmp_path / "built").is_file():  # built for an earlier config of this session
        return [f"--data.collection={out}", f"--model.teacher.init_args.checkpoint={teacher}"]
    tmp_path.mkdir(parents=True, exist_ok=True)
    dense_teacher_checkpoint(teacher)
    build_pseudo_query_collection(
        "emoji",
        out,
        teacher,
        words=["pilot", "sandwich", "tractor"],
        min_score=0.0,
        expand_captions=int(expand),
    )
    (tmp_path / "built").write_text("")
    return [f"--data.collection={out}", f"--model.teacher.init_args.checkpoint={teacher}"]


def _hard_negatives(collection: Path, out: Path) -> list[str]:
    """Five random images per training query of ``collection`` (a smoke test of the
    experiment; mining itself is tested in test_negatives.py)."""
    from lightning_mlsr.baselines.common import split_texts
    from lightning_mlsr.data import load_collection

    c = load_collection(collection)
    ids, _ = split_texts(c, "train")
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(c.images), (len(ids), 5))
    out.write_text(
        "".join(
            "\t".join([q, *(c.images.ids[int(j)] for j in row)]) + "\n"
            for q, row in zip(ids, picks)
        ),
        "utf-8",
    )
    return [f"--data.negatives.file={out}"]


def test_every_experiment_is_found() -> None:
    assert {
        "paper/m1_mlm_mlm_image",
        "paper/m2_mlp_mlm_caption",
        "paper/m3_mlp_mlp_caption",
        "paper/m4_mlp_mlp_image_caption",
        "paper/mlp_mlm_image",
        "baselines/dense_caption",
        "distillation/kl_mlm_query",
        "inference_free/static_mlm_caption",
        "stamps/m1_mlm_mlm_image",
        "stamps/m2_mlp_mlm_caption",
        "stamps/dense_image",
        "stamps/minilm_m1_mlm_mlm_image",
        "stamps/minilm_m1_mlm_mlm_image_scaled",
        "minilm/m2_mlp_mlm_caption",
        "minilm/d2s_caption",
        "minilm/kl_mlm_query_scaled",
        "minilm/m1_mlm_mlm_image_scaled",
        "minilm/d2s_caption_scaled",
    } <= set(IDS)
    assert len(IDS) == 46 and not any(i.startswith(("parts/", "atomic/")) for i in IDS)


@pytest.fixture(scope="module")
def teacher_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the pseudo-query experiments share their teacher-built collections."""
    return tmp_path_factory.mktemp("teacher_inputs")


@pytest.mark.parametrize("config", EXPERIMENTS, ids=IDS)
def test_experiment_fast_dev_run(
    config: Path, tmp_path: Path, teacher_inputs: Path, request: pytest.FixtureRequest
) -> None:
    stamps = request.getfixturevalue("stamps_collection") if _reads_stamps(config) else None
    cli = main(["fit", *fast_args(config, tmp_path, teacher_inputs, stamps)])
    trainer = cli.trainer
    assert trainer.state.finished
    assert trainer.global_step == 1
    metrics = trainer.callback_metrics
    expected = ["train/loss", "train/rank_loss", "val/nDCG@10", "val/R@1000"]
    if not config.stem.startswith("dense_"):
        expected.append("val/q_nnz")  # sparsity is reported for sparse models
    for name in expected:
        assert name in metrics, f"{name} not logged by {config.name}"
    assert torch_isfinite(metrics["train/loss"])
    # the logged retrieval figures are those of the full score matrix (no index, no faiss)
    # fast_dev_run=1: one corpus batch and one query batch, scored over those queries;
    # encoded again by the evaluator's own function (the model is as it was evaluated)
    encoded = encode_split(cli.model, cli.datamodule, "validation", trainer, limit=1)
    dm, batch = cli.datamodule, cli.datamodule.batching.eval_batch_size
    n_docs, n_queries = len(dm.corpus_rows("validation")), len(dm.query_rows("validation"))
    assert len(encoded.doc_ids) == metrics["val/eval_docs"] == min(batch, n_docs)
    assert len(encoded.query_ids) == metrics["val/eval_queries"] == min(batch, n_queries)
    brute = brute_force_run(encoded, 1000, dense=config.stem.startswith("dense_"))  # base k
    qrels = cli.datamodule.qrels("validation")
    qrels = {q: qrels[q] for q in encoded.query_ids}
    expected = evaluate(brute, qrels, ("nDCG@10", "R@1000"))
    for name, value in expected.items():
        assert float(metrics[f"val/{name}"]) == pytest.approx(value, abs=1e-6), name
    # ... and the evaluated vectors are the model's: a few documents encoded directly
    _assert_encoded_like_the_model(cli, encoded)


def _assert_encoded_like_the_model(cli: Any, encoded: Any, n: int = 4) -> None:
    images = cli.datamodule.collection.images
    rows = [images.index(doc_id) for doc_id in encoded.doc_ids[:n]]
    model = cli.model.eval()
    with torch.no_grad():
        direct = model.encode_docs(cli.datamodule.collator.doc_batch(rows)["doc"]).float()
    got = encoded.docs[:n]
    got = got.toarray() if sp.issparse(got) else got
    np.testing.assert_allclose(got, direct.numpy(), rtol=1e-4, atol=1e-5)


def torch_isfinite(value) -> bool:
    return bool(torch.isfinite(torch.as_tensor(value)).all())


def test_print_config_composes_base_and_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    config = EXPERIMENTS_DIR / "paper" / "m2_mlp_mlm_caption.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    # from base.yaml
    assert printed["data"]["collection"] == "emoji"
    assert printed["model"]["doc_regularizer"]["class_path"].endswith("FLOPS")
    # from the experiment file
    assert printed["model"]["query_encoder"]["class_path"].endswith("MLPHead")
    assert printed["model"]["doc_encoder"]["class_path"].endswith("MLMHead")


def test_shared_blocks_are_parts_included_not_copied() -> None:
    """The teacher and the distillation losses are written once, under parts/, and every
    part is included by some experiment."""
    for config in EXPERIMENTS:
        text = config.read_text()
        assert "DenseTeacher" not in text and "objectives.distillation" not in text, config
    included = {
        (config.parent / name).resolve()
        for config in EXPERIMENTS_DIR.rglob("*.yaml")
        for name in re.findall(r"[\w./-]+\.yaml", config.read_text())
    }
    parts = set((EXPERIMENTS_DIR / "parts").rglob("*.yaml"))
    assert parts and parts <= included, sorted(str(p) for p in parts - included)


def test_unknown_config_key_is_a_clear_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model:\n  query_encoder:\n    class_path: lightning_mlsr.models.MLPHead\n"
        "    init_args:\n      poolling: sum\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(bad)])
    assert exit_info.value.code != 0
    assert "poolling" in capsys.readouterr().err

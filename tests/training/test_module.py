"""The LightningModule through a real Trainer: checkpoint rebuild, resume, precision, W&B runs."""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_mlsr.data.datamodule import RetrievalDataModule
from lightning_mlsr.data.settings import BatchingSettings
from lightning_mlsr.models import MLMHead, MLPHead
from lightning_mlsr.objectives.distillation import KLDistillation
from lightning_mlsr.objectives.ranking import InfoNCE
from lightning_mlsr.objectives.regularizers import FLOPS, L1
from lightning_mlsr.retrieval.metrics import evaluate
from lightning_mlsr.training.callbacks.split_encoding import encode_split
from lightning_mlsr.training.cli import main
from lightning_mlsr.training.system.module import SparseBiEncoder
from lightning_mlsr.training.system.optimization import Optimization, lr_schedule
from tests.helpers import brute_force_run, dense_teacher_checkpoint, quiet_trainer

REPO = Path(__file__).resolve().parents[2]

NON_DEFAULT = """
model:
  query_encoder:
    class_path: lightning_mlsr.models.MLMHead
    init_args:
      pooling: sum
  doc_encoder:
    class_path: lightning_mlsr.models.MLPHead
    init_args:
      pooling: max
  loss:
    class_path: lightning_mlsr.objectives.ranking.InfoNCE
    init_args:
      temperature: 0.5
  query_regularizer: null
  doc_regularizer:
    class_path: lightning_mlsr.objectives.regularizers.L1
    init_args:
      weight: 0.05
      ramp_steps: 3
      ramp_ratio: null
  share_text_backbone: true
"""


def _fit_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.logger=false",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--data.batching.batch_size=8",
        "--test_after_fit=false",
        *extra,
    ]


def test_load_from_checkpoint_rebuilds_a_non_default_configuration(tmp_path: Path) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text(NON_DEFAULT)
    cli = main(["fit", "--config", str(config), *_fit_args(tmp_path)])
    ckpt = tmp_path / "model.ckpt"
    cli.trainer.save_checkpoint(ckpt)

    restored = SparseBiEncoder.load_from_checkpoint(ckpt, map_location="cpu")
    assert isinstance(restored.query_encoder, MLMHead)
    assert restored.query_encoder.pooling == "sum"
    assert isinstance(restored.doc_encoder, MLPHead)
    assert restored.doc_encoder.pooling == "max"
    assert isinstance(restored.doc_regularizer, L1)
    assert restored.doc_regularizer.weight == pytest.approx(0.05)
    assert restored.doc_regularizer.ramp_steps == 3
    assert restored.query_regularizer is None
    assert restored.loss.temperature == pytest.approx(0.5)
    # the shared backbone is shared again after the rebuild
    assert restored.doc_encoder.text_model is restored.query_encoder.text_model

    trained = cli.model.eval()
    restored.eval()
    for name, tensor in trained.state_dict().items():
        assert torch.equal(tensor, restored.state_dict()[name]), name
    batch = cli.datamodule.collator.query_batch([0, 1, 2])
    with torch.no_grad():
        expected = trained.encode_queries(batch["query"])
        got = restored.encode_queries(batch["query"])
    torch.testing.assert_close(got, expected)


@pytest.mark.slow  # three fits and four rebuilds of kl_mlp_query with its MiniLM teacher
def test_distilled_checkpoints_leave_the_frozen_teacher_out_and_load_it_back(
    tmp_path: Path,
) -> None:
    teacher = dense_teacher_checkpoint(tmp_path / "teacher.pt")
    config = str(REPO / "experiments" / "distillation" / "kl_mlp_query.yaml")
    args = [
        *_fit_args(tmp_path, "--trainer.limit_val_batches=0"),
        f"--model.teacher.init_args.checkpoint={teacher}",
    ]
    cli = main(["fit", "--config", config, *args])
    trained = cli.model.eval()
    ckpt = tmp_path / "model.ckpt"
    cli.trainer.save_checkpoint(ckpt)

    raw = torch.load(ckpt, map_location="cpu", weights_only=False)
    kept = set(raw["state_dict"])
    teacher_keys = {k for k in trained.state_dict() if k.startswith("teacher.")}
    assert teacher_keys and not teacher_keys & kept
    assert kept == set(trained.state_dict()) - teacher_keys  # every student weight is kept
    assert raw["distillation_teacher_sha256"] == trained.teacher.fingerprint()

    # rebuilt from the hyperparameters: the student as saved, the teacher from teacher.pt
    # (whose document side differs from MiniLM as shipped and from its query side)
    restored = SparseBiEncoder.load_from_checkpoint(ckpt, map_location="cpu")
    for name, tensor in trained.state_dict().items():
        assert torch.equal(tensor, restored.state_dict()[name]), name
    shipped = torch.load(teacher, weights_only=False)["state_dict"]
    for key, value in shipped.items():
        assert torch.equal(restored.state_dict()[f"teacher.{key}"], value), key

    resumed = main(
        ["fit", "--config", config, *args, "--trainer.max_steps=3", f"--ckpt_path={ckpt}"]
    )
    assert resumed.trainer.global_step == 3

    # the teacher file changes under the run: resuming stops, loading warns
    perturbed = next(k for k in shipped if k.startswith("doc_encoder.") and k.endswith("weight"))
    torch.save({"state_dict": {**shipped, perturbed: shipped[perturbed] + 0.5}}, teacher)
    with pytest.raises(ValueError, match=r"cannot resume: the distillation teacher built from"):
        main(["fit", "--config", config, *args, "--trainer.max_steps=4", f"--ckpt_path={ckpt}"])
    with pytest.warns(UserWarning, match="not the one this checkpoint was trained with"):
        student = SparseBiEncoder.load_from_checkpoint(ckpt, map_location="cpu")
    for name, tensor in trained.state_dict().items():
        if not name.startswith("teacher."):
            assert torch.equal(tensor, student.state_dict()[name]), name

    # a checkpoint saved with its teacher's weights loads them, also where a module whose
    # distillation loss held the teacher kept them (distillation.{query,doc}_teacher.*)
    inside_the_loss = {
        k.replace("teacher.query_encoder.", "distillation.query_teacher.").replace(
            "teacher.doc_encoder.", "distillation.doc_teacher."
        ): trained.state_dict()[k]
        for k in teacher_keys
    }
    raw["state_dict"].update(inside_the_loss)
    del raw["distillation_teacher_sha256"]
    torch.save(raw, ckpt)
    old = SparseBiEncoder.load_from_checkpoint(ckpt, map_location="cpu")
    assert torch.equal(old.state_dict()[f"teacher.{perturbed}"], shipped[perturbed])


class _LambdaRecorder(L.Callback):
    """Records (global_step, logged doc lambda) after every training micro-batch."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []
        self.optimizer_state_at_start: dict | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.optimizer_state_at_start = copy.deepcopy(trainer.optimizers[0].state_dict())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.append((self._step, float(trainer.callback_metrics["train/d_reg_weight"])))


def _small_model() -> SparseBiEncoder:
    torch.manual_seed(0)
    return SparseBiEncoder(
        MLPHead(pooling="sum"),
        MLPHead(pooling="max"),
        loss=InfoNCE(),
        doc_regularizer=FLOPS(weight=2.0, ramp_steps=4),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )


def _trainer(max_steps: int, recorder: _LambdaRecorder, root: Path) -> L.Trainer:
    return quiet_trainer(
        root,
        [recorder],
        max_steps=max_steps,
        accumulate_grad_batches=2,
        limit_val_batches=0,
        enable_checkpointing=False,
        log_every_n_steps=1,  # the recorder reads the logged lambda at every micro-batch
    )


def test_lambda_follows_optimizer_steps_and_survives_resume(tmp_path: Path) -> None:
    first = _LambdaRecorder()
    trainer = _trainer(3, first, tmp_path)
    trainer.fit(_small_model(), RetrievalDataModule(batching=BatchingSettings(batch_size=4)))
    ckpt = tmp_path / "step3.ckpt"
    trainer.save_checkpoint(ckpt)

    # gradient accumulation: two micro-batches per optimizer step share one lambda,
    # lambda = 2.0 * min(1, step / 4) ** 2
    expected = [(s, 2.0 * min(1.0, s / 4) ** 2) for s in (0, 0, 1, 1, 2, 2)]
    assert [s for s, _ in first.seen] == [s for s, _ in expected]
    assert [lam for _, lam in first.seen] == pytest.approx([lam for _, lam in expected])

    resumed = _LambdaRecorder()
    trainer2 = _trainer(5, resumed, tmp_path)
    trainer2.fit(
        _small_model(),
        RetrievalDataModule(batching=BatchingSettings(batch_size=4)),
        ckpt_path=str(ckpt),
    )
    assert trainer2.global_step == 5
    assert [s for s, _ in resumed.seen] == [3, 3, 4, 4]
    assert [lam for _, lam in resumed.seen] == pytest.approx([2.0 * 9 / 16] * 2 + [2.0] * 2)

    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["optimizer_states"][0]
    restored = resumed.optimizer_state_at_start
    assert restored is not None
    assert saved["state"].keys() == restored["state"].keys()
    for key, state in saved["state"].items():
        assert int(state["step"]) == int(restored["state"][key]["step"]) == 3
        torch.testing.assert_close(state["exp_avg"], restored["state"][key]["exp_avg"])


class _LogRecorder(SparseBiEncoder):
    """Records what each ``self.log``/``log_dict`` of a training step hands to Lightning."""

    logged: list[tuple[str, object]]

    def log(self, name: str, value, *args, **kwargs) -> None:  # type: ignore[override]
        if self.trainer.training:
            self.logged.append((name, value))
        super().log(name, value, *args, **kwargs)


def test_training_step_logs_only_tensors_made_on_the_module_device(tmp_path: Path) -> None:
    """A Python number or a CPU tensor logged from the GPU would be copied to the device by
    Lightning: a blocking copy in the middle of every step (bench/README.md, GPU)."""
    torch.manual_seed(0)
    model = _LogRecorder(
        MLPHead(pooling="sum"),
        MLPHead(pooling="max"),
        loss=InfoNCE(),
        query_regularizer=FLOPS(weight=1.0, ramp_steps=2),
        doc_regularizer=FLOPS(weight=2.0, ramp_steps=4),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
        optimization=Optimization(param_groups={"new": {"lr": 1e-3}, "pretrained": {"lr": 5e-5}}),
    )
    model.logged = []
    trainer = quiet_trainer(
        tmp_path, [], max_steps=2, limit_val_batches=0, enable_checkpointing=False,
        log_every_n_steps=1,
    )  # fmt: skip
    trainer.fit(model, RetrievalDataModule(batching=BatchingSettings(batch_size=4)))
    names = {name for name, _ in model.logged}
    assert {"train/q_reg_weight", "train/d_reg_weight", "train/lr", "train/lr_pretrained"} <= names
    for name, value in model.logged:
        assert isinstance(value, torch.Tensor), (name, type(value))
        assert value.device == model.device, name


def test_bf16_mixed_fit_on_cpu(tmp_path: Path) -> None:
    config = REPO / "experiments" / "paper" / "m2_mlp_mlm_caption.yaml"
    cli = main(
        [
            "fit",
            "--config",
            str(config),
            "--trainer.precision=bf16-mixed",
            "--trainer.fast_dev_run=1",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--data.batching.batch_size=8",
        ]
    )
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.precision == "bf16-mixed"
    assert torch.isfinite(metrics["train/loss"])
    # the bf16 evaluation's logged figure is that of its own vectors, scored exhaustively
    # the vectors it evaluated: fast_dev_run's one batch per side, under bf16 autocast
    encoded = encode_split(cli.model, cli.datamodule, "validation", cli.trainer, limit=1)
    brute = brute_force_run(encoded, 1000, dense=False)
    qrels = cli.datamodule.qrels("validation")  # fast_dev_run: over the queries it encoded
    qrels = {q: qrels[q] for q in encoded.query_ids}
    expected = evaluate(brute, qrels, ("nDCG@10",))["nDCG@10"]
    assert float(metrics["val/nDCG@10"]) == pytest.approx(expected, abs=1e-6)
    # parameters stay fp32 (mixed precision), only the compute is bf16
    assert next(cli.model.parameters()).dtype == torch.float32


def test_two_wandb_runs_in_one_directory_do_not_collide(tmp_path: Path) -> None:
    config = REPO / "experiments" / "paper" / "m3_mlp_mlp_caption.yaml"
    args = [
        "fit",
        "--config",
        str(config),
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.max_steps=1",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--data.batching.batch_size=8",
        "--test_after_fit=false",
    ]
    first = main(args)
    second = main(args)
    configs = sorted((tmp_path / "lightning_mlsr").glob("*/config.yaml"))
    assert len(configs) == 2, configs
    assert first.trainer.logger.version != second.trainer.logger.version
    for path in configs:
        assert "MLPHead" in path.read_text()


def test_wandb_run_gets_sample_terms_table_and_nnz_histograms(tmp_path: Path) -> None:
    config = REPO / "experiments" / "paper" / "m2_mlp_mlm_caption.yaml"
    cli = main(
        [
            "validate",
            "--config",
            str(config),
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
        ]
    )
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    tables = list(run_dir.rglob("val/sample_terms*.table.json"))
    assert tables, sorted(p.name for p in run_dir.rglob("*"))
    import json

    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["image_id", "image", "caption", "nnz", "top_terms"]
    assert len(table["data"]) == 16
    assert all(row[4] for row in table["data"])  # every sample image shows some terms
    assert cli.trainer.callback_metrics["val/d_nnz"] > 0


# ---------------------------------------------------------------- issue 12


class _OptimizerRecorder(L.Callback):
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.groups = [
            {k: v for k, v in g.items() if k != "params"} | {"n": len(g["params"])}
            for g in trainer.optimizers[0].param_groups
        ]
        self.ids = [{id(p) for p in g["params"]} for g in trainer.optimizers[0].param_groups]


def test_parameter_groups_receive_their_configured_learning_rates(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SparseBiEncoder(
        MLPHead(),
        MLMHead(),
        optimizer=partial(torch.optim.AdamW, lr=1e-4, weight_decay=0.3),
        optimization=Optimization(
            param_groups={"new": {"lr": 1e-3, "weight_decay": 0.0}, "pretrained": {"lr": 5e-5}}
        ),
    )
    recorder = _OptimizerRecorder()
    trainer = quiet_trainer(
        tmp_path, [recorder], max_steps=1, limit_val_batches=0, enable_checkpointing=False
    )
    trainer.fit(model, RetrievalDataModule(batching=BatchingSettings(batch_size=4)))
    new, pretrained = recorder.groups
    assert (new["name"], new["initial_lr"], new["weight_decay"]) == ("new", 1e-3, 0.0)
    assert (pretrained["name"], pretrained["initial_lr"]) == ("pretrained", 5e-5)
    assert pretrained["weight_decay"] == 0.3  # not configured: the optimizer's
    assert recorder.ids[0] == {id(p) for p in model.query_encoder.term_scorer.parameters()}
    every = {id(p) for p in model.parameters() if p.requires_grad}
    assert recorder.ids[0] | recorder.ids[1] == every and not recorder.ids[0] & recorder.ids[1]


def test_image_projection_is_new_and_frozen_layers_get_no_group() -> None:
    from lightning_mlsr.models import ImageMLMHead

    torch.manual_seed(0)
    doc = ImageMLMHead(image_backbone="test_efficientnet", image_pretrained=False)
    model = SparseBiEncoder(
        MLPHead(), doc, optimization=Optimization(param_groups={"new": {"lr": 1e-3}})
    )
    new, pretrained = model.optimizer_parameters()
    assert new["lr"] == 1e-3 and "lr" not in pretrained
    new_ids = {id(p) for p in new["params"]}
    assert new_ids == {id(p) for p in [*doc.image_projection.parameters()]} | {
        id(p) for p in model.query_encoder.term_scorer.parameters()
    }
    frozen = {id(p) for p in doc.image_backbone.parameters()}
    frozen.add(id(doc.mlm_head.predictions.transform.dense.weight))  # skipped by the wiring
    assert not frozen & {id(p) for p in pretrained["params"]}
    with pytest.raises(ValueError, match="unknown group"):
        SparseBiEncoder(
            MLPHead(), MLPHead(), optimization=Optimization(param_groups={"backbone": {"lr": 1.0}})
        )


def test_a_teacher_without_a_distillation_loss_or_the_reverse_is_refused() -> None:
    from lightning_mlsr.models.dense import DenseTextHead
    from lightning_mlsr.models.teacher import DenseTeacher

    with pytest.raises(ValueError, match=r"model\.teacher is not set"):
        SparseBiEncoder(MLPHead(), MLPHead(), distillation=KLDistillation())
    teacher = DenseTeacher(DenseTextHead("splade-tiny"))
    with pytest.raises(ValueError, match=r"model\.distillation is not set"):
        SparseBiEncoder(MLPHead(), MLPHead(), teacher=teacher)
    model = SparseBiEncoder(MLPHead(), MLPHead(), teacher=teacher, distillation=KLDistillation())
    assert model.teacher is teacher and not teacher.training  # frozen in a training module
    assert not {id(p) for p in teacher.parameters()} & {id(p) for p in model.optimizer_parameters()}


def test_regularizer_ramp_ratio_counts_total_optimizer_steps(tmp_path: Path) -> None:
    recorder = _LambdaRecorder()
    torch.manual_seed(0)
    model = SparseBiEncoder(
        MLPHead(),
        MLPHead(pooling="max"),
        doc_regularizer=FLOPS(weight=2.0, ramp_ratio=0.5),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )
    trainer = _trainer(4, recorder, tmp_path)  # 4 optimizer steps, 2 micro-batches each
    trainer.fit(model, RetrievalDataModule(batching=BatchingSettings(batch_size=4)))
    # T = 0.5 * 4 = 2 optimizer steps: lambda = 2.0 * min(1, step / 2) ** 2
    expected = [2.0 * min(1.0, s / 2) ** 2 for s in (0, 0, 1, 1, 2, 2, 3, 3)]
    assert [lam for _, lam in recorder.seen] == pytest.approx(expected)


# ---------------------------------------------------------------- schedule and loss injection


@pytest.mark.parametrize("decay", ["linear", "constant"])
def test_lr_schedule_warms_up_over_the_ratio_then_decays(decay: str) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = lr_schedule(optimizer, total_steps=100, warmup_ratio=0.1, decay=decay)  # type: ignore[arg-type]
    lrs = []
    for _ in range(101):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # linear warm-up from 0 over 10 steps, then linear decay to 0 at step 100 (or flat)
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(1.0) and lrs[10] == pytest.approx(2.0)
    if decay == "linear":
        assert lrs[55] == pytest.approx(1.0) and lrs[100] == pytest.approx(0.0)
    else:
        assert lrs[55] == lrs[100] == pytest.approx(2.0)


def test_any_nn_module_with_the_loss_signature_is_a_loss() -> None:
    class MarginLoss(torch.nn.Module):  # no InfoNCE attributes at all
        def forward(self, q, d, false_negatives=None):
            scores = q @ d.T  # (B, B)
            return torch.relu(1 - scores.diag()[:, None] + scores).mean()

    torch.manual_seed(0)
    model = SparseBiEncoder(MLPHead(), MLPHead(pooling="max"), loss=MarginLoss()).eval()
    from lightning_mlsr.io.pretrained import load_tokenizer

    texts = load_tokenizer("splade-tiny")(["a cat", "two dogs"], return_tensors="pt", padding=True)
    side = {"input_ids": texts["input_ids"], "attention_mask": texts["attention_mask"]}
    out = model._shared_step(
        {"query": side, "doc": side, "query_idx": torch.arange(2)}, "validation"
    )
    q, d = model(side, side)
    torch.testing.assert_close(out["rank_loss"], MarginLoss()(q, d))

"""The AToMiC experiment configs compose offline (--print_config) into the paper's setting.

Their backbones (DistilBERT, CLIP ViT-B/32) need the network, so unlike
``test_experiments.py`` they are not trained here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lightning_mlsr.training.cli import main

ATOMIC = Path(__file__).resolve().parents[2] / "experiments" / "atomic"
CONFIGS = sorted(ATOMIC.glob("m*.yaml"))
CLIP = "vit_base_patch32_clip_224.openai"


def printed_config(config: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_every_paper_model_has_a_config() -> None:
    assert [p.stem for p in CONFIGS] == ["m1", "m2", "m3", "m4"]


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_atomic_config_prints_the_paper_setting(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(config.parents[2] / "tests")  # shared files resolve next to the config
    printed = printed_config(config, capsys)
    data, trainer, model = printed["data"], printed["trainer"], printed["model"]
    assert data["collection"] == "data/atomic" and data["evaluation"]["corpus"] == "judged"
    assert data["batching"]["batch_size"] == 64 and trainer["max_epochs"] == 5
    assert trainer["precision"] == "bf16-mixed" and trainer["num_nodes"] == 1
    assert model["doc_regularizer"]["class_path"].endswith("FLOPS")  # from base.yaml
    query, doc = model["query_encoder"], model["doc_encoder"]
    expected_query = "MLMHead" if config.stem == "m1" else "MLPHead"
    assert query["class_path"].endswith(expected_query)
    assert query["init_args"]["backbone"] == "distilbert-base-uncased"
    doc_args = doc["init_args"]
    assert doc_args.get("backbone", doc_args.get("text_backbone")) == "distilbert-base-uncased"
    reads_image = config.stem in ("m1", "m4")
    assert (doc_args.get("image_backbone") == CLIP) is reads_image
    if reads_image:
        assert doc_args["image_pretrained"] and doc_args["freeze_image_backbone"]


def test_num_nodes_is_a_command_line_override(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(
            ["fit", "--config", str(ATOMIC / "m2.yaml"), "--trainer.num_nodes=4", "--print_config"]
        )
    assert yaml.safe_load(capsys.readouterr().out)["trainer"]["num_nodes"] == 4


#: the emoji experiment each AToMiC config reproduces at full scale
EMOJI_TWINS = {
    "m1": "paper/m1_mlm_mlm_image",
    "m2": "paper/m2_mlp_mlm_caption",
    "m3": "paper/m3_mlp_mlp_caption",
    "m4": "paper/m4_mlp_mlp_image_caption",
}
#: init_args that name a pretrained model, which differ by design between the two settings
BACKBONE_KEYS = {"backbone", "text_backbone", "image_backbone"}


def _leaves(tree: object, prefix: str = "") -> dict[str, object]:
    """Every leaf of a resolved config as ``dotted.path -> value`` (list items by index)."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    out: dict[str, object] = {}
    for key, value in items:
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _science(printed: dict) -> dict[str, object]:
    """A resolved config without what the two settings may differ in: data, trainer and the
    backbones' names."""
    return {
        path: value
        for path, value in _leaves(printed).items()
        if path.split(".")[0] not in ("data", "trainer")
        and path.rsplit(".", 1)[-1] not in BACKBONE_KEYS
    }


def test_differences_outside_data_trainer_backbones_are_reported() -> None:
    emoji = {"model": {"query_regularizer": None, "doc_encoder": {"init_args": {"backbone": "a"}}}}
    atomic = {"model": {"query_regularizer": {"class_path": "FLOPS"}}, "data": {"x": 1}}
    atomic["model"]["doc_encoder"] = {"init_args": {"backbone": "b"}}
    assert _science(emoji) != _science(atomic)
    atomic["model"]["query_regularizer"] = None
    assert _science(emoji) == _science(atomic)


@pytest.mark.parametrize("stem", sorted(EMOJI_TWINS))
def test_atomic_config_equals_its_emoji_twin_but_data_trainer_and_backbones(
    stem: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ATOMIC.parents[1] / "tests")
    atomic = _science(printed_config(ATOMIC / f"{stem}.yaml", capsys))
    emoji = _science(printed_config(ATOMIC.parent / f"{EMOJI_TWINS[stem]}.yaml", capsys))
    differ = {
        path: (atomic.get(path, "<absent>"), emoji.get(path, "<absent>"))
        for path in sorted(set(atomic) | set(emoji))
        if atomic.get(path, "<absent>") != emoji.get(path, "<absent>")
    }
    assert not differ, f"atomic/{stem}.yaml vs {EMOJI_TWINS[stem]}.yaml (atomic, emoji): {differ}"

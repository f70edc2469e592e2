"""An exported folder whose weights or configuration changed after the export is refused, the
file named: a ``config.json`` edited from 2 layers to 1 loaded with only a transformers warning
and vectors off by up to 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_mlsr.hub import ExportError, load_encoder, save_encoder
from lightning_mlsr.models import MLPHead, StaticQueryHead


def test_a_config_edited_to_fewer_layers_is_refused_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "mlp"
    save_encoder(MLPHead(), folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 2
    config["num_hidden_layers"] = 1
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    with pytest.raises(ExportError, match=r"config\.json' is not the file that was exported"):
        load_encoder(folder)


@pytest.mark.parametrize("name", ["model.safetensors", "lightning_mlsr_head.safetensors"])
def test_changed_or_missing_weights_are_refused_naming_the_file(name: str, tmp_path: Path) -> None:
    folder = tmp_path / "mlp"
    manifest = save_encoder(MLPHead(), folder)
    assert name in manifest["sha256"] and "README.md" not in manifest["sha256"]
    data = bytearray((folder / name).read_bytes())
    data[-1] ^= 1
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(ExportError, match=f"{name}' is not the file that was exported"):
        load_encoder(folder)
    (folder / name).unlink()
    with pytest.raises(ExportError, match=f"{name}' is missing"):
        load_encoder(folder)


def test_the_card_may_be_edited_and_older_folders_without_hashes_still_load(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "static"
    save_encoder(StaticQueryHead(), folder)
    (folder / "README.md").write_text("my own card")
    assert isinstance(load_encoder(folder), StaticQueryHead)
    manifest = json.loads((folder / "lightning_mlsr.json").read_text())
    manifest["sha256"] = {"../outside.json": "0" * 64}
    (folder / "lightning_mlsr.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="outside the folder"):
        load_encoder(folder)
    del manifest["sha256"]
    (folder / "lightning_mlsr.json").write_text(json.dumps(manifest))
    assert isinstance(load_encoder(folder), StaticQueryHead)

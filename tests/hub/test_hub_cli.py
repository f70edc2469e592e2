"""``python -m lightning_mlsr.hub``: a damaged checkpoint, a full disk or an unreachable hub is
one message naming the file (or the hub) and what to do, with exit status 1; an export is
all-or-nothing, so a failed one can simply be run again."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_mlsr.hub.__main__ import main
from lightning_mlsr.models import MLMHead, StaticQueryHead


def _fit_checkpoint(run: Path) -> Path:
    query, doc = StaticQueryHead(), MLMHead()
    state = {f"query_encoder.{k}": v for k, v in query.state_dict().items()}
    state.update({f"doc_encoder.{k}": v for k, v in doc.state_dict().items()})
    (run / "checkpoints").mkdir(parents=True)
    path = run / "checkpoints" / "last.ckpt"
    torch.save(
        {
            "state_dict": state,
            "hyper_parameters": {
                "query_encoder": {"class_path": "lightning_mlsr.models.StaticQueryHead"},
                "doc_encoder": {"class_path": "lightning_mlsr.models.MLMHead"},
            },
        },
        path,
    )
    return path


def _export(ckpt: Path, out: Path) -> int:
    return main(["export", "--ckpt_path", str(ckpt), "--out", str(out)])


def test_export_of_a_truncated_checkpoint_names_it_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _fit_checkpoint(tmp_path / "run")
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    assert _export(ckpt, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert f"{ckpt} is damaged" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_an_export_that_fills_the_disk_leaves_nothing_and_can_be_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import lightning_mlsr.hub.export as export

    ckpt = _fit_checkpoint(tmp_path / "run")
    out = tmp_path / "out"
    real_card = export.model_card

    def card_on_a_full_disk(**kwargs: Any) -> str:
        if kwargs["side"] == "document":  # the query side is complete by now
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_card(**kwargs)

    monkeypatch.setattr(export, "model_card", card_on_a_full_disk)
    assert _export(ckpt, out) == 1
    err = capsys.readouterr().err
    assert f"no space left to write {out}" in err and "nothing was exported" in err
    assert not out.exists()  # neither side, nor the hidden staging folder
    monkeypatch.setattr(export, "model_card", real_card)
    assert _export(ckpt, out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["doc", "query"]
    assert (out / "doc" / "README.md").is_file()


def test_export_into_a_used_folder_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _fit_checkpoint(tmp_path / "run")
    (tmp_path / "out" / "doc").mkdir(parents=True)
    (tmp_path / "out" / "doc" / "config.json").write_text("{}")
    assert _export(ckpt, tmp_path / "out") == 1
    assert "already holds an export" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["doc"]


def test_push_without_the_hub_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    ckpt = _fit_checkpoint(tmp_path / "run")
    assert _export(ckpt, tmp_path / "out") == 0

    def offline(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled.")

    monkeypatch.setattr(HfApi, "create_repo", offline)
    assert main(["push", str(tmp_path / "out" / "query"), "me/model"]) == 1
    err = capsys.readouterr().err
    assert "could not upload" in err and "me/model" in err and "cannot be reached" in err
    assert "Traceback" not in err
    assert main(["push", str(tmp_path / "out"), "me/model"]) == 1  # not a side's folder
    assert "has no lightning_mlsr.json" in capsys.readouterr().err

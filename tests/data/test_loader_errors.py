"""The last unclear loader errors: empty qrels, out-of-range grades, and the image check's
output (read-only collection, bundled collection, bad --workers) named before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_mlsr.data import DataError, load_collection
from lightning_mlsr.data.collection.check import check_images, main
from tests.helpers import write_atomic


def test_an_empty_qrels_file_names_the_file(tmp_path: Path) -> None:
    root = write_atomic(tmp_path / "c", qrels={"train.trec": "T1 Q0 I1 1\n", "validation.trec": ""})
    with pytest.raises(DataError, match=r"validation\.trec: the qrels file holds no judgments"):
        load_collection(root)
    root = write_atomic(tmp_path / "d", qrels={"train.trec": "T1 Q0 I1 1\n", "test.trec": "\n\n"})
    with pytest.raises(DataError, match=r"test\.trec: the qrels file holds no judgments"):
        load_collection(root)


@pytest.mark.parametrize("grade", ["99999999999999999999", "2147483648", "-2147483649"])
def test_an_out_of_range_grade_names_the_file_and_line(tmp_path: Path, grade: str) -> None:
    root = write_atomic(tmp_path / "c", qrels={"train.trec": f"T1 Q0 I1 1\nT1 Q0 I2 {grade}\n"})
    with pytest.raises(DataError, match=rf"train\.trec:2: relevance {grade} is out of range"):
        load_collection(root)


def test_the_largest_grades_trec_eval_reads_are_kept(tmp_path: Path) -> None:
    root = write_atomic(tmp_path / "c", qrels={"train.trec": "T1 Q0 I1 2147483647\nT1 Q0 I2 -2\n"})
    assert load_collection(root).qrels["train"]["T1"] == {"I1": 2147483647, "I2": -2}


def test_check_names_an_unwritable_output_before_the_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightning_mlsr.data.collection.check as check

    root = write_atomic(tmp_path / "c")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # a file where the output's folder would be: not writable
    scanned: list[object] = []
    monkeypatch.setattr(check, "_check_group", lambda task: scanned.append(task) or (0, []))
    with pytest.raises(DataError, match=r"cannot write the list of unusable images to .*a-file"):
        check_images(root, workers=1, output=blocker / "out.tsv", progress=False)
    assert scanned == []  # no image was decoded first
    out, bad = check_images(root, workers=1, output=tmp_path / "ok" / "out.tsv", progress=False)
    assert out.is_file() and bad == {} and len(scanned) > 0


def test_check_of_a_bundled_collection_needs_an_output(tmp_path: Path, capsys) -> None:
    assert main(["check", "emoji"]) == 2
    assert "bundled collection inside the installed package" in capsys.readouterr().err
    with pytest.raises(DataError, match="--output"):
        check_images("emoji", progress=False)


@pytest.mark.parametrize("workers", ["-1", "0", "many"])
def test_check_rejects_a_bad_worker_count_with_a_usage_error(workers: str, capsys) -> None:
    with pytest.raises(SystemExit) as err:
        main(["check", "emoji", "--workers", workers])
    assert err.value.code == 2
    assert "must be a positive number of processes" in capsys.readouterr().err
    with pytest.raises(DataError, match="--workers must be a positive"):
        check_images("emoji", workers=-1, output="x.tsv", progress=False)

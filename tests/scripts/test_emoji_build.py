"""The bundled emoji collection is exactly what scripts/build_emoji_collection.py builds."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lightning_mlsr.data.collection import BUNDLED_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "build_emoji_collection.py"
PACKAGES = ("emoji-datasource-google@16.0.0", "emojibase-data@17.0.0")


def _npm_pack(dest: Path) -> list[Path]:
    """Fetch both source tarballs with npm, or skip the test saying why not."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed, so the source packages cannot be fetched")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [npm, "pack", *PACKAGES, "--pack-destination", str(dest)],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("`npm pack` timed out: the npm registry is not reachable")
    except subprocess.CalledProcessError as err:
        pytest.skip(f"`npm pack` failed (no registry access?): {err.stderr.strip()[-300:]}")
    return [dest / "emoji-datasource-google-16.0.0.tgz", dest / "emojibase-data-17.0.0.tgz"]


def _build(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_rebuild_is_byte_identical(tmp_path: Path) -> None:
    datasource, emojibase = _npm_pack(tmp_path / "npm")
    done = _build(
        tmp_path / "out", "--emoji-datasource", str(datasource), "--emojibase", str(emojibase)
    )
    assert done.returncode == 0, done.stderr
    assert "images: 1911" in done.stdout and "| validation |" in done.stdout
    built = _files(tmp_path / "out")
    committed = _files(BUNDLED_DIR / "emoji")
    assert sorted(built) == sorted(committed)
    for name in committed:
        assert built[name] == committed[name], f"{name} differs from a fresh build"
    assert sum(map(len, committed.values())) < 15e6


def test_rejects_a_tarball_that_is_not_the_pinned_one(tmp_path: Path) -> None:
    fake = tmp_path / "emoji-datasource-google-16.0.0.tgz"
    with tarfile.open(fake, "w:gz") as tar:
        info = tarfile.TarInfo("package/emoji.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"[]"))
    done = _build(tmp_path / "out", "--emoji-datasource", str(fake), "--emojibase", str(fake))
    assert done.returncode != 0
    assert "sha256" in done.stderr and "emoji-datasource-google@16.0.0" in done.stderr
    assert not (tmp_path / "out").exists()

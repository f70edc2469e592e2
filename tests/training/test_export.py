"""`python -m lightning_mlsr predict` writes sparse vectors other engines can index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lightning_mlsr.training.callbacks.vector_writer import write_json_vectors
from lightning_mlsr.training.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_json_vectors_quantize_and_drop_zeros(tmp_path: Path) -> None:
    m = sp.csr_matrix(np.array([[0.0, 1.234, 0.004], [0.5, 0.0, 0.0]], dtype=np.float32))
    path = tmp_path / "v.jsonl"
    write_json_vectors(path, ["a", "b"], m, ["x", "y", "z"], scale=100)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    # 1.234 * 100 -> 123; 0.004 * 100 rounds to 0 and is dropped; 0.5 * 100 -> 50
    assert lines == [
        {"id": "a", "contents": "", "vector": {"y": 123}},
        {"id": "b", "contents": "", "vector": {"x": 50}},
    ]
    with pytest.raises(ValueError, match="ids for"):
        write_json_vectors(path, ["a"], m, ["x", "y", "z"])


@pytest.mark.parametrize("target", ["corpus", "queries"])
def test_predict_exports_npz_ids_and_jsonl(tmp_path: Path, target: str) -> None:
    out = tmp_path / "vectors"
    cli = main(
        [
            "predict",
            "--config",
            str(REPO / "experiments" / "paper" / "m3_mlp_mlp_caption.yaml"),
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            f"--data.predict={target}",  # queries: of --data.predict_split, test
            "--data.batching.eval_batch_size=512",
            "--return_predictions=false",
            f"--trainer.callbacks.init_args.output_dir={out}",
        ]
    )
    stem = "corpus" if target == "corpus" else "queries_test"
    matrix = sp.load_npz(out / f"{stem}.npz")
    ids = (out / f"{stem}.ids.txt").read_text().splitlines()
    dm = cli.datamodule
    expected_ids = dm.collection.images.ids if target == "corpus" else sorted(dm.qrels("test"))
    assert ids == list(expected_ids)
    assert matrix.shape == (len(ids), 30522)

    # the exported rows are the model's own encodings
    model = cli.model.eval()
    rows = [0, 1, len(ids) - 1]
    if target == "corpus":
        batch = dm.collator.doc_batch(rows)
        with torch.no_grad():
            direct = model.encode_docs(batch["doc"]).numpy()
    else:
        text_rows = [dm.collection.texts.index(ids[r]) for r in rows]
        batch = dm.collator.query_batch(text_rows)
        with torch.no_grad():
            direct = model.encode_queries(batch["query"]).numpy()
    np.testing.assert_allclose(matrix[rows].toarray(), direct, rtol=1e-5, atol=1e-6)

    lines = (out / f"{stem}.jsonl").read_text().splitlines()
    assert len(lines) == len(ids)
    first = json.loads(lines[0])
    assert first["id"] == ids[0]
    (tokenizer,) = dm.collator.tokenizers.values()  # one, shared by both sides
    vocab = tokenizer.convert_ids_to_tokens(list(range(30522)))
    row = matrix[0]
    expected = {
        vocab[t]: int(np.rint(w * 100))
        for t, w in zip(row.indices, row.data)
        if np.rint(w * 100) > 0
    }
    assert first["vector"] == expected

"""The backbone the report names beside every model: the registry's figures are the models'
own, every table carries the column, and a bad entry names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from research.report.registry import RegistryError
from research.report.registry_file import load_registry
from research.report.tables import metrics_table, significance_table

RESULTS = Path(__file__).resolve().parents[2] / "results"


@pytest.mark.parametrize("folder", ["", "emoji-describe"])
def test_registry_backbone_figures_are_the_models_own(folder: str) -> None:
    from transformers import AutoModel

    from lightning_mlsr.io.pretrained import resolve_text_backbone

    registry = load_registry(RESULTS / folder)
    for key, backbone in registry.backbones.items():
        model = AutoModel.from_pretrained(resolve_text_backbone(key))
        parameters = sum(p.numel() for n, p in model.named_parameters() if "pooler" not in n)
        assert (backbone.layers, backbone.hidden) == (
            model.config.num_hidden_layers,
            model.config.hidden_size,
        )
        assert backbone.parameters == pytest.approx(parameters / 1e6, abs=0.005)


def test_dense_models_and_their_sparse_rivals_name_their_backbones() -> None:
    registry = load_registry(RESULTS)
    assert registry.backbone("dense_caption").name == "MiniLM-L6"  # type: ignore[union-attr]
    assert registry.backbone("dense-zero-shot").name == "MiniLM-L6"  # type: ignore[union-attr]
    assert registry.backbone("m2_mlp_mlm_caption").name == "SPLADE-tiny"  # type: ignore[union-attr]
    assert registry.backbone("minilm_m2_mlp_mlm_caption").name == "MiniLM-L6"  # type: ignore[union-attr]
    assert registry.backbone("bm25") is None and registry.backbone_cell("bm25") == "–"


def test_every_table_row_carries_the_backbone() -> None:
    registry = load_registry(RESULTS)
    record = {"test": {m: 0.5 for m in registry.measures} | {"q_nnz": 1.0, "d_nnz": 2.0}}
    record["test"] |= {"flops_per_query": 3.0, "empty_docs": 0.0}
    record["per_query"] = {"test": {}}
    lines = metrics_table(registry, {"m2_mlp_mlm_caption": [record]}, "test")
    assert lines[0].startswith("| model | backbone | seeds |")
    assert lines[2].startswith("| M2 | SPLADE-tiny (2L/128, 4.4M) | ")

    class Text:
        def __call__(self, key: str, **kw: object) -> str:
            return key

    test = {"finding": "dense", "a": "m2_mlp_mlm_caption", "b": "dense_caption", "seeds_a": 3}
    test |= {"seeds_b": 3, "equal_seeds": True, "measure": "nDCG@10", "queries": "all", "n": 9}
    test |= {k: 0.1 for k in ("mean_a", "mean_b", "diff", "t", "p", "p_holm", "wilcoxon_p")}
    test |= {"diff_ci": (0.0, 0.2), "seed_ci": (0.0, 0.2), "p_seed": 0.1, "p_seed_holm": 0.1}
    rows = significance_table(registry, Text(), [test])  # type: ignore[arg-type]
    assert "| M2 | dense caption | SPLADE-tiny / MiniLM-L6 |" in rows[4]


def test_an_unknown_backbone_names_the_file_and_the_choices(tmp_path: Path) -> None:
    for name in ("registry.yaml", "protocol.yaml", "report_text.md"):
        (tmp_path / name).write_text((RESULTS / name).read_text())
    text = (tmp_path / "registry.yaml").read_text()
    (tmp_path / "registry.yaml").write_text(
        text.replace("bm25: {backbone: none}", "bm25: {backbone: bert-base}")
    )
    with pytest.raises(RegistryError, match=r"registry.yaml.*bert-base.*splade-tiny"):
        load_registry(tmp_path)

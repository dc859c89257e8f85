import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The offline data copies: EASYCORE_DATA, else ../shared/data beside the checkout (CI and dev machines).
DATA_ROOT = Path(os.environ.get("EASYCORE_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(autouse=True, scope="session")
def _threads():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield


@pytest.fixture(scope="session")
def data_root():
    return DATA_ROOT


def need_data(*paths):
    """Skip with a clear reason when the offline copy is absent."""
    missing = [p for p in paths if not (DATA_ROOT / p).exists()]
    if missing:
        pytest.skip(f"offline data {missing} not found under {DATA_ROOT} (set EASYCORE_DATA to the folder "
                    f"holding the offline copies)")

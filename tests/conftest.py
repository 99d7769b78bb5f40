from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = REPO_ROOT / "models" / "imagenet-efficientnet-lite0"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return REPO_ROOT / "models" / "samples"


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    return SHIPPED_MODEL

from pathlib import Path

import pytest

from device.paths import DEFAULT_MODEL, SAMPLES_DIR

SHIPPED_MODEL = DEFAULT_MODEL


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    return SHIPPED_MODEL

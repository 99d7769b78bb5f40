from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _cache_in_tmp(monkeypatch: pytest.MonkeyPatch, kestrel_cache_root: Path) -> None:
    """Commands that use the default cache use the session's (never ~/.cache in a test)."""
    monkeypatch.setenv("KESTREL_CACHE_DIR", str(kestrel_cache_root))

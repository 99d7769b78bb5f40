"""The ``ota`` section and what the daemon makes of it before any model loads."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from device.config import ConfigError, KestrelConfig, OtaConfig
from device.config.checks import check_config
from device.ota.archive import archive_sha256
from device.ota.service import OtaService
from device.ota.store import ModelRef, ModelStore
from device.paths import DEFAULT_MODEL


def test_groups_are_topic_safe_and_unique():
    assert OtaConfig(groups=["barn", "north-1"]).groups == ["barn", "north-1"]
    with pytest.raises(ValidationError, match="groups must be unique"):
        OtaConfig(groups=["barn", "barn"])
    with pytest.raises(ValidationError, match=r"groups\.0"):
        OtaConfig(groups=["barn/+"])


def test_updates_need_a_broker(tmp_path):
    config = KestrelConfig(state_dir=tmp_path, mqtt=None, ota={"enabled": True})
    with pytest.raises(ConfigError, match=r"ota\.enabled: updates come through the broker"):
        check_config(config, "kestrel.yaml", running=True)
    with pytest.raises(ConfigError, match="mqtt is null"):
        OtaService(config)


def test_disabled_the_config_model_is_used_and_state_dir_untouched(tmp_path):
    store = ModelStore(tmp_path)
    pushed = ModelRef(archive_sha256(DEFAULT_MODEL), "pushed", DEFAULT_MODEL)
    store.activate(pushed, {"demo": ModelRef("a" * 64, "old", tmp_path / "gone")})
    before = sorted(p.name for p in store.root.iterdir())
    config = KestrelConfig(state_dir=tmp_path, model=tmp_path / "configured")
    service = OtaService(config)
    assert service.model_for(config.cameras[0]) == tmp_path / "configured"
    assert sorted(p.name for p in store.root.iterdir()) == before
    enabled = OtaService(config.model_copy(update={"ota": OtaConfig(enabled=True)}))
    assert enabled.model_for(config.cameras[0]) == DEFAULT_MODEL  # the pushed one wins

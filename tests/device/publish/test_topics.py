"""The topic contract and the JSON encoding of payloads."""

from __future__ import annotations

import numpy as np
from publisher_helpers import TOPICS

from device.publish.topics import Topics, encode_json


def test_topics_and_payload_encoding():
    assert TOPICS.available == "kestrel/barn/available"
    assert TOPICS.state("door") == "kestrel/barn/door/state"
    assert TOPICS.event("door") == "kestrel/barn/door/event"
    assert TOPICS.snapshot("door") == "kestrel/barn/door/snapshot"
    assert TOPICS.status("door") == "kestrel/barn/door/status"
    assert TOPICS.stats == "kestrel/barn/stats"
    assert TOPICS.ha_status == "homeassistant/status"
    assert TOPICS.ha_discovery == "homeassistant/device/barn/config"
    assert Topics("site", "x", "ha").ha_status == "ha/status"
    body = encode_json({"label": "héron", "score": np.float32(0.5), "v": np.arange(2)})
    assert body == '{"label":"héron","score":0.5,"v":[0,1]}'.encode()

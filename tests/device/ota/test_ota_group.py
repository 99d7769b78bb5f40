"""A rollout to a group: three daemons on one mosquitto with its default limits, one pushed
bundle. Two report ``active``; the third, whose disk refuses the bundle, reports ``rejected``
and keeps classifying with its old model."""

from __future__ import annotations

import getpass
import json
import os
import resource
import signal

from broker import Mosquitto
from daemon_process import START_TIMEOUT
from ota_daemon import model_topic, ota_config, push, states, statuses

ORIGINAL = "imagenet-efficientnet-lite0"
DEVICES = ("dev-a", "dev-b", "dev-c")
QUOTA = 3_000_000  # bytes per file for dev-c: below the 5.1 MiB bundle


def _default_mosquitto(folder) -> Mosquitto:
    """mosquitto with nothing but a listener: every limit (message size, queue, inflight) is
    the shipped default, as on a broker nobody tuned."""
    broker = Mosquitto(folder)
    lines = [f"listener {broker.port} 127.0.0.1", "allow_anonymous true", "log_dest stderr"]
    if os.geteuid() == 0:
        lines.append(f"user {getpass.getuser()}")
    broker.config_path.write_text("\n".join(lines) + "\n")
    return broker.start()


def test_a_group_rollout_reports_each_device_and_a_full_disk_keeps_its_model(
    tmp_path, photos, mosquitto_dir, make_subscriber, start_daemon, bundle_b
):
    broker = _default_mosquitto(mosquitto_dir)
    try:
        sub = make_subscriber(broker.port, ["kestrel/#"])
        sub.wait_subscribed()
        daemons = {
            device: start_daemon(
                ota_config(
                    tmp_path / device, broker.port, photos, device=device, ota={"groups": ["barn"]}
                )
            )
            for device in DEVICES
        }
        # dev-c's disk is "full": the kernel refuses its writes beyond QUOTA bytes a file
        # (RLIMIT_FSIZE, a quota on the process), with a real OS error, as a full disk does.
        resource.prlimit(daemons["dev-c"].pid, resource.RLIMIT_FSIZE, (QUOTA, QUOTA))
        for device in DEVICES:
            sub.wait_for(
                lambda ms, d=device: any(m.topic == model_topic(d) for m in ms), START_TIMEOUT * 2
            )

        result = push(broker.port, str(bundle_b), "--group", "barn")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "group barn: 3 device(s) online" in result.stdout
        assert "group barn: 2 of 3 device(s) active" in result.stdout
        for device in ("dev-a", "dev-b"):
            assert f"{device}: active door-v2" in result.stdout
            assert statuses(sub, device)[-1]["status"] == "active"
        rejected = statuses(sub, "dev-c")[-1]
        assert rejected["status"] == "rejected" and "File too large" in rejected["reason"]
        assert "dev-c: rejected door-v2" in result.stderr and "File too large" in result.stderr

        for device, name in (("dev-a", "door-v2"), ("dev-b", "door-v2"), ("dev-c", ORIGINAL)):
            sub.wait_for(
                lambda ms, d=device, n=name: any(
                    s["model"]["name"] == n and s["label"] for s in states(sub, d)[-1:]
                ),
                START_TIMEOUT,
            )
        incoming = tmp_path / "dev-c" / "state" / "models" / ".incoming"
        assert not list(incoming.glob("*"))
        for daemon in daemons.values():
            daemon.send(signal.SIGTERM)
        assert [daemon.wait_exit() for daemon in daemons.values()] == [0, 0, 0]
        assert (
            json.loads((tmp_path / "dev-c" / "state" / "models" / "status.json").read_text())[
                "status"
            ]
            == "rejected"
        )
    finally:
        broker.kill()

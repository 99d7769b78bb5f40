"""In CI a missing mosquitto fails the run: skipped, the MQTT tests would pass unseen. A pytest
run of its own, on a machine where mosquitto is made to look absent (a plugin replaces
``broker.mosquitto_binary`` before the conftest imports it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
HIDE_MOSQUITTO = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
import broker
broker.mosquitto_binary = lambda: None
"""
# MQTT tests of both kinds: a fixture that skips, and a module marked skipif.
SELECTION = [
    "tests/device/publish/test_embedded_broker.py",
    "tests/device/run/test_daemon_signals.py::test_sigint_says_offline_and_exits_0",
]


def run_pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "hide_mosquitto.py").write_text(HIDE_MOSQUITTO)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "hide_mosquitto",
            "-p",
            "no:cacheprovider",
            *SELECTION,
        ],
        cwd=HERE.parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("ci", ["true", "1"])
def test_ci_without_mosquitto_fails_the_run(tmp_path, ci):
    result = run_pytest(tmp_path, ci)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "CI=true but mosquitto is not installed" in output, output
    assert "passed" not in output and "skipped" not in output, output


def test_outside_ci_the_mqtt_tests_are_skipped(tmp_path):
    result = run_pytest(tmp_path, None)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "skipped" in output and "failed" not in output, output

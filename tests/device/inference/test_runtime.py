"""The runtime seam: its C++ INFO line silenced, real errors kept; the Edge TPU device string."""

import os
import subprocess
import sys

import pytest

from device.inference.runtime import edgetpu_options, runtime_noise_filtered

XNNPACK_LINE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


def test_classify_prints_no_xnnpack_line(samples_dir):
    result = subprocess.run(
        [sys.executable, "-m", "device.cli", "classify", str(samples_dir / "cat-chelsea.jpg")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "cat" in result.stdout
    assert "XNNPACK" not in result.stderr + result.stdout


def test_the_filter_keeps_what_is_not_the_runtime_info_line(capfd):
    with runtime_noise_filtered():
        os.write(2, f"{XNNPACK_LINE}\nERROR: Didn't find op for builtin opcode\n".encode())
        print("from python", file=sys.stderr)
    err = capfd.readouterr().err
    assert "ERROR: Didn't find op for builtin opcode" in err and "from python" in err
    assert "XNNPACK" not in err
    os.write(2, b"after\n")  # fd 2 is back where it was
    assert capfd.readouterr().err == "after\n"


@pytest.mark.parametrize("device", [":0", ":12", "usb", "usb:1", "pci", "pci:0"])
def test_pycoral_device_strings(device):
    assert edgetpu_options(device) == {"device": device}
    assert edgetpu_options(None) == {}


@pytest.mark.parametrize("device", ["", "usb1", "USB", "usb:", "pcie", ":x", "0", "usb:0 "])
def test_malformed_device_strings_are_refused_naming_the_field(device):
    with pytest.raises(ValueError, match="accelerator_device"):
        edgetpu_options(device)

"""The accelerator's child process itself: stopped with its classifier, ended with its parent,
given up when it hangs; the CPU answers every frame meanwhile."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device.inference import edgetpu_child
from device.inference.engine import Classifier
from device.inference.preprocess import read_image


def gone(pid: int) -> bool:
    """Exited (a zombie counts: nobody may reap it in a container)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def wait_until(condition, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_close_stops_the_child_and_frees_the_shared_memory(shipped_model, samples_dir):
    classifier = Classifier(shipped_model, accelerator="cpu-in-child")
    process = classifier.accelerator_process
    assert process is not None and process.pid != os.getpid()
    assert classifier.classify(read_image(str(samples_dir / "coffee.jpg"))).label == "espresso"
    names = [shm.name for shm in process._buffers]
    assert len(names) == 2 and all(Path("/dev/shm", n.lstrip("/")).exists() for n in names)
    classifier.close()
    assert gone(process.pid)
    assert not any(Path("/dev/shm", n.lstrip("/")).exists() for n in names)


def test_the_child_ends_with_its_parent(shipped_model, tmp_path):
    """A daemon killed by SIGKILL leaves no accelerator process behind."""
    script = (
        "import os, signal, sys\n"
        "from device.inference.engine import Classifier\n"
        f"c = Classifier({str(shipped_model)!r}, accelerator='cpu-in-child')\n"
        "print(c.accelerator_process.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    parent = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    child = int(parent.stdout.split()[0])
    assert wait_until(lambda: gone(child)), f"child {child} outlived its parent"


def test_a_hung_child_is_given_up_and_the_cpu_answers(shipped_model, samples_dir, monkeypatch):
    monkeypatch.setattr(edgetpu_child, "INVOKE_TIMEOUT_S", 0.5)
    classifier = Classifier(shipped_model, accelerator="cpu-in-child")
    cat = read_image(str(samples_dir / "cat-chelsea.jpg"))
    expected = classifier.classify(cat)
    process = classifier.accelerator_process
    os.kill(process.pid, signal.SIGSTOP)  # a USB transfer that never completes
    try:
        assert classifier.classify(cat) == expected
    finally:
        if not gone(process.pid):
            os.kill(process.pid, signal.SIGCONT)
    assert classifier.accelerator == "cpu" and classifier.accelerator_failures == 1
    assert "no answer in 0.5 s" in classifier.fallback_reason
    assert wait_until(lambda: gone(process.pid))


def test_a_child_that_cannot_start_says_why(shipped_model, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model")
    spec = edgetpu_child.ChildSpec(broken, threads=1, delegate=False)
    with pytest.raises(edgetpu_child.AcceleratorUnavailable, match="not a valid Flatbuffer"):
        edgetpu_child.EdgeTpuProcess(spec)

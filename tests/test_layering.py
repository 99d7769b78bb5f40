"""The layering and size rules of the repository, checked on its sources.

The device ships to small boxes without TensorFlow: nothing under ``device/`` may import
TensorFlow, Keras or ``training``, not even lazily inside a function. And the house rules that
keep the code readable: no module over 400 lines, no function over 80.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.inference import runtime as device_runtime
from device.paths import REPO_ROOT

FORBIDDEN_IN_DEVICE = ("tensorflow", "keras", "training")
CHECKED_FOLDERS = ("device", "training", "bench")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

# Run in a fresh interpreter: a meta-path finder refuses the forbidden packages before anything
# is imported, then every module under device/ is imported. Prints one failure per line.
_IMPORT_EVERY_DEVICE_MODULE = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys, traceback

    FORBIDDEN = {forbidden!r}

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FORBIDDEN:
                raise ImportError(f"device must not import {{name}}")
            return None

    sys.meta_path.insert(0, Refuse())
    import device

    failures = []
    def record(name):
        failures.append(f"{{name}}: {{sys.exc_info()[1]!r}}")

    names = ["device"]
    for info in pkgutil.walk_packages(device.__path__, "device.", onerror=record):
        names.append(info.name)
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException:
            failures.append(f"{{name}}: " + traceback.format_exc().strip().splitlines()[-1])
    print(f"tried {{len(names)}} modules")
    for failure in failures:
        print("FAILED", failure)
    """
).format(forbidden=FORBIDDEN_IN_DEVICE)


def _sources(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((REPO_ROOT / folder).rglob("*.py"))


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def _imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) for every import statement anywhere in the tree, and every
    ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def test_every_device_module_imports_without_tensorflow_or_training():
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERY_DEVICE_MODULE],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    failures = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    assert "tried" in done.stdout, done.stdout + done.stderr
    assert not failures, "\n".join(failures)


def test_no_device_source_imports_tensorflow_keras_or_training():
    offenders = [
        f"{_relative(path)}:{line}: {module}"
        for path in _sources("device")
        for line, module in _imported_modules(ast.parse(path.read_text(encoding="utf-8")))
        if module.split(".")[0] in FORBIDDEN_IN_DEVICE
    ]
    assert not offenders, "device/ must not import these:\n" + "\n".join(offenders)


def test_the_device_runtime_never_falls_back_to_tensorflow():
    assert "tensorflow" not in device_runtime.RUNTIME_MODULES
    with pytest.raises(device_runtime.RuntimeMissing, match="pip install ai-edge-litert"):
        device_runtime.find_runtime(())


def test_training_falls_back_to_tensorflow_lite_without_a_device_runtime(monkeypatch):
    pytest.importorskip("tensorflow", reason="workstation fallback: needs the 'train' extra")
    from training import runtime as training_runtime

    def missing() -> device_runtime.Runtime:
        raise device_runtime.RuntimeMissing("no TensorFlow Lite runtime found")

    monkeypatch.setattr(training_runtime, "find_runtime", missing)
    runtime = training_runtime.workstation_runtime()
    assert runtime.name == "tensorflow.lite"
    assert runtime.interpreter_class.__module__.startswith("tensorflow")


def test_no_module_is_over_400_lines():
    offenders = []
    for path in _sources(*CHECKED_FOLDERS):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"{_relative(path)}: {lines} lines")
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(offenders)


def test_no_function_is_over_80_lines():
    offenders = []
    for path in _sources(*CHECKED_FOLDERS):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    offenders.append(f"{_relative(path)}:{node.lineno} {node.name}: {lines} lines")
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)

"""`kestrel classify` and `kestrel bench` as a user runs them."""

import json
import shutil
import subprocess
import sys

import pytest

from device.cli import main


def test_classify_folder_json(samples_dir, capsys):
    assert main(["classify", str(samples_dir), "--json", "--top-k", "3"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    by_name = {line["path"].rsplit("/", 1)[-1]: line for line in lines}
    assert set(by_name) == {"astronaut.jpg", "cat-chelsea.jpg", "coffee.jpg", "rocket.jpg"}
    cat = by_name["cat-chelsea.jpg"]
    assert cat["labels"][0]["label"] == "cat" and len(cat["scores"]) == 3
    assert [x["label"] for x in cat["hierarchy"]] == ["animal", "mammal", "cat"]


def test_unreadable_file_is_reported_and_the_rest_still_classified(tmp_path, samples_dir, capsys):
    shutil.copy(samples_dir / "coffee.jpg", tmp_path / "a-coffee.jpg")
    (tmp_path / "b-broken.jpg").write_bytes((samples_dir / "coffee.jpg").read_bytes()[:300])
    shutil.copy(samples_dir / "cat-chelsea.jpg", tmp_path / "c-cat.jpg")
    code = main(["classify", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "b-broken.jpg: not a readable image" in err and "1 of 3 images" in err
    assert "a-coffee.jpg: espresso" in out and "c-cat.jpg: cat" in out


def test_missing_path_is_an_error(tmp_path, capsys):
    assert main(["classify", str(tmp_path / "nope.jpg")]) == 1
    assert "nope.jpg" in capsys.readouterr().err


def test_broken_bundle_exits_2_with_the_reason(tmp_path, shipped_model, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(shipped_model, bundle)
    (bundle / "labels.txt").write_text("just one\n")
    assert main(["classify", "--model", str(bundle), str(tmp_path)]) == 2
    assert "labels.txt: labels: expected the 1000 labels" in capsys.readouterr().err


def test_bench_prints_every_stage_and_the_ratios(capsys):
    assert main(["bench", "--iterations", "5", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    for stage in (
        "file decode",
        "preprocess",
        "invoke alone",
        "decode",
        "end to end",
        "overhead",
        "peak resident",
    ):
        assert stage in out


@pytest.mark.slow
def test_console_script_runs_as_installed(samples_dir):
    result = subprocess.run(
        [sys.executable, "-m", "device.cli", "classify", str(samples_dir / "coffee.jpg")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "espresso" in result.stdout


def test_classify_names_a_missing_file_without_a_raw_errno(tmp_path, capsys):
    missing = tmp_path / "nope.jpg"
    assert main(["classify", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"{missing}: no such file" in err and "Errno" not in err


@pytest.mark.parametrize("name", ["nope.jpg", "README.md"])
def test_bench_on_no_readable_image_says_which_and_exits_1(capsys, name):
    from device.paths import REPO_ROOT

    path = REPO_ROOT / name
    assert main(["bench", "--images", str(path), "--iterations", "1", "--rounds", "1"]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "no readable image" in err


def test_bench_skips_an_unreadable_image_and_runs_on_the_rest(samples_dir, tmp_path, capsys):
    missing = tmp_path / "nope.jpg"
    args = ["bench", "--images", str(missing), str(samples_dir / "coffee.jpg")]
    assert main([*args, "--iterations", "2", "--rounds", "1"]) == 0
    out, err = capsys.readouterr()
    assert f"{missing}: no such file" in err and "end to end" in out


@pytest.mark.parametrize("flag", ["--iterations", "--rounds"])
def test_bench_refuses_zero_iterations_or_rounds(capsys, flag):
    with pytest.raises(SystemExit) as info:
        main(["bench", flag, "0"])
    assert info.value.code == 2
    assert f"{flag}: must be at least 1" in capsys.readouterr().err


def test_a_command_group_alone_prints_its_subcommands(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "check" in out and "schema" in out and "validate a YAML configuration" in out


def test_accelerator_device_is_checked_and_reaches_the_classifier(samples_dir, capsys, monkeypatch):
    with pytest.raises(SystemExit) as info:
        main(["classify", str(samples_dir), "--accelerator-device", "usb1"])
    assert info.value.code == 2
    assert "--accelerator-device: expected ':N', 'usb'" in capsys.readouterr().err

    from device.inference import engine

    seen = {}
    real = engine.Classifier

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **{**kwargs, "accelerator": "cpu"})

    monkeypatch.setattr(engine, "Classifier", spy)
    assert (
        main(["classify", str(samples_dir / "cat-chelsea.jpg"), "--accelerator-device", "usb"]) == 0
    )
    assert seen["accelerator_device"] == "usb"

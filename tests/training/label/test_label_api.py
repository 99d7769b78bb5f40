"""kestrel label's API and file moves, through Starlette's test client (real files, real
curate report)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from label_folder import copy_folder, make_folder, make_report, tree
from starlette.testclient import TestClient

from device.cli import main
from training.label.app import create_app
from training.label.store import LOG_NAME


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, fashion_by_class, embedding_cache) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("to-label")
    make_folder(root, fashion_by_class)
    return root, make_report(root, embedding_cache)


@pytest.fixture
def folder(prepared, tmp_path: Path) -> tuple[Path, dict]:
    source, report = prepared
    return copy_folder(source, tmp_path / "frames"), report


@pytest.fixture
def client(folder) -> TestClient:
    root, report = folder
    return TestClient(create_app(root, report), base_url="http://127.0.0.1")


def _images(client: TestClient) -> dict[str, dict]:
    response = client.get("/api/images")
    assert response.status_code == 200
    return {i["path"]: i for i in response.json()["images"]}


def test_images_carry_groups_guesses_and_labels(client: TestClient) -> None:
    body = client.get("/api/images").json()
    images = {i["path"]: i for i in body["images"]}
    assert body["classes"] == ["bag"] and len(body["clusters"]) == 3
    assert len(images) == 36 + 4
    assert images["trouser-000.png"]["guess"] == "trouser"
    assert images["bag/img000.png"]["label"] == "bag"
    unlabeled = [i for i in images.values() if i["label"] is None]
    assert all(i["cluster"] in (0, 1, 2) and i["rank"] is not None for i in unlabeled)
    trouser_groups = {images[f"trouser-{i:03d}.png"]["cluster"] for i in range(12)}
    assert len(trouser_groups) == 1  # trousers are one group
    assert client.get("/").headers["content-type"].startswith("text/html")
    assert client.get("/static/app.js").status_code == 200
    thumb = client.get("/api/thumb", params={"path": "sneaker-003.png"})
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"


def test_label_moves_images_with_sidecars_and_undo_restores(client, folder) -> None:
    root, _ = folder
    before = tree(root)
    paths = ["trouser-000.png", "trouser-001.png", "bag-005.png"]
    response = client.post("/api/label", json={"paths": paths, "label": "pants"})
    assert response.status_code == 200 and response.json()["moved"] == 3
    assert sorted(p.name for p in (root / "pants").iterdir()) == [
        "bag-005.png",
        "trouser-000.json",
        "trouser-000.png",
        "trouser-001.json",
        "trouser-001.png",
    ]
    assert not (root / "trouser-000.png").exists() and not (root / "trouser-000.json").exists()
    assert json.loads((root / "pants/trouser-000.json").read_text())["guess"] == "trouser"
    images = _images(client)
    assert images["pants/trouser-000.png"]["label"] == "pants"
    assert images["pants/trouser-000.png"]["cluster"] is not None  # keeps its group
    log = [json.loads(line) for line in (root / LOG_NAME).read_text().splitlines()]
    assert (
        log[0]["label"] == "pants"
        and ["trouser-000.png", "pants/trouser-000.png"] in log[0]["moves"]
    )

    assert client.post("/api/undo", json={}).status_code == 200
    assert tree(root) == before  # every file back, bytes unchanged
    assert not (root / "pants").exists()  # the folder the change made goes with it
    assert client.post("/api/undo", json={}).status_code == 409  # nothing left to undo


def test_names_taken_in_the_class_folder_are_never_overwritten(client, folder) -> None:
    root, _ = folder
    (root / "bag-000.png").write_bytes((root / "bag-001.png").read_bytes())  # same name as ...
    (root / "bag" / "bag-000.png").write_bytes((root / "bag/img000.png").read_bytes())  # ... this
    kept = (root / "bag" / "bag-000.png").read_bytes()
    moving = (root / "bag-000.png").read_bytes()
    assert (
        client.post("/api/label", json={"paths": ["bag-000.png"], "label": "bag"}).json()["moved"]
        == 1
    )
    assert (root / "bag/bag-000.png").read_bytes() == kept
    assert (root / "bag/bag-000-1.png").read_bytes() == moving


def test_two_tabs_do_not_lose_each_others_work(folder) -> None:
    root, report = folder
    tab_a = TestClient(create_app(root, report), base_url="http://127.0.0.1")
    tab_b = TestClient(create_app(root, report), base_url="http://localhost")
    first = tab_a.post(
        "/api/label", json={"paths": ["sneaker-000.png", "sneaker-001.png"], "label": "shoe"}
    )
    assert first.status_code == 200
    # Tab B still shows sneaker-001 unlabeled: its request is refused whole, with the reason.
    stale = tab_b.post(
        "/api/label", json={"paths": ["sneaker-001.png", "sneaker-002.png"], "label": "bag"}
    )
    assert stale.status_code == 409 and stale.json()["paths"] == ["sneaker-001.png"]
    assert (root / "sneaker-002.png").exists() and (root / "shoe/sneaker-001.png").exists()
    second = tab_b.post("/api/label", json={"paths": ["bag-000.png"], "label": "bag"})
    assert second.status_code == 200
    # Tab A undoes its own change (not B's later one) ...
    assert tab_a.post("/api/undo", json={"id": first.json()["id"]}).status_code == 200
    assert (root / "sneaker-001.png").exists() and (root / "bag/bag-000.png").exists()
    # ... and a second undo of it is stale.
    assert tab_b.post("/api/undo", json={"id": first.json()["id"]}).status_code == 409
    assert tab_a.get("/api/version").json()["version"] == 3


def test_undo_is_refused_when_a_later_change_moved_the_files(client, folder) -> None:
    root, _ = folder
    first = client.post("/api/label", json={"paths": ["bag-001.png"], "label": "purse"}).json()
    client.post("/api/label", json={"paths": ["purse/bag-001.png"], "label": "bag"})
    blocked = client.post("/api/undo", json={"id": first["id"]})
    assert blocked.status_code == 409 and blocked.json()["paths"] == ["purse/bag-001.png"]
    assert client.post("/api/undo", json={}).status_code == 200  # the later one first
    assert client.post("/api/undo", json={"id": first["id"]}).status_code == 200
    assert (root / "bag-001.png").is_file()


def test_paths_outside_the_folder_and_symlinks_are_refused(client, folder, tmp_path) -> None:
    root, _ = folder
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.png"
    secret.write_bytes((root / "bag-002.png").read_bytes())
    os.symlink(secret, root / "link.png")
    os.symlink(outside, root / "evil")
    before = tree(root)
    for bad in (
        "../outside/secret.png",
        str(secret),
        "bag/../../outside/secret.png",
        "link.png",
        "evil/secret.png",
        ".kestrel-curate/curate.json",
        "bag",
        "",
    ):
        response = client.post("/api/label", json={"paths": [bad], "label": "x"})
        assert response.status_code == 400, bad
        assert client.get("/api/thumb", params={"path": bad}).status_code == 400, bad
    # A symlinked class folder is no class: moving into it would leave the folder.
    into = client.post("/api/label", json={"paths": ["bag-002.png"], "label": "evil"})
    assert into.status_code == 400
    assert tree(root) == before and secret.is_file() and list(outside.iterdir()) == [secret]
    listed = _images(client)
    assert "link.png" not in listed and not any(p.startswith("evil/") for p in listed)
    assert "evil" not in client.get("/api/images").json()["classes"]


@pytest.mark.parametrize("label", ["", " pad", "../up", "a/b", ".hidden", "x" * 101, "a\nb", 3])
def test_bad_class_names_are_refused(client, folder, label) -> None:
    root, _ = folder
    before = tree(root)
    response = client.post("/api/label", json={"paths": ["bag-003.png"], "label": label})
    assert response.status_code == 400 and "class name" in response.json()["error"]
    assert tree(root) == before


def test_token_json_only_and_host_checks(folder) -> None:
    root, report = folder
    app = create_app(root, report, token="s3cret", loopback=False)
    anonymous = TestClient(app, base_url="http://192.0.2.7")
    assert anonymous.get("/api/images").status_code == 401
    assert (
        anonymous.post("/api/label", json={"paths": ["bag-003.png"], "label": "x"}).status_code
        == 401
    )
    bearer = {"Authorization": "Bearer s3cret"}
    assert anonymous.get("/api/images", headers=bearer).status_code == 200
    assert anonymous.get("/api/images", headers={"Authorization": "Bearer nope"}).status_code == 401
    browser = TestClient(app, base_url="http://192.0.2.7")
    assert browser.get("/?token=s3cret").status_code == 200  # sets the cookie
    assert browser.get("/api/images").status_code == 200
    form = browser.post("/api/label", data={"paths": "bag-003.png", "label": "x"})
    assert form.status_code == 415 and (root / "bag-003.png").exists()
    local = TestClient(create_app(root, report), base_url="http://evil.example")
    assert local.get("/api/images").status_code == 400  # DNS rebinding: foreign Host refused


def test_command_line_refuses_a_public_address_without_a_token(folder, capsys, monkeypatch) -> None:
    root, _ = folder
    monkeypatch.delenv("KESTREL_LABEL_TOKEN", raising=False)
    assert main(["label", str(root), "--host", "0.0.0.0"]) == 2
    assert "token is required" in capsys.readouterr().err
    assert main(["label", str(root / "missing")]) == 2


def test_the_report_is_made_when_missing_and_reused(folder, embedding_cache) -> None:
    from device.cli import build_parser
    from training.label.cli import load_or_make_report

    root, _ = folder
    shutil.rmtree(root / ".kestrel-curate", ignore_errors=True)
    argv = ["label", str(root), "--clusters", "3", "--image-size", "96"]
    args = build_parser().parse_args([*argv, "--cache-dir", str(embedding_cache)])
    made = load_or_make_report(args)
    report_file = root / ".kestrel-curate" / "curate.json"
    assert report_file.is_file() and len(made["clusters"]) == 3
    stamp = report_file.stat().st_mtime_ns
    assert load_or_make_report(args)["created"] == made["created"]
    assert report_file.stat().st_mtime_ns == stamp  # read, not made again

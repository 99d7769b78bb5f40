"""kestrel label in a real browser: Debian's headless Chromium driven by Selenium against the
app served by uvicorn. Select a group, assign it to a new class, then a shift-click range to an
existing class with a key, and undo it with a key; the files follow on disk."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from label_folder import make_folder, make_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser_or_skip() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        message = f"Debian chromium / chromium-driver missing: {missing}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (apt-get install chromium chromium-driver)")
        pytest.skip(message)


@pytest.fixture
def served(tmp_path: Path, fashion_by_class, embedding_cache) -> Iterator[tuple[str, Path]]:
    import uvicorn

    from training.label.app import create_app

    root = tmp_path / "frames"
    root.mkdir()
    make_folder(root, fashion_by_class)
    app = create_app(root, make_report(root, embedding_cache))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/", root
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def browser() -> Iterator[object]:
    _browser_or_skip()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(condition, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def _unlabeled_sneakers(browser) -> list[str]:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        tiles = browser.find_elements(By.CSS_SELECTOR, "main > section.group figure.tile")
        paths = [t.get_attribute("data-path") for t in tiles]
    except StaleElementReferenceException:
        return []
    return [p for p in paths if p.startswith("sneaker-")]


def _retry(action, tries: int = 5) -> None:
    from selenium.common.exceptions import StaleElementReferenceException

    for attempt in range(tries):
        try:
            action()
            return
        except StaleElementReferenceException:
            if attempt == tries - 1:
                raise
            time.sleep(0.2)


def test_select_a_group_assign_it_then_a_range_by_key_and_undo(served, browser) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, root = served
    browser.get(url)
    sections = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "main > section.group"))
    assert len(sections) == 3
    trousers = next(
        s
        for s in sections
        if s.find_element(By.CSS_SELECTOR, "figure.tile")
        .get_attribute("data-path")
        .startswith("trouser-")
    )
    trousers.find_element(By.CSS_SELECTOR, "button.select-group").click()
    assert browser.find_element(By.ID, "count").text == "12 selected"
    browser.find_element(By.ID, "new-class").send_keys("pants", Keys.ENTER)
    _wait(lambda: len(list((root / "pants").glob("*.png"))) == 12)
    assert sorted(p.name for p in (root / "pants").glob("*.json")) == [
        f"trouser-{i:03d}.json" for i in range(12)
    ]
    assert not list(root.glob("trouser-*"))
    _wait(lambda: "12 images → pants" in browser.find_element(By.ID, "status").text)

    # A shift-click range of three sneakers, assigned with key 1 (the first class: bag). The
    # page re-renders when it sees a change (polling): tiles are looked up when clicked.
    def tile(path: str):
        return browser.find_element(By.CSS_SELECTOR, f'main > section.group [data-path="{path}"]')

    picked = _wait(lambda: _unlabeled_sneakers(browser))[:3]
    _retry(lambda: tile(picked[0]).click())
    _retry(
        lambda: (
            ActionChains(browser)
            .key_down(Keys.SHIFT)
            .click(tile(picked[2]))
            .key_up(Keys.SHIFT)
            .perform()
        )
    )
    assert browser.find_element(By.ID, "count").text == "3 selected"
    browser.find_element(By.TAG_NAME, "body").send_keys("1")
    _wait(lambda: all((root / "bag" / p).is_file() for p in picked))
    _wait(lambda: "3 images → bag" in browser.find_element(By.ID, "status").text)
    browser.find_element(By.TAG_NAME, "body").send_keys("u")
    _wait(lambda: all((root / p).is_file() for p in picked))
    assert len(list((root / "pants").glob("*.png"))) == 12  # only the last change undone


def test_keys_pressed_while_a_change_is_saving_wait_their_turn(served, browser) -> None:
    """Keys 1 then u in one burst: the undo comes while the label is still being saved and the
    page reloaded; it runs after it (it used to be dropped), so the files end where they were."""
    from selenium.webdriver.common.by import By

    url, root = served
    browser.get(url)
    picked = _wait(lambda: _unlabeled_sneakers(browser))[:2]
    for path in picked:
        _retry(
            lambda path=path: browser.find_element(
                By.CSS_SELECTOR, f'main > section.group [data-path="{path}"]'
            ).click()
        )
    assert browser.find_element(By.ID, "count").text == "2 selected"
    browser.find_element(By.TAG_NAME, "body").send_keys("1u")
    _wait(lambda: "undone" in browser.find_element(By.ID, "status").text)
    assert all((root / p).is_file() for p in picked)
    assert not any((root / "bag" / p).exists() for p in picked)
    log = [json.loads(line) for line in (root / ".kestrel-label.log").read_text().splitlines()]
    assert [("undo" in r) for r in log] == [False, True]  # labelled, then undone: both ran

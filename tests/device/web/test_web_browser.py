"""The page in a real browser: headless Debian Chromium driven by Selenium loads ``/`` while the
daemon runs on a video (conftest.py), sees the camera's live picture load and the label follow
the scene from the cat to the coffee (or back). A screenshot is kept as a test artifact: under
the test's tmp dir, and in ``$KESTREL_TEST_ARTIFACTS`` when set.

Selenium is a dev extra: without it (the Raspberry Pi profile's venv) the test skips. Without
Chromium it skips too, except in CI (``CI=true``), where it fails. Nothing is downloaded: the
browser and its driver are the Debian packages ``chromium`` and ``chromium-driver``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from web_helpers import TOKEN

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the dev extra)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = "Debian chromium and chromium-driver are not installed (deploy/test.sh installs them)"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true but {MISSING}")
        pytest.skip(MISSING)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1700",
    ):
        options.add_argument(flag)
    # An explicit driver: Selenium Manager (which would download one) is never asked.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def keep_screenshot(driver: webdriver.Chrome, tmp_path: Path) -> Path:
    path = tmp_path / "kestrel-web-page.png"
    assert driver.save_screenshot(str(path)), "no screenshot"
    folder = os.environ.get("KESTREL_TEST_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(folder) / path.name)
    return path


def test_page_shows_the_live_picture_and_the_label_follows_the_scene(web_daemon, browser, tmp_path):
    browser.get(web_daemon.url("/"))
    wait = WebDriverWait(browser, 20, poll_frequency=0.1)
    picture_size = "const i = document.getElementById('stream-door'); return i && i.naturalWidth"
    assert wait.until(lambda d: d.execute_script(picture_size)) == 320  # an MJPEG frame came
    label = browser.find_element(By.ID, "label-door")
    path = browser.find_element(By.CSS_SELECTOR, "#camera-door .hierarchy")
    seen: set[str] = set()

    def both_scenes(_: object) -> bool:
        if label.text == "espresso":
            seen.add("coffee")
        elif "cat" in path.text.split(" › "):
            seen.add("cat")
        return seen == {"cat", "coffee"}

    wait.until(both_scenes, f"the label did not follow the scene (saw {seen})")
    assert browser.find_element(By.ID, "connection").text == "live"
    model = browser.find_element(By.CSS_SELECTOR, "#camera-door .model-summary").text
    assert "imagenet-efficientnet-lite0" in model and "1000 labels" in model
    assert browser.find_elements(By.CSS_SELECTOR, "#events li img")  # events with snapshots
    # Per-stage timings from the stats payload (the invoke row appears with the first stats).
    wait.until(lambda d: "invoke" in d.find_element(By.CSS_SELECTOR, "#camera-door .timings").text)
    shot = keep_screenshot(browser, tmp_path)
    assert shot.stat().st_size > 10_000
    assert TOKEN in browser.current_url  # the page passed its token on to the API

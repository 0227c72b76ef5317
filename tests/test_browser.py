"""The web page of tools/serve.py (and the report of tools/report.py) in a real browser: headless Chromium.

Debian's ``chromium`` and ``chromium-driver`` are installed by ``make setup`` (the Makefile's ``browser``
target). Without them this test fails, naming what to install, rather than skipping unnoticed; only
``GLUON_FASHION_NO_BROWSER=1`` (``make NO_BROWSER=1 test``) skips it on purpose.
"""
from __future__ import annotations

import os
import shutil
import signal

import pytest

from _serve_helpers import free_port, photo_bytes, start_server, tiny_mask_rcnn

pytestmark = pytest.mark.slow


def _chromium_paths():
    if os.environ.get("GLUON_FASHION_NO_BROWSER"):
        pytest.skip("GLUON_FASHION_NO_BROWSER is set: no browser test")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail("the browser test needs Debian's chromium and chromium-driver (found: chromium="
                    f"{browser}, chromedriver={driver}); run 'make setup' as root or 'apt-get install -y chromium "
                    "chromium-driver', or set GLUON_FASHION_NO_BROWSER=1 to skip this test")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium session driven through chromedriver (no network: selenium is given both paths)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _script_errors(driver) -> list:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _overlay_pixels(driver) -> int:
    """How many pixels of the overlay canvas hold a mask colour (alpha > 0)."""
    return driver.execute_script("""
        const c = document.getElementById('overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n += 1;
        return n;""")


def _set_threshold(driver, value: float) -> None:
    """Move the slider as a user's drag does: a new value, then the input event the page listens to."""
    driver.execute_script("""
        const s = document.getElementById('threshold');
        s.value = arguments[0];
        s.dispatchEvent(new Event('input', {bubbles: true}));""", value)


def _rows(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#instances tbody tr")


def test_page_uploads_draws_and_filters(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    weights = tiny_mask_rcnn(tmp_path / "ckpt")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(photo_bytes(240, 320, seed=7))
    port = free_port()
    server = start_server(weights, port, "--score-threshold", "0")
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                         == "idle")
        _set_threshold(browser, 0)
        browser.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(browser, 120).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                          in ("ready", "error"))
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready", \
            browser.find_element(By.ID, "status").text
        scores = sorted(browser.execute_script("return window.gf.items.map(it => it.score)"))
        assert len(scores) > 2
        assert browser.execute_script("return [document.getElementById('overlay').width, "
                                      "document.getElementById('overlay').height]") == [320, 240]
        all_rows, all_pixels = len(_rows(browser)), _overlay_pixels(browser)
        assert all_rows == len(scores) and all_pixels > 0
        legend = browser.find_elements(By.CSS_SELECTOR, "#legend li")
        assert legend and all(item.find_element(By.CSS_SELECTOR, ".swatch") for item in legend)
        browser.save_screenshot(str(tmp_path / "page_all.png"))

        cut = scores[len(scores) // 2]
        _set_threshold(browser, cut)
        assert browser.find_element(By.ID, "threshold-value").text == f"{cut:.2f}"
        above = [s for s in scores if s >= float(browser.execute_script("return window.gf.threshold"))]
        rows = _rows(browser)
        assert 0 < len(rows) == len(above) < all_rows
        assert all(float(row.get_attribute("data-score")) >= cut - 0.005 for row in rows)
        assert 0 < _overlay_pixels(browser) <= all_pixels

        # Untick the class of the top row: its instances leave the table, the others stay.
        hidden = rows[0].get_attribute("data-class")
        browser.find_element(By.ID, f"class-{hidden}").click()
        left = _rows(browser)
        assert all(row.get_attribute("data-class") != hidden for row in left)
        assert len(left) == sum(1 for s, c in browser.execute_script(
            "return window.gf.items.map(it => [it.score, String(it.key)])") if s >= cut and c != hidden)
        browser.save_screenshot(str(tmp_path / "page_filtered.png"))
        assert (tmp_path / "page_filtered.png").stat().st_size > 1000
        assert _script_errors(browser) == []
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.communicate(timeout=60)
        finally:
            if server.poll() is None:  # never leave a server behind, even when it failed to stop
                server.kill()
                server.communicate()
    assert server.returncode == 0


def test_report_renders_offline_without_script_errors(browser, tmp_path):
    """A report (ground truth given back as results, so every table has content) opened from disk."""
    import json

    from selenium.webdriver.common.by import By

    from gluon_fashion.convert import convert_imaterialist
    from gluon_fashion.report import from_results, write_report
    from gluon_fashion.synthetic import make_sample_dataset

    _chromium_paths()
    root = tmp_path / "sample"
    make_sample_dataset(root, num_train=6, num_test=1, seed=3, min_size=128, max_size=200, progress=False)
    convert_imaterialist(root, val_num=3, num_workers=1, progress=False)
    gt_path = root / "annotations" / "rle_instances_val.json"
    gt = json.loads(gt_path.read_text())
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9, "bbox": a["bbox"],
                "segmentation": a["segmentation"]} for a in gt["annotations"]]
    (tmp_path / "results.json").write_text(json.dumps(results))
    report = tmp_path / "report.html"
    write_report(from_results(gt_path, tmp_path / "results.json", root / "val"), report, num_examples=1,
                 progress=False)
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(report.as_uri())
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"  # the script ran to its end
    sizes = browser.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    assert len(sizes) == 5 and all(done and width > 0 for done, width in sizes)  # PR plot, worst and best pairs
    header = browser.find_element(By.CSS_SELECTOR, "#per-class th:nth-child(3)")
    header.click()
    header.click()  # descending by ground-truth count
    counts = [int(td.text) for td in browser.find_elements(By.CSS_SELECTOR, "#per-class tbody td:nth-child(3)")]
    assert counts == sorted(counts, reverse=True) and counts[0] > 0
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert _script_errors(browser) == []

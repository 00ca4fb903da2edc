"""End to end in headless Chromium: the app on a real demo run, as the docs show it.

Trains a short demo on the bundled CIFAR-10-N images, draws and answers a verified sample
from the known truth, serves `gwa-diag app` and visits the Overview, Browse (which must open
on the default ranking, most suspicious first), the Relabel queue and the Audit page (which
must show the interval the analysis computes). Each page is photographed; with
GWA_DIAG_SCREENSHOT=1 the pictures replace those under docs/images/, so the docs show the
app as it is.

    GWA_DIAG_SCREENSHOT=1 python -m pytest -m browser tests/test_docs_screenshots.py -q
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.browser

from test_app_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, _IDLE, _OVERVIEW_READY, _serve, sync_api  # noqa: E402

from gwa_diag.analysis.pipeline import analyze  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "docs" / "images"
#: The pictures the docs use, each taken below (tests/test_docs_commands.py checks the pages
#: use no other).
SHOTS = ("overview.png", "browse.png", "queue.png", "audit.png")
EPOCHS, AUDIT_N = 10, 200
_MAIN = "document.querySelector('[data-testid=stMain]')?.innerText || ''"


def _gwa(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "gwa_diag", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("docs") / "demo"
    _gwa("demo", "--epochs", str(EPOCHS), "--quiet", "--out", str(run))
    _gwa("audit", str(run), "--n", str(AUDIT_N), "--seed", "7")
    sheet = pd.read_csv(run / "audit" / "sheet.csv")
    truth = pd.read_parquet(run / "labels.parquet").set_index("sample_id")["clean_label"]
    sheet["verified_label"] = truth.loc[sheet["sample_id"]].to_numpy()
    sheet.to_csv(run / "answers.csv", index=False)
    _gwa("audit", str(run), "--answers", str(run / "answers.csv"))
    return run


def _wait_text(page, text: str) -> None:
    page.wait_for_function(f"(t) => {_IDLE} && ({_MAIN}).includes(t)", arg=text, timeout=TIMEOUT_MS)


def test_the_docs_pictures_of_a_demo_run(demo_run, tmp_path):
    analysis = analyze(demo_run)
    top = int(analysis.ranking.index[0])  # indexed by sample_id, most suspicious first
    count = analysis.audit.count
    with _serve(demo_run, tmp_path / "server.log") as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(url + "/")
            page.wait_for_function(_OVERVIEW_READY, timeout=TIMEOUT_MS)
            page.screenshot(path=str(tmp_path / "overview.png"), full_page=False)

            page.goto(url + "/?page=browse")
            _wait_text(page, "Page 1 of")
            first = page.locator(".gwa-cell").first
            assert int(first.get_attribute("data-id")) == top  # Browse opens on the default ranking
            first.click()
            _wait_text(page, f"Sample {top}")
            page.wait_for_function("""() => document.querySelectorAll('[data-testid=stMain] [data-testid=stVegaLiteChart] canvas,'
                + '[data-testid=stMain] [data-testid=stVegaLiteChart] svg').length >= 1""", timeout=TIMEOUT_MS)
            page.screenshot(path=str(tmp_path / "browse.png"), full_page=False)

            page.goto(url + "/?page=queue")
            _wait_text(page, "Relabel queue")
            page.screenshot(path=str(tmp_path / "queue.png"), full_page=False)

            page.goto(url + "/?page=audit")
            _wait_text(page, f"{count.estimate:,.0f} (95% interval {count.low:,.0f}-{count.high:,.0f})")
            page.screenshot(path=str(tmp_path / "audit.png"), full_page=False)
        finally:
            browser.close()
    for name in SHOTS:
        assert (tmp_path / name).stat().st_size > 10_000, name
        if os.environ.get("GWA_DIAG_SCREENSHOT") == "1":
            IMAGES.mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / name, IMAGES / name)

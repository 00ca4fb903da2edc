"""Checks run by .ci/check_install.sh on a built distribution and on an installed copy.

    python .ci/install_checks.py wheel-contents DIST.whl REPO
    python .ci/install_checks.py first-page URL SCREENSHOT.png

Standard library only, except `first-page`, which needs Playwright (the dev environment's);
neither subcommand imports gwa_diag, so running them with the dev environment's Python does
not hide a missing file in the installed copy.
"""

from __future__ import annotations

import sys
import time
import urllib.request
import zipfile
from pathlib import Path

# The files a command needs at run time that are not Python modules of gwa_diag itself:
# `gwa-diag app` serves app/streamlit_app.py and imports its views; `gwa-diag demo` and
# `sample_data()` read the bundled CIFAR-10-N subset; the licences travel with the data.
REQUIRED_IN_WHEEL = [
    "gwa_diag/py.typed",
    "gwa_diag/app/__init__.py",
    "gwa_diag/app/streamlit_app.py",
    "gwa_diag/app/views/__init__.py",
    "gwa_diag/sample_data/__init__.py",
    "gwa_diag/sample_data/cifar10n_subset.npz",
    "gwa_diag/sample_data/README.md",
    "gwa_diag/sample_data/LICENSE-CIFAR-10-N.md",
]
REQUIRED_IN_DIST_INFO = ["licenses/LICENSE", "licenses/sample_data/LICENSE-CIFAR-10-N.md", "entry_points.txt"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# The app has finished its script run, shows the Overview headline, and no part of the page
# failed (Streamlit draws an exception box but keeps rendering the rest of the page).
OVERVIEW_RENDERED = """() => {
    const state = document.querySelector('[data-test-script-state]');
    return state && state.getAttribute('data-test-script-state') === 'notRunning'
        && document.body.innerText.includes('GWA-selected epoch');
}"""
RENDER_TIMEOUT_MS = 120_000


def wheel_contents(wheel: Path, repo: Path) -> int:
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
    required = list(REQUIRED_IN_WHEEL) + [f"{dist_info}/{n}" for n in REQUIRED_IN_DIST_INFO]
    # Every module of the source tree must be installed, under its installed name: a view or
    # subpackage missing from pyproject's package list would only fail when a page opens.
    for src, dest in (("gwa_diag", "gwa_diag"), ("app", "gwa_diag/app"), ("sample_data", "gwa_diag/sample_data")):
        for path in sorted((repo / src).rglob("*.py")):
            if "__pycache__" not in path.parts:
                required.append(f"{dest}/{path.relative_to(repo / src).as_posix()}")
    required = sorted(set(required))  # the fixed list and the walk overlap (the __init__.py files)
    missing = [n for n in required if n not in names]
    # Nothing outside the package and its metadata: no tests/, bench/ or a stray top-level app/.
    stray = sorted(n for n in names if not (n.startswith("gwa_diag/") or n.startswith(dist_info + "/")))
    print(f"{wheel.name}: {len(names)} files, {len(required)} required ones checked")
    for label, items in (("missing", missing), ("outside gwa_diag/", stray)):
        for n in items:
            print(f"  {label}: {n}", file=sys.stderr)
    return 1 if missing or stray else 0


def first_page(url: str, screenshot: Path) -> int:
    # The server answers plain HTTP first: a 200 for the page and Streamlit's health route.
    for route in ("", "_stcore/health"):
        with urllib.request.urlopen(url.rstrip("/") + "/" + route, timeout=30) as resp:
            if resp.status != 200:
                print(f"GET /{route}: HTTP {resp.status}", file=sys.stderr)
                return 1
    print(f"HTTP 200 from {url} and its health route")

    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.perf_counter()
            page.goto(url)
            try:
                page.wait_for_function(OVERVIEW_RENDERED, timeout=RENDER_TIMEOUT_MS, polling=250)
            except PlaywrightError as exc:
                page.screenshot(path=str(screenshot), full_page=True)
                print(f"the first page did not render: {exc}\n--- page text ---\n{page.inner_text('body')[:3000]}",
                      file=sys.stderr)
                return 1
            elapsed = time.perf_counter() - t0
            page.screenshot(path=str(screenshot), full_page=True)
            errors = page.locator("[data-testid=stException]")
            if errors.count():
                print(f"the first page shows an error:\n{errors.first.inner_text()[:3000]}", file=sys.stderr)
                return 1
        finally:
            browser.close()
    print(f"first page (Overview) rendered in headless Chromium in {elapsed:.1f} s")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "wheel-contents":
        return wheel_contents(Path(argv[1]), Path(argv[2]))
    if len(argv) == 3 and argv[0] == "first-page":
        return first_page(argv[1], Path(argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

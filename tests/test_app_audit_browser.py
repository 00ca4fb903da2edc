"""End to end in headless Chromium: the Audit page of `gwa-diag app` on a small run.

Draws an audit of 30 in the page, answers 20 samples with the keyboard (Enter: the label
is right; a digit: the right class), reloads and finds every answer on disk and the
progress shown, answers on until every stratum has one and finds the interval, and checks
on every sample shown that the page says nothing of what the model thinks of it.

    python -m pytest -m browser tests/test_app_audit_browser.py -q -s
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.browser

from test_app_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, _IDLE, _serve, sync_api  # noqa: E402

from gwa_diag.analysis.audit import latest_answers, read_design  # noqa: E402
from gwa_diag.analysis.pipeline import analyze  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from synthetic import CLASS_NAMES, write_synthetic_run  # noqa: E402

N_SAMPLES, N_DRAWN, N_KEYED = 60, 30, 20
HINTS = ("score", "rank", "suggest", "p_wrong", "probab", "suspic", "alignment", "margin")
# The main area's text without its buttons (the class buttons list every class) and toasts
# (the reviewer's own last answer).
_FACTS = """() => {
    const main = document.querySelector('[data-testid=stMain]').cloneNode(true);
    main.querySelectorAll('button, [data-testid=stToast]').forEach(e => e.remove());
    return main.textContent;
}"""
_MAIN = "document.querySelector('[data-testid=stMain]')?.innerText || ''"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    return write_synthetic_run(tmp_path_factory.mktemp("audit_run") / "run", samples=N_SAMPLES, epochs=4,
                               noise_rate=0.3, seed=5)


def _wait_text(page, text: str) -> None:
    page.wait_for_function(f"(t) => {_IDLE} && ({_MAIN}).includes(t)", arg=text, timeout=TIMEOUT_MS)


def _shown(page) -> int:
    found = re.search(r"· id (\d+)", page.evaluate(f"() => {_MAIN}"))
    assert found, page.evaluate(f"() => {_MAIN}")
    return int(found.group(1))


def _check_blind(page, sample: int, given: int, ranking: pd.DataFrame) -> None:
    """Nothing beside the image tells what the model thinks: no hint word, no suggested class."""
    facts = page.evaluate(_FACTS)
    main = page.evaluate(f"() => {_MAIN}")
    for word in HINTS:
        assert word not in main.lower(), (word, main)
    suggested = int(ranking.loc[sample, "suggested_label"])
    assert f"Given label: {given} {CLASS_NAMES[given]}" in facts
    if suggested != given:
        assert CLASS_NAMES[suggested] not in facts, facts


def _answer_by_key(page, truth: pd.Series, given: pd.Series, ranking: pd.DataFrame, done: int) -> int:
    """Answer the sample on screen with its true label by keyboard; returns its id."""
    sample = _shown(page)
    _check_blind(page, sample, int(given[sample]), ranking)
    clean = int(truth[sample])
    # Keys go to the page, not to a focused widget (Enter on a focused button would press it).
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.keyboard.press("Enter" if clean == int(given[sample]) else str(clean))
    _wait_text(page, f"{done + 1} of {N_DRAWN} answered")
    return sample


def test_audit_by_keyboard_survives_a_reload_and_shows_the_interval(small_run, tmp_path):
    run = small_run
    truth = pd.read_parquet(run / "labels.parquet").set_index("sample_id")["clean_label"]
    ranking = analyze(run).ranking
    with _serve(run, tmp_path / "server.log") as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url + "/?page=audit")
            _wait_text(page, "Draw the sample")
            size = page.locator(".st-key-audit_n input")
            size.fill(str(N_DRAWN))
            size.press("Tab")
            page.wait_for_function(f"() => {_IDLE}", timeout=TIMEOUT_MS)
            page.get_by_role("button", name="Draw the sample").click()
            _wait_text(page, f"0 of {N_DRAWN} answered")
            design = read_design(run)
            assert design is not None and design.n == N_DRAWN
            given = design.frame["given"]
            page.screenshot(path=str(tmp_path / "audit_first.png"), full_page=True)
            assert "Enter" in page.evaluate(f"() => {_MAIN}")  # the key map is on the page

            strata = set(design.frame["stratum"])
            interval = re.compile(r"95% interval \d")
            keyed: list[int] = []
            for done in range(N_KEYED):
                keyed.append(_answer_by_key(page, truth, given, ranking, done))
                # The interval is there exactly when every stratum has an answer (never after the
                # first answers: 5 strata).
                complete = set(design.frame.loc[keyed, "stratum"]) == strata
                text = page.evaluate(f"() => {_MAIN}")
                assert bool(interval.search(text)) == complete, (keyed, text)
                assert complete or "without an answer" in text
            assert len(set(keyed)) == N_KEYED
            on_disk = latest_answers(run)["verified_label"]
            assert on_disk.to_dict() == {s: int(truth[s]) for s in keyed}

            # A reload is a new session: the answers and the progress come back from disk,
            # and the page goes on with a sample without an answer.
            page.reload()
            _wait_text(page, f"{N_KEYED} of {N_DRAWN} answered")
            assert _shown(page) not in keyed
            assert latest_answers(run)["verified_label"].to_dict() == on_disk.to_dict()
            page.screenshot(path=str(tmp_path / "audit_reloaded.png"), full_page=True)

            answered = set(design.frame.loc[keyed, "stratum"])
            if answered != strata:
                assert not interval.search(page.evaluate(f"() => {_MAIN}"))
                assert "without an answer" in page.evaluate(f"() => {_MAIN}")
            done = N_KEYED
            while answered != strata:
                sample = _answer_by_key(page, truth, given, ranking, done)
                answered.add(int(design.frame.loc[sample, "stratum"]))
                done += 1
            expected = analyze(run).audit.count
            _wait_text(page, f"{expected.estimate:,.0f} (95% interval {expected.low:,.0f}-{expected.high:,.0f})")
            assert interval.search(page.evaluate(f"() => {_MAIN}"))
            _check_blind(page, _shown(page), int(given[_shown(page)]), ranking)
            page.screenshot(path=str(tmp_path / "audit_interval.png"), full_page=True)
        finally:
            browser.close()

"""gwa-diag app: explore one run directory in the browser.

    gwa-diag app RUN                      (or)
    streamlit run "$(python -c 'from gwa_diag.cli.app import app_script; print(app_script())')" -- RUN
    (or the run in the GWA_DIAG_RUN environment variable)

Pages: Overview (GWA curve, early stopping, histogram, metadata), Browse (every image,
most suspicious first), Simple to complex, Detection (with ground truth), Relabel queue and
Audit (verify a drawn sample of labels, blind). The app only reads the run directory, except
for relabel decisions (RUN/relabels/), the CSV export (RUN/analysis/relabels.csv) and the
audit (RUN/audit/: the drawn sample and its answers).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import streamlit as st

from gwa_diag.analysis.phase import WINDOWS
from gwa_diag.app.views import audit, browse, detection, overview, relabel_queue, simple
from gwa_diag.app.views.jobs import prefetch
from gwa_diag.app.views.state import RunState, load_run_state, run_error_message
from gwa_diag.store import AnalysisError

PAGES: dict[str, tuple[str, Callable[[RunState, str], None]]] = {
    "overview": ("Overview", overview.render),
    "browse": ("Browse", browse.render),
    "simple": ("Simple to complex", simple.render),
    "detection": ("Detection", detection.render),
    "queue": ("Relabel queue", relabel_queue.render),
    "audit": ("Audit", audit.render),
}
ENV_RUN = "GWA_DIAG_RUN"
AUTO_REFRESH_S = 10


def run_argument(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> str | None:
    """The run directory given on the command line (``streamlit run streamlit_app.py -- RUN``
    leaves ``sys.argv == [script, RUN]``), else the ``GWA_DIAG_RUN`` environment variable."""
    argv = sys.argv if argv is None else argv
    environ = dict(os.environ) if environ is None else environ
    if len(argv) > 1 and Path(argv[0]).name == Path(__file__).name and argv[1].strip():
        return argv[1]
    value = environ.get(ENV_RUN, "").strip()
    return value or None


def choose_run(default: str | None) -> str | None:
    """Sidebar field with the run directory (pre-filled from the command line)."""
    value = st.sidebar.text_input("Run directory", value=default or "", key="run_path",
                                  placeholder="path/to/run (the --out of gwa-diag train)")
    return value.strip() or None


def choose_page() -> str:
    """Sidebar navigation; the page is kept in the URL (?page=...) so reloads stay on it."""
    if "page" not in st.session_state:
        requested = st.query_params.get("page")
        st.session_state["page"] = requested if requested in PAGES else next(iter(PAGES))
    page = str(st.sidebar.radio("Page", list(PAGES), format_func=lambda k: PAGES[k][0], key="page"))
    if st.query_params.get("page") != page:
        st.query_params["page"] = page
    return page


def choose_window() -> str:
    return str(st.sidebar.selectbox("Scores averaged over", list(WINDOWS), key="window",
                                    help="\n".join(f"- {k}: {v}" for k, v in WINDOWS.items())))


@st.fragment(run_every=AUTO_REFRESH_S)
def _watch_for_new_epochs(path: str, generation: str) -> None:
    """While training writes the run, reload the app when another epoch completes."""
    try:
        now = load_run_state(path).generation
    except Exception:  # noqa: BLE001 - a half-moved run: try again at the next tick
        return
    if now != generation:
        st.rerun(scope="app")


def status_banner(state: RunState) -> None:
    if state.finished:
        return
    planned = f" of {state.planned_epochs}" if state.planned_epochs else ""
    st.info(
        f"Training in progress: {len(state.completed)}{planned} epochs complete. Only complete epochs are shown; "
        f"the app reloads when another one finishes (checked every {AUTO_REFRESH_S} s, or press Refresh).",
        icon="⏳",
    )


def _sidebar_status(state: RunState) -> None:
    st.sidebar.caption(
        f"{state.meta.get('status', '?')} · {len(state.completed)} complete epoch(s) · "
        f"{state.num_samples or '?'} samples · {state.num_classes or '?'} classes"
        + (" · ground truth" if state.has_truth else "")
    )
    st.sidebar.button("Refresh", key="refresh", help="Re-read the run directory", width="stretch")


def _render_page(page: str, state: RunState, window: str) -> None:
    title, render = PAGES[page]
    st.title(title)
    try:
        render(state, window)
    except AnalysisError as exc:
        st.warning(str(exc))
    except (OSError, ValueError) as exc:
        # Files that changed under us (a run being rewritten, moved images): a message, not a traceback.
        st.error(f"Could not read this run: {run_error_message(exc)}. Press Refresh to try again.")


def main() -> None:
    # A material icon, not an emoji: the emoji table costs 0.3 s to import on the first run.
    st.set_page_config(page_title="gwa-diag", page_icon=":material/label:", layout="wide")
    st.sidebar.title("gwa-diag")
    path = choose_run(run_argument())
    page = choose_page()
    if path is None:
        st.title(PAGES[page][0])
        st.info("Give a run directory: `gwa-diag app RUN`, the sidebar field, or the GWA_DIAG_RUN variable.")
        return
    try:
        state = load_run_state(path)
    except Exception as exc:  # noqa: BLE001 - RunDirError, missing path, unreadable files
        st.title(PAGES[page][0])
        st.error(f"Cannot open {path}: {run_error_message(exc)}")
        return
    window = choose_window()
    _sidebar_status(state)
    if state.in_progress:
        with st.sidebar:
            _watch_for_new_epochs(state.path, state.generation)
    status_banner(state)
    _render_page(page, state, window)
    # After the page: the summaries and images then load while the browser draws it, and
    # are ready by the time another page needs them.
    prefetch(state, window)


if __name__ == "__main__":
    main()

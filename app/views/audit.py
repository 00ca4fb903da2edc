"""Audit: a person verifies the labels of the run's drawn sample, one image at a time, and
the count of wrong labels with its 95% interval updates as the answers come in
(``gwa_diag.analysis.audit``).

What the reviewer sees is the image and the label it was given, nothing else about the
sample: no score, no position in any ordering, no suggested class and no probability. A
reviewer who sees what the model thinks agrees with it more often, and the interval is only
as good as answers given blind. The samples come in the sheet's fixed random order
(``sheet_frame``), so the order of the pages carries no hint either.

Every answer is one new file under ``RUN/audit/answers/`` the moment a button or key is
pressed (``record_answers``: append-only, the latest answer per sample wins), so a reload, a
crash or a second tab loses nothing; where a reviewer is comes from the answers on disk,
never from the browser session alone.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import streamlit as st

from gwa_diag.analysis.audit import Design, draw_sample, latest_answers, read_design, record_answers, sheet_frame
from gwa_diag.analysis.options import AnalysisOptions
from gwa_diag.checks import InputError

from .images import thumbnail
from .jobs import open_dataset
from .results import analysis
from .state import RunState, audit_key
from .widgets import session_id

__all__ = ["render", "current_sample", "step_back", "step_forward", "DEFAULT_N", "KEY_CLASSES", "IMAGE_SIZE"]

#: Samples drawn when the page draws a new audit: what ``gwa-diag audit`` suggests (enough
#: for an interval of about a tenth of the count on a good ranking; bench/audit.py).
DEFAULT_N = 200
#: Classes with a digit key: 0-9.
KEY_CLASSES = 10
IMAGE_SIZE = 384
CLASS_COLUMNS = 3  # class buttons per row: room for a name like "automobile (given)"
AT_KEY = "audit_at"            # the sample revisited (None: the next one without an answer)
SKIPPED_KEY = "audit_skipped"  # samples skipped in this session (shown again once nothing else is left)
SAVED_KEY = "audit_saved"
ERROR_KEY = "audit_error"


# --------------------------------------------------------------------------------------
# where the reviewer is: pure functions of the order, the answers on disk and the session
# --------------------------------------------------------------------------------------


def current_sample(order: Sequence[int], answered: set[int], at: int | None, skipped: set[int]) -> int | None:
    """The sample to show: the one revisited (``at``), else the first without an answer in
    the sheet's order that was not skipped, else the first skipped one still without an
    answer; None when every drawn sample has an answer."""
    if at is not None and at in order:
        return int(at)
    unanswered = [int(s) for s in order if int(s) not in answered]
    fresh = [s for s in unanswered if s not in skipped]
    return (fresh or unanswered or [None])[0]


def step_back(order: Sequence[int], current: int | None, answered: set[int]) -> int | None:
    """The sample before ``current`` in the sheet's order (to look at or change an answer);
    from the end (``current`` None), the last answered one."""
    ids = [int(s) for s in order]
    if not ids:
        return None
    if current is None or current not in ids:
        done = [s for s in ids if s in answered]
        return done[-1] if done else None
    return ids[max(ids.index(current) - 1, 0)]


def step_forward(order: Sequence[int], current: int, answered: set[int]) -> int | None:
    """The sample after ``current`` while it has an answer (going back over the answers);
    None once the next one has none: back to answering."""
    ids = [int(s) for s in order]
    i = ids.index(current) + 1 if current in ids else len(ids)
    return ids[i] if i < len(ids) and ids[i] in answered else None


# --------------------------------------------------------------------------------------
# reading the audit (cached per audit state: a new answer or a grown sample is a new entry)
# --------------------------------------------------------------------------------------


@st.cache_resource(max_entries=4, show_spinner=False)
def _design(path: str, key: tuple[int, int, str]) -> Design | None:
    return read_design(path)


@st.cache_data(max_entries=4, show_spinner=False)
def _order(path: str, design_mtime: int) -> list[int]:
    """The drawn samples in the sheet's random order (fixed by the audit's seed)."""
    design = read_design(path)
    return [] if design is None else [int(s) for s in sheet_frame(path, design)["sample_id"]]


@st.cache_data(max_entries=4, show_spinner=False)
def _answers(path: str, key: tuple[int, int, str]) -> pd.Series:
    """The latest answer per sample (verified_label by sample_id)."""
    return latest_answers(path)["verified_label"]


# --------------------------------------------------------------------------------------
# callbacks: write first, then move on (they only touch disk and session state)
# --------------------------------------------------------------------------------------


def _answer(path: str, sample_id: int, label: int, given: int) -> None:
    try:
        record_answers(path, pd.DataFrame({"sample_id": [int(sample_id)], "verified_label": [int(label)]}),
                       source="app", session=session_id())
    except (InputError, ValueError, OSError) as exc:
        st.session_state[ERROR_KEY] = f"Answer not saved for sample {sample_id}: {exc}"
        return
    st.session_state.pop(ERROR_KEY, None)
    st.session_state[AT_KEY] = None
    st.session_state.setdefault(SKIPPED_KEY, set()).discard(int(sample_id))
    st.session_state[SAVED_KEY] = (int(sample_id), int(label), int(label) == int(given))


def _back(order: list[int], current: int | None, answered: set[int]) -> None:
    st.session_state[AT_KEY] = step_back(order, current, answered)


def _forward(order: list[int], current: int, answered: set[int]) -> None:
    if current not in answered and st.session_state.get(AT_KEY) is None:
        # At the frontier: skip this one for now (it comes back once nothing else is left).
        st.session_state.setdefault(SKIPPED_KEY, set()).add(int(current))
        return
    st.session_state[AT_KEY] = step_forward(order, current, answered)


def _draw(path: str, n_key: str, generation: str) -> None:
    n = int(st.session_state.get(n_key) or DEFAULT_N)
    try:
        existing = read_design(path)
        # A new design stratifies the default ranking: the cached analysis of it, not a second read.
        ranked = None if existing is not None else analysis(path, generation, AnalysisOptions())
        draw_sample(path, n, analysis=ranked)
    except (InputError, ValueError, OSError) as exc:
        st.session_state[ERROR_KEY] = f"Could not draw the sample: {exc}"
        return
    st.session_state.pop(ERROR_KEY, None)
    st.session_state[AT_KEY] = None


# --------------------------------------------------------------------------------------
# the page's parts
# --------------------------------------------------------------------------------------


def _draw_form(state: RunState) -> None:
    """No audit yet: what it is for, the command, and a button that draws one here."""
    total = int(state.num_samples or DEFAULT_N)
    st.info(
        "No sample to verify yet. A few hundred labels checked by a person give the number of wrong labels "
        "with a 95% interval (and tell the relabel queue when to stop). Draw a stratified random sample "
        f"here, or on the command line: `gwa-diag audit {state.path} --n {DEFAULT_N}` (it also writes a sheet "
        "a labelling team can fill in anywhere)."
    )
    c1, c2 = st.columns([1, 2], vertical_alignment="bottom")
    c1.number_input("Samples to verify", min_value=1, max_value=max(total, 1), value=min(DEFAULT_N, total),
                    step=50, key="audit_n")
    c2.button("Draw the sample", key="audit_draw", type="primary", on_click=_draw,
              args=(state.path, "audit_n", state.generation))


def _grow_form(state: RunState, design: Design) -> None:
    total = int(state.num_samples or len(design.frame))
    if design.n >= total:
        return
    with st.expander("Verify more samples"):
        st.caption("Growing the sample keeps every answer already given and adds the next samples of each "
                   f"stratum (as `gwa-diag audit {state.path} --n N`).")
        c1, c2 = st.columns([1, 2], vertical_alignment="bottom")
        c1.number_input("Samples in all", min_value=design.n + 1, max_value=total,
                        value=min(design.n + 100, total), step=50, key="audit_grow_n")
        c2.button("Grow the sample", key="audit_grow", on_click=_draw, args=(state.path, "audit_grow_n", state.generation))


def _progress(answered: int, drawn: int) -> None:
    st.progress(answered / max(drawn, 1), text=f"**{answered} of {drawn} answered**")


def _estimate(state: RunState, window: str, design: Design, answered: int) -> None:
    """The count with its interval, or what is missing before there is one."""
    st.subheader("What the answers say")
    result = analysis(state.path, state.generation, AnalysisOptions(window=window)).audit
    if result is None:
        st.info(f"verified sample: {answered} of {design.n} answered; answer at least one sample in every "
                "stratum for an interval")
    elif result.count is None:
        st.info(result.line())
    else:
        st.success(result.line()[0].upper() + result.line()[1:])
    st.caption(f"A stratified random sample of {design.n} of the run's {len(design.frame):,} samples in "
               f"{len(design.population)} strata (audit {design.audit_id[:8]}); each answer counts for its "
               "stratum, so the interval needs one in every stratum and narrows as more come in.")


def _key_map(num_classes: int) -> None:
    st.caption(
        "Keys: **Enter** the label is right · **0-9** the right class is that one (the given class's key "
        "also says it is right) · **←** back · **→** skip / next. "
        + ("Classes past 9: choose them in the list." if num_classes > KEY_CLASSES else "")
    )


def _image(state: RunState, sample_id: int) -> None:
    dataset, why = open_dataset(state)
    if dataset is None:
        st.warning(f"No image: {why}")
        return
    try:
        st.image(thumbnail(dataset, sample_id, IMAGE_SIZE))
    except ValueError as exc:
        st.warning(f"No image for sample {sample_id}: {exc}")


def _saved_note(state: RunState) -> None:
    saved = st.session_state.pop(SAVED_KEY, None)
    if saved:
        sample_id, label, right = saved
        st.toast(f"Saved: sample {sample_id} — " + ("label is right" if right else f"is {state.class_name(label)}"),
                 icon="✅")
    error = st.session_state.get(ERROR_KEY)
    if error:
        st.error(error)


def _controls(state: RunState, sample_id: int, given: int, order: list[int], answered: set[int]) -> None:
    """Label is right / the right class (a digit each) / more classes / back and skip."""
    key = f"{sample_id}"  # buttons are per sample: a key pressed for one sample never answers the next
    st.button("✓ Label is right", key=f"audit_right_{key}", type="primary", shortcut="Enter", width="stretch",
              on_click=_answer, args=(state.path, sample_id, given, given))
    st.markdown("**Wrong? The right class is:**")
    n = state.num_classes
    cols = st.columns(min(n, CLASS_COLUMNS) or 1)
    for c in range(min(n, KEY_CLASSES)):
        # The digit is the button's key badge; the label is the class's name.
        name = _short_name(state, c)
        cols[c % len(cols)].button(name if c != given else f"{name} (given)", key=f"audit_class_{c}_{key}",
                                   shortcut=str(c), width="stretch", wrap=True,
                                   on_click=_answer, args=(state.path, sample_id, c, given))
    if n > KEY_CLASSES:
        pick, save = st.columns([2, 1], vertical_alignment="bottom")
        pick.selectbox("Another class", list(range(n)), format_func=state.class_name, key=f"audit_other_{key}")
        save.button("Save this class", key=f"audit_save_other_{key}", width="stretch", on_click=_answer_other,
                    args=(state.path, sample_id, f"audit_other_{key}", given))
    back, forward = st.columns(2)
    at = st.session_state.get(AT_KEY)
    back.button("◀ Back", key=f"audit_back_{key}", shortcut="Left", width="stretch",
                disabled=order.index(sample_id) == 0 if sample_id in order else True,
                on_click=_back, args=(order, sample_id, answered))
    forward.button("Next ▶" if at is not None else "Skip ▶", key=f"audit_next_{key}", shortcut="Right",
                   width="stretch", on_click=_forward, args=(order, sample_id, answered))


def _short_name(state: RunState, c: int) -> str:
    """The class's name alone when it has one (its digit is on the key badge), else its index."""
    names = state.class_names
    return names[c] if c < len(names) and names[c] != str(c) else str(c)


def _answer_other(path: str, sample_id: int, select_key: str, given: int) -> None:
    _answer(path, sample_id, int(st.session_state[select_key]), given)


def _sample(state: RunState, design: Design, sample_id: int, order: list[int], answers: pd.Series) -> None:
    given = int(design.frame.loc[sample_id, "given"])
    answered = set(int(s) for s in answers.index)
    position = order.index(sample_id) + 1
    image_col, side_col = st.columns([1, 1.2])
    with image_col:
        _image(state, sample_id)
    with side_col:
        st.markdown(f"Sample **{position} of {len(order)}** · id {sample_id}")
        st.markdown(f"### Given label: {state.class_name(given)}")
        if sample_id in answers.index:
            label = int(answers.loc[sample_id])
            st.success("Your answer: " + ("the label is right" if label == given else
                                          f"wrong, it is {state.class_name(label)}") + " (a new answer replaces it)")
        _controls(state, sample_id, given, order, answered)
        _key_map(state.num_classes)


def _finished(order: list[int], answered: set[int]) -> None:
    st.success("Every drawn sample has an answer. Go back to change one, or verify more samples below.")
    st.button("◀ Back", key="audit_back_end", shortcut="Left", on_click=_back, args=(order, None, answered))


def render(state: RunState, window: str) -> None:
    if state.empty:
        st.info("No complete epoch yet: the sample to verify is drawn once training has written an epoch.")
        return
    key = audit_key(state.path)
    design = _design(state.path, key)
    _saved_note(state)
    if design is None:
        _draw_form(state)
        return
    order = _order(state.path, key[0])
    answers = _answers(state.path, key)
    answers = answers[answers.index.isin(order)]
    answered = set(int(s) for s in answers.index)
    _progress(len(answered), design.n)
    skipped = set(st.session_state.get(SKIPPED_KEY, set()))
    current = current_sample(order, answered, st.session_state.get(AT_KEY), skipped)
    if current is None:
        _finished(order, answered)
    else:
        _sample(state, design, current, order, answers)
    # Last: the sample and its buttons are on screen while the estimate is computed.
    _estimate(state, window, design, len(answered))
    _grow_form(state, design)

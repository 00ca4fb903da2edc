"""A verified sample end to end: drawn by the tool on a real (tiny) CPU training with
injected noise, answered from the truth, read back; the interval covers the true count, the
answers survive a restart and a grown sample; bad input is refused and writes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis_fixtures import colour_images_npz, noisy_rows, write_run
from gwa_diag.analysis import audit
from gwa_diag.analysis.pipeline import analyze
from gwa_diag.analysis.rank import read_suspects, write_suspects
from gwa_diag.analysis.relabel import record_decision
from gwa_diag.checks import InputError
from gwa_diag.cli import main
from gwa_diag.store import open_run
from gwa_diag.training.data import load_npz, with_noise
from gwa_diag.training.engine import TrainConfig, train
from gwa_diag.training.models import tiny_cnn


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny CNN trained 6 epochs on 600 colour images, 30% of the labels flipped."""
    tmp = tmp_path_factory.mktemp("audit")
    data = colour_images_npz(tmp / "d.npz", n=600, classes=4, seed=2)
    config = TrainConfig(epochs=6, batch_size=60, lr=0.01, optimizer="adamw", schedule="constant",
                         warmup_epochs=0.5, augment=False, progress=False)
    torch.manual_seed(0)
    train(tiny_cnn(4), with_noise(load_npz(data), rate=0.3, kind="symmetric", seed=1), tmp / "run", config=config)
    return tmp / "run"


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def _answer_sheet(run: Path, out: Path, *, rows: int | None = None) -> Path:
    """The run's sheet with verified_label filled in from the truth (the verifier)."""
    sheet = pd.read_csv(run / "audit" / "sheet.csv")
    clean = open_run(run).labels().set_index("sample_id")["clean_label"]
    sheet["verified_label"] = clean.loc[sheet["sample_id"]].to_numpy()
    (sheet if rows is None else sheet.iloc[:rows]).to_csv(out, index=False)
    return out


def _files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in (run / "audit").rglob("*") if p.is_file())


def test_the_whole_loop_covers_the_true_count_and_survives_a_restart(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    truth = open_run(run).labels()
    n_wrong = int((truth["label"] != truth["clean_label"]).sum())
    assert main(["audit", str(run), "--n", "120", "--seed", "4"]) == 0
    design = audit.read_design(run)
    assert design.n == 120 and len(design.population) == audit.DEFAULT_STRATA and (design.sampled >= 2).all()
    sheet = pd.read_csv(run / "audit" / "sheet.csv")
    assert len(sheet) == 120 and sheet["verified_label"].isna().all() and (sheet["audit_id"] == design.audit_id).all()
    assert main(["audit", str(run), "--answers", str(_answer_sheet(run, tmp_path / "a.csv"))]) == 0
    a = analyze(run)  # a fresh analysis: what a restart sees
    assert a.audit.answered == 120 and a.audit.complete
    count = a.audit.count
    assert count.low <= n_wrong <= count.high and count.low < count.estimate < count.high
    # Per given class: each class estimated within its own part of every stratum.
    true_per_class = (truth["label"] != truth["clean_label"]).groupby(truth["label"]).sum()
    per_class = a.audit.per_class
    assert set(per_class) == set(true_per_class.index)
    assert sum(iv.low <= true_per_class[c] <= iv.high for c, iv in per_class.items()) >= len(per_class) - 1
    assert count.low <= sum(iv.estimate for iv in per_class.values()) <= count.high
    # The flagged set's precision, against the truth.
    true_precision = float(a.truth.loc[a.flagged.index].mean())
    assert a.audit.flagged.low <= true_precision <= a.audit.flagged.high <= 1.0  # a share of the flagged set
    # p_wrong rides in the ranking and suspects.csv, and ranks the wrong labels.
    assert a.ranking["p_wrong"].between(0, 1).all()
    write_suspects(tmp_path / "s.csv", a.flagged, a.class_names)
    assert "p_wrong" in read_suspects(tmp_path / "s.csv").columns
    unverified = a.ranking.index.difference(design.drawn.index)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(a.truth.loc[unverified], a.ranking.loc[unverified, "p_wrong"]) > 0.8
    # Growing keeps every answer: the first 120 stay drawn and answered.
    assert main(["audit", str(run), "--n", "160"]) == 0
    grown = audit.read_design(run)
    assert grown.audit_id == design.audit_id and grown.n == 160
    assert set(design.drawn.index) <= set(grown.drawn.index)
    sheet = pd.read_csv(run / "audit" / "sheet.csv")
    assert sheet["verified_label"].notna().sum() == 120 and len(sheet) == 160
    assert analyze(run).audit.answered == 120
    out = capsys.readouterr().out
    assert "wrong labels:" in out and "95% interval" in out


def test_the_review_reports_its_recall_and_when_to_stop(trained, tmp_path):
    run = _copy(trained, tmp_path)
    design = audit.draw_sample(run, 100, seed=1)
    clean = open_run(run).labels().set_index("sample_id")["clean_label"]
    drawn = design.drawn.index
    audit.record_answers(run, pd.DataFrame({"sample_id": drawn, "verified_label": clean.loc[drawn].to_numpy()}),
                         source="test")
    a = analyze(run)
    assert a.audit.review is None  # nothing reviewed yet
    depth = 200
    for sid in a.ranking.index[:depth]:  # a review of the top, from the truth
        given, right = int(a.ranking.loc[sid, "label"]), int(clean.loc[sid])
        if given == right:
            record_decision(run, int(sid), "fine", given_label=given)
        else:
            record_decision(run, int(sid), "relabel", new_label=right, given_label=given)
    review = analyze(run).audit.review
    wrong = a.truth
    found = int(wrong.loc[a.ranking.index[:depth]].sum())
    assert review.reviewed == depth and review.found == found
    true_recall = found / int(wrong.sum())
    assert review.recall_low <= true_recall
    assert 0 < review.recall_low < review.recall <= 1


def _small_run(tmp_path: Path, *, names: bool = True) -> Path:
    rows, given, clean = noisy_rows(n=120, epochs=6, num_classes=4, seed=5)
    meta = {"class_names": ["red", "green", "blue", "grey"]} if names else None
    return write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean, meta=meta)


def test_bad_answers_are_refused_and_write_nothing(tmp_path):
    run = _small_run(tmp_path)
    design = audit.draw_sample(run, 40, seed=0)
    before = _files(run)
    sheet = pd.read_csv(run / "audit" / "sheet.csv")
    cases = {
        "unknown ids": (sheet.assign(sample_id=sheet["sample_id"] + 10_000, verified_label=1), InputError, "10"),
        "unknown class": (sheet.assign(verified_label="zebra"), InputError, "zebra"),
        "class out of range": (sheet.assign(verified_label=7), InputError, "7"),
        "another audit": (sheet.assign(audit_id="0123abcd", verified_label=1), InputError, "0123abcd"),
        "empty sheet": (sheet, InputError, "no answer"),
    }
    for name, (frame, error, named) in cases.items():
        path = tmp_path / f"{name}.csv"
        frame.to_csv(path, index=False)
        with pytest.raises(error, match=named):
            audit.read_answer_file(path, run, design)
        assert main(["audit", str(run), "--answers", str(path)]) == 2, name
        assert _files(run) == before, name
    # The other audit's id is named beside this one's.
    (tmp_path / "other.csv").write_text(sheet.assign(audit_id="0123abcd", verified_label=1).to_csv(index=False))
    with pytest.raises(InputError, match=design.audit_id):
        audit.read_answer_file(tmp_path / "other.csv", run, design)


def test_answers_by_class_name_and_outside_the_sample(tmp_path, capsys):
    run = _small_run(tmp_path)
    design = audit.draw_sample(run, 40, seed=0)
    outside = next(i for i in design.frame.index if i not in design.drawn.index)
    answers = pd.DataFrame({"sample_id": [*design.drawn.index[:3], outside], "verified_label": ["red", "blue", "grey", "red"]})
    answers.to_csv(tmp_path / "names.csv", index=False)
    read = audit.read_answer_file(tmp_path / "names.csv", run, design)
    assert read["verified_label"].tolist() == [0, 2, 3] and read.attrs["outside"] == 1
    assert main(["audit", str(run), "--answers", str(tmp_path / "names.csv")]) == 0
    assert "1 for samples outside the audit left out" in capsys.readouterr().out
    assert len(audit.latest_answers(run)) == 3
    # The latest answer for a sample wins.
    audit.record_answers(run, pd.DataFrame({"sample_id": [design.drawn.index[0]], "verified_label": [3]}), source="t")
    assert audit.latest_answers(run).loc[design.drawn.index[0], "verified_label"] == 3


def test_draw_options_are_checked(tmp_path):
    run = _small_run(tmp_path)
    audit.draw_sample(run, 40, seed=0)
    with pytest.raises(InputError, match="at least 40"):
        audit.draw_sample(run, 30)
    with pytest.raises(InputError, match="seed 0"):
        audit.draw_sample(run, 50, seed=9)
    with pytest.raises(InputError, match="121"):
        audit.draw_sample(_small_run(tmp_path / "b"), 121)
    assert main(["audit", str(run), "--n", "50", "--answers", "x.csv"]) == 2


def test_p_wrong_flags_and_the_first_screen_without_answers(tmp_path, capsys):
    run = _small_run(tmp_path)
    assert main(["rank", str(run), "--flag", "p-wrong"]) == 2
    assert "gwa-diag audit" in capsys.readouterr().err
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"gwa-diag audit {run} --n 200" in out
    design = audit.draw_sample(run, 60, seed=2)
    clean = open_run(run).labels().set_index("sample_id")["clean_label"]
    audit.record_answers(run, pd.DataFrame({"sample_id": design.drawn.index,
                                            "verified_label": clean.loc[design.drawn.index].to_numpy()}), source="t")
    a = analyze(run, rule="p_wrong")
    assert (a.flagged["p_wrong"] >= 0.5).all() and len(a.flagged) == int((a.ranking["p_wrong"] >= 0.5).sum())
    assert main(["report", str(run)]) == 0
    assert "wrong labels:" in capsys.readouterr().out
    report = (run / "analysis" / "report.json").read_text()
    assert '"audit"' in report and '"flagged_precision"' in report

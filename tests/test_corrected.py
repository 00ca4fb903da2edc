"""Corrected labels: decisions first, then the policy for flagged samples nobody reviewed;
refusals that write nothing; the files the --labels and --exclude readers take."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis_fixtures import run_with_truth
from gwa_diag.analysis import relabel
from gwa_diag.analysis.corrected import (
    CHANGED_BY,
    corrected_labels,
    corrected_paths,
    trained_on,
    write_corrected_labels,
)
from gwa_diag.analysis.pipeline import analyze
from gwa_diag.checks import InputError
from gwa_diag.cli import main

# The fixture's noisy samples have negative alignment: this rule flags them whatever the
# default rule is.
NEGATIVE = {"rule": "negative"}


@pytest.fixture()
def reviewed(tmp_path: Path):
    """A 200-sample run with three decisions on flagged samples and one on an unflagged one."""
    run, given, _ = run_with_truth(tmp_path)
    flagged = analyze(run, **NEGATIVE).flagged
    assert len(flagged) > 10  # the fixture's noisy samples have negative alignment
    f = flagged.index.to_numpy()
    unflagged = next(s for s in sorted(given) if s not in set(f))
    sugg = int(flagged.loc[f[0], "suggested_label"])
    relabel.record_decision(run, int(f[0]), "accept", given_label=given[f[0]], suggested_label=sugg)
    relabel.record_decision(run, int(f[1]), "relabel", new_label=(given[f[1]] + 2) % 4)
    relabel.record_decision(run, int(f[2]), "fine")
    relabel.record_decision(run, int(unflagged), "relabel", new_label=(given[unflagged] + 1) % 4)
    decided = {int(f[0]): sugg, int(f[1]): (given[f[1]] + 2) % 4, int(f[2]): given[f[2]],
               int(unflagged): (given[unflagged] + 1) % 4}
    return run, given, flagged, decided


def test_decisions_apply_and_keep_leaves_every_other_label(reviewed):
    run, given, flagged, decided = reviewed
    result = corrected_labels(run, **NEGATIVE)
    labels = result.labels.set_index("sample_id")
    assert list(result.labels.columns) == ["sample_id", "label", "given_label", "changed_by"]
    assert len(labels) == len(given) and labels.index.is_monotonic_increasing
    for sid, want in decided.items():
        assert labels.loc[sid, "label"] == want
    kinds = labels.loc[list(decided), "changed_by"].tolist()
    assert kinds == ["decision:accept", "decision:relabel", "decision:fine", "decision:relabel"]
    rest = labels.drop(index=list(decided))
    assert (rest["label"] == rest["given_label"]).all()
    assert (rest["given_label"] == pd.Series(given).loc[rest.index]).all()
    # Flagged and unreviewed: kept, and marked so, which tells them from unflagged samples.
    undecided = flagged.index.difference(list(decided))
    assert (labels.loc[undecided, "changed_by"] == "auto:keep").all()
    assert (labels.drop(index=[*decided, *undecided])["changed_by"] == "").all()
    assert set(labels["changed_by"]) <= set(CHANGED_BY)
    assert result.excluded.empty and list(result.excluded.columns) == ["sample_id", "reason"]
    counts = result.provenance["counts"]
    changed_by_review = sum(decided[s] != given[s] for s in decided)
    assert counts == {"rows": 200, "decisions": 4, "changed_by_decisions": changed_by_review, "changed_by_auto": 0,
                      "dropped": 0, "flagged": len(flagged), "flagged_without_decision": len(undecided)}


def test_drop_excludes_only_flagged_samples_without_a_decision(reviewed):
    run, given, flagged, decided = reviewed
    result = corrected_labels(run, auto="drop", **NEGATIVE)
    undecided = flagged.index.difference(list(decided))
    assert result.excluded["sample_id"].tolist() == sorted(undecided)
    assert result.excluded["reason"].str.startswith("auto:drop: ").all()
    labels = result.labels.set_index("sample_id")
    # Dropped samples keep their label (the exclusion list leaves them out, the label file says what they were).
    assert (labels.loc[undecided, "label"] == labels.loc[undecided, "given_label"]).all()
    assert (labels.loc[undecided, "changed_by"] == "auto:drop").all()
    assert result.provenance["counts"]["dropped"] == len(undecided)


@pytest.mark.parametrize("min_prob", [None, 0.6])
def test_relabel_takes_confident_suggestions_of_undecided_flagged_samples(reviewed, min_prob):
    run, given, flagged, decided = reviewed
    result = corrected_labels(run, auto="relabel", min_prob=min_prob, **NEGATIVE)
    labels = result.labels.set_index("sample_id")
    threshold = 0.0 if min_prob is None else min_prob
    undecided = flagged[~flagged.index.isin(list(decided))]
    confident = undecided[(undecided["suggested_prob"] >= threshold) & undecided["suggested_label"].notna()]
    expect = pd.Series(given).astype("int64")
    expect.loc[confident.index] = confident["suggested_label"].astype("int64")
    for sid, want in decided.items():
        expect.loc[sid] = want  # a decision beats the policy
    assert (labels["label"] == expect.loc[labels.index]).all()
    was = np.array([given[s] for s in confident.index])
    moved = confident.index[confident["suggested_label"].astype("int64").to_numpy() != was]
    assert (labels.loc[moved, "changed_by"] == "auto:relabel").all()
    assert result.provenance["counts"]["changed_by_auto"] == len(moved) > 0
    assert result.provenance["min_prob"] == threshold and result.excluded.empty
    if min_prob is not None:
        # Some suggestions are below the threshold: those samples keep their label.
        shy = undecided.index.difference(confident.index)
        assert len(shy) and (labels.loc[shy, "label"] == labels.loc[shy, "given_label"]).all()


def test_flagged_set_is_the_analysis_with_the_same_options(reviewed):
    run, _, _, decided = reviewed
    result = corrected_labels(run, auto="drop", rule="topk", k=20, scorer="aum")
    flagged = analyze(run, rule="topk", k=20, scorer="aum").flagged
    assert result.excluded["sample_id"].tolist() == sorted(flagged.index.difference(list(decided)))
    assert result.provenance["analysis"]["rule"] == "topk" and result.provenance["analysis"]["scorer"] == "aum"
    # Without options, analyze()'s own defaults (whatever they are) choose the flags.
    default = corrected_labels(run, auto="drop")
    defaults = analyze(run).options
    assert default.provenance["analysis"]["rule"] == defaults.rule
    assert default.provenance["analysis"]["scorer"] == defaults.scorer
    assert default.provenance["counts"]["flagged"] == len(analyze(run).flagged)


def test_provenance_names_the_parent_run(reviewed):
    run, *_ = reviewed
    prov = corrected_labels(run, auto="relabel", min_prob=0.5, **NEGATIVE).provenance
    meta = json.loads((run / "run.json").read_text())
    assert prov["parent_run_id"] == meta["run_id"] and prov["parent_run"] == str(run.resolve())
    assert prov["auto"] == "relabel" and prov["min_prob"] == 0.5
    assert prov["analysis"]["selected_epoch"] == analyze(run, **NEGATIVE).selection.used_epoch
    assert prov["gwa_diag_version"] and prov["created"]


def test_path_column_is_carried_when_labels_parquet_has_one(reviewed):
    run, *_ = reviewed
    labels = pd.read_parquet(run / "labels.parquet")
    labels["path"] = [f"cls/{s},x.png" for s in labels["sample_id"]]  # a comma: the CSV must quote it
    labels.to_parquet(run / "labels.parquet")
    result = corrected_labels(run, auto="drop", **NEGATIVE)
    assert list(result.labels.columns) == ["sample_id", "path", "label", "given_label", "changed_by"]
    assert list(result.excluded.columns) == ["sample_id", "path", "reason"]
    assert len(result.excluded) and (result.excluded["path"] == [f"cls/{s},x.png" for s in result.excluded["sample_id"]]).all()
    out = write_corrected_labels(result, run.parent / "fixed.csv")
    back = pd.read_csv(out.labels, keep_default_na=False)
    assert back["path"].tolist() == result.labels["path"].tolist()


def test_written_files_are_read_by_the_label_and_exclusion_readers(reviewed, tmp_path):
    from gwa_diag.training.data import ArrayDataset, load_exclusion_file, with_label_file

    run, given, *_ = reviewed
    result = corrected_labels(run, auto="drop", **NEGATIVE)
    paths = write_corrected_labels(result, tmp_path / "out" / "fixed.csv")
    assert paths.excluded.name == "fixed.excluded.csv" and paths.provenance.name == "fixed.provenance.json"
    ids = np.array(sorted(given))
    ds = ArrayDataset(np.zeros((len(ids), 4, 4, 3), np.uint8), [given[s] for s in ids], sample_ids=ids, num_classes=4)
    # The extra columns (given_label, changed_by) are ignored by the --labels reader.
    relabeled = with_label_file(ds, paths.labels)
    assert (relabeled.labels == result.labels["label"].to_numpy()).all()
    assert load_exclusion_file(paths.excluded).tolist() == result.excluded["sample_id"].tolist()
    prov = json.loads(paths.provenance.read_text())
    assert prov["files"] == {"labels": "fixed.csv", "excluded": "fixed.excluded.csv"}
    import hashlib

    assert prov["sha256"]["labels"] == hashlib.sha256(paths.labels.read_bytes()).hexdigest()


def test_empty_exclusion_file_is_written_with_its_header(reviewed, tmp_path):
    run, *_ = reviewed
    paths = write_corrected_labels(corrected_labels(run), tmp_path / "fixed.csv")
    assert paths.excluded.read_text().strip() == "sample_id,reason"


# --------------------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, named", [
    ({"auto": "wipe"}, "'wipe'"),
    ({"auto": "relabel", "min_prob": 1.5}, "min_prob"),
    ({"auto": "relabel", "min_prob": float("nan")}, "min_prob"),
    ({"auto": "keep", "min_prob": 0.5}, "min_prob"),
    ({"auto": "drop", "min_prob": 0.5}, "'drop'"),
    ({"rule": "topk"}, "k"),
    ({"scorer": "nope"}, "'nope'"),
])
def test_bad_options_are_input_errors_naming_them(reviewed, kwargs, named):
    run, *_ = reviewed
    with pytest.raises(InputError) as err:
        corrected_labels(run, **kwargs)
    assert named in str(err.value)


def test_decision_for_a_sample_not_in_the_run_is_refused(reviewed):
    run, *_ = reviewed
    path = relabel.record_decision(run, 99_999, "fine")
    with pytest.raises(InputError) as err:
        corrected_labels(run)
    assert "99999" in str(err.value) and path.name in str(err.value)


def test_decision_label_outside_the_classes_is_refused(reviewed):
    run, given, *_ = reviewed
    sid = sorted(given)[0]
    # num_classes=10 gets the decision past record_decision's own check (a run recorded
    # elsewhere, or a file copied in), as the exporter must not trust it.
    relabel.record_decision(run, sid, "relabel", new_label=7, num_classes=10)
    with pytest.raises(InputError) as err:
        corrected_labels(run)
    assert f"{sid}" in str(err.value) and "0..3" in str(err.value)


def test_run_without_labels_parquet_is_refused(reviewed):
    run, *_ = reviewed
    (run / "labels.parquet").unlink()
    with pytest.raises(InputError, match="labels.parquet"):
        corrected_labels(run)


def test_out_must_be_a_csv_name(tmp_path):
    with pytest.raises(InputError) as err:
        corrected_paths(tmp_path / "fixed.txt")
    assert "fixed.txt" in str(err.value)


def _cli(run: Path, out: Path, *extra: str) -> int:
    return main(["labels", str(run), "--out", str(out), *extra])


@pytest.mark.parametrize("extra, named", [
    (["--min-prob", "0.5"], "--min-prob"),
    (["--auto", "relabel", "--min-prob", "2"], "--min-prob"),
    (["--k", "5", "--flag", "negative"], "--k"),
    (["--flag", "topk"], "--k"),
])
def test_cli_bad_options_write_nothing(reviewed, tmp_path, capsys, extra, named):
    run, *_ = reviewed
    out = tmp_path / "fixed.csv"
    assert _cli(run, out, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("gwa-diag labels: error: ") and named in err and err.count("\n") == 1
    assert list(tmp_path.glob("fixed*")) == []


def test_cli_bad_decision_writes_nothing(reviewed, tmp_path, capsys):
    run, *_ = reviewed
    relabel.record_decision(run, 123_456, "fine")
    out = tmp_path / "fixed.csv"
    assert _cli(run, out, "--auto", "drop") == 2
    assert "123456" in capsys.readouterr().err
    assert list(tmp_path.glob("fixed*")) == []


@pytest.mark.parametrize("existing", ["fixed.csv", "fixed.excluded.csv", "fixed.provenance.json"])
def test_existing_output_is_never_replaced(reviewed, tmp_path, capsys, existing):
    run, *_ = reviewed
    (tmp_path / existing).write_text("someone's labels\n")
    assert _cli(run, tmp_path / "fixed.csv") == 2
    err = capsys.readouterr().err
    assert existing in err and "--out" in err
    assert (tmp_path / existing).read_text() == "someone's labels\n"
    assert [p.name for p in tmp_path.glob("fixed*")] == [existing]
    # The Python writer refuses too.
    with pytest.raises(InputError):
        write_corrected_labels(corrected_labels(run), tmp_path / "fixed.csv")
    assert [p.name for p in tmp_path.glob("fixed*")] == [existing]


def test_cli_prints_the_counts_and_the_next_command(reviewed, tmp_path, capsys):
    run, *_ = reviewed
    out = tmp_path / "fixed.csv"
    assert _cli(run, out, "--auto", "drop", "--flag", "negative") == 0
    printed = capsys.readouterr().out
    counts = json.loads((tmp_path / "fixed.provenance.json").read_text())["counts"]
    assert f"{counts['rows']} rows: {counts['changed_by_decisions']} labels changed by review decisions" in printed
    assert f"{counts['dropped']} dropped" in printed and counts["dropped"] > 0
    assert f"--labels {out} --exclude {tmp_path / 'fixed.excluded.csv'}" in printed


def test_trained_on_line():
    meta = {"label_provenance": {"parent_run_id": "abc", "parent_run": "/runs/a", "auto": "drop",
                                 "counts": {"changed_by_decisions": 3, "changed_by_auto": 0}},
            "exclusion": {"count": 12}}
    info = trained_on(meta)
    assert info is not None
    assert info["line"] == ("trained on corrected labels from run abc (/runs/a): 3 changed by review, "
                            "0 by the auto policy drop, 12 excluded")
    assert trained_on({}) is None

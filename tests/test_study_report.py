"""`sr3 study report`: confusion rates equal a hand computation on scripted answers."""

from __future__ import annotations

import csv
import json
import sqlite3
import warnings

import numpy as np
import pytest
from PIL import Image

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from sr3.cli import main
from sr3.study.create import create_study
from sr3.study.report import analyse, bootstrap_ci, write_report
from sr3.study.server import create_app
from sr3.study.testing import make_folders

# What each rater does: pick the real image ("real") or the other one ("fake"),
# per method and for catch trials.  Hand computation, with 2 method trials of
# each method per rater (5 images, 2 methods, 4 trials per rater, 1 catch on a
# fifth photo; pool trials 0-9 alternate A, B, A, B, A | B, A, B, A, B):
#   r3 fails its only catch trial -> excluded (0/1 < 0.8)
#   A: r0 2 fooled + r1 2 + r2 0 = 4 of 6  -> 66.7%
#   B: r0 0        + r1 2 + r2 0 = 2 of 6  -> 33.3%
#   with r3 kept (--min-catch-pass 0): A 6/8 = 75%, B 4/8 = 50%
#   r0 has pool trials 0-3, r1 4-7, r2 8, 9, 0, 1 (wrapping around), r3 2-5:
#   r0 and r2 share trial 0 (A: they disagree) and 1 (B: they agree)
#   -> agreement 0.5 each, 2 rater pairs of which 1 agrees;
#   r1's only co-rater is r3, excluded -> no agreement figure.
SCRIPT = {
    0: {"A": "fake", "B": "real", "catch": "real"},
    1: {"A": "fake", "B": "fake", "catch": "real"},
    2: {"A": "real", "B": "real", "catch": "real"},
    3: {"A": "fake", "B": "fake", "catch": "fake"},
}


def run_script(db, script):
    """Answer every trial of each rater through the API as the script says; return public rater ids."""
    app = create_app(db, None)
    con = sqlite3.connect(db)
    ids = []
    for k in sorted(script):
        c = TestClient(app)
        state = c.post("/api/consent", json={"consent": True}).json()
        while not state["done"]:
            trial_id = state["trial"]["id"]
            kind, method, real_side = con.execute(
                "SELECT t.kind, t.method, t.real_side FROM assignments a JOIN trials t ON t.id = a.trial_id "
                "WHERE a.id = ?", (trial_id,)).fetchone()
            wants = script[k]["catch" if kind == "catch" else method]
            other = "right" if real_side == "left" else "left"
            r = c.post("/api/answer", json={"trial": trial_id, "choice": real_side if wants == "real" else other,
                                            "rt_ms": 1000 + 100 * k})
            assert r.status_code == 200
            state = r.json()["state"]
        ids.append(con.execute("SELECT id FROM raters WHERE idx = ?", (k,)).fetchone()[0])
    con.close()
    return ids


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    dirs = make_folders(root, ["A", "B"], n_images=5, size=16)
    db = root / "study.db"
    create_study(dirs["reference"], {"A": dirs["A"], "B": dirs["B"]}, db, trials_per_rater=4, catch_rate=0.25,
                 seed=11)
    ids = run_script(db, SCRIPT)
    return db, ids


def test_report_matches_hand_computation(scripted, tmp_path):
    db, ids = scripted
    result = write_report(db, tmp_path / "rep", n_boot=500, seed=0)
    rates = {row["method"]: row for row in result["confusion"]}
    assert (rates["A"]["n_fooled"], rates["A"]["n_answers"]) == (4, 6)
    assert (rates["B"]["n_fooled"], rates["B"]["n_answers"]) == (2, 6)
    assert rates["A"]["confusion_rate"] == pytest.approx(4 / 6)
    assert rates["B"]["confusion_rate"] == pytest.approx(2 / 6)
    assert rates["A"]["n_raters"] == 3 and rates["A"]["n_images"] == 5
    for row in rates.values():
        assert 0 <= row["ci_low"] <= row["confusion_rate"] <= row["ci_high"] <= 1
    assert result["excluded"] == [{"rater": ids[3], "reason": "failed 1 of 1 catch trials (pass rate 0.00 < 0.80)"}]
    assert result["catch"] == {"answers": 4, "passed": 3, "pass_rate": 0.75, "raters_screened": 4,
                               "raters_passed": 3, "min_catch_pass": 0.8}
    by_rater = {r["rater"]: r for r in result["raters"]}
    assert [by_rater[i]["agreement"] for i in ids] == [0.5, None, 0.5, None]
    assert result["agreement"] == {"rater_pairs": 2, "agreeing_pairs": 1, "pairwise_agreement": 0.5}
    assert [by_rater[i]["median_rt_ms"] for i in ids] == [1000, 1100, 1200, 1300]
    assert all(by_rater[i]["completed"] and by_rater[i]["answered"] == 5 for i in ids)

    out = tmp_path / "rep"
    assert sorted(p.name for p in out.iterdir()) == ["confusion.csv", "confusion.png", "confusion.svg",
                                                     "raters.csv", "report.json", "responses.csv"]
    assert json.loads((out / "report.json").read_text())["confusion"] == result["confusion"]
    with open(out / "confusion.csv") as f:
        table = {r["method"]: r for r in csv.DictReader(f)}
    assert float(table["A"]["confusion_rate"]) == pytest.approx(4 / 6) and table["B"]["n_fooled"] == "2"
    with open(out / "responses.csv") as f:
        assert len(list(csv.DictReader(f))) == 20
    with open(out / "raters.csv") as f:
        excluded = [r for r in csv.DictReader(f) if r["included"] == "False"]
    assert [r["rater"] for r in excluded] == [ids[3]]
    png = Image.open(out / "confusion.png")
    assert png.format == "PNG" and png.size[0] > 300
    assert (out / "confusion.svg").read_text().lstrip().startswith("<?xml")


def test_threshold_override_and_seeded_ci(scripted, tmp_path):
    db, _ = scripted
    result = write_report(db, tmp_path / "r0", n_boot=300, seed=4, min_catch_pass=0.0)
    rates = {row["method"]: row for row in result["confusion"]}
    assert (rates["A"]["n_fooled"], rates["A"]["n_answers"]) == (6, 8)
    assert (rates["B"]["n_fooled"], rates["B"]["n_answers"]) == (4, 8)
    assert result["excluded"] == []
    again = write_report(db, tmp_path / "r1", n_boot=300, seed=4, min_catch_pass=0.0)
    assert again["confusion"] == result["confusion"]  # same seed, same CIs
    # Another seed draws other replicates (visible on data less tiny than this study's).
    rng = np.random.default_rng(0)
    raters, images, fooled = rng.integers(0, 30, 400), rng.integers(0, 40, 400), rng.random(400) < 0.4
    ci = [bootstrap_ci(raters, images, fooled, n_boot=300, seed=s) for s in (4, 4, 5)]
    assert ci[0] == ci[1] != ci[2]


def test_cli_report(scripted, tmp_path, capsys):
    db, _ = scripted
    assert main(["study", "report", str(db), "--out", str(tmp_path / "cli"), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "raters: 3 included of 4" in out
    assert "confusion 66.7% (4/6)" in out and "confusion 33.3% (2/6)" in out


def test_bootstrap_ci_hand_cases():
    # One rater, one image: every replicate is the sample itself.
    r = np.zeros(4, dtype=np.int64)
    lo, hi = bootstrap_ci(r, r, np.array([1, 1, 0, 1], bool), n_boot=100, seed=0)
    assert lo == hi == 0.75
    # Everyone fooled: the interval is [1, 1].
    lo, hi = bootstrap_ci(np.arange(5), np.arange(5) % 2, np.ones(5, bool), n_boot=100, seed=0)
    assert (lo, hi) == (1.0, 1.0)
    # Raters differ (one always fooled, one never): wide interval around 0.5, both ends reachable.
    raters = np.repeat(np.arange(2), 10)
    images = np.tile(np.arange(10), 2)
    lo, hi = bootstrap_ci(raters, images, raters == 0, n_boot=2000, seed=0)
    assert lo == 0.0 and hi == 1.0


def test_analyse_without_answers():
    result = analyse([], [{"rater": "x", "rater_index": 0, "task": "camera", "created_at": 0, "assigned": 5,
                           "answered": 0}], methods=["A"], tasks=["camera"], min_catch_pass=0.8, n_boot=10)
    assert result["confusion"][0]["n_answers"] == 0 and result["confusion"][0]["confusion_rate"] is None
    assert result["excluded"] == [{"rater": "x", "reason": "no answers"}]


def test_intervals_do_not_depend_on_random_rater_ids(scripted):
    from sr3.study.db import StudyDB, load_raters, load_responses
    db = StudyDB(scripted[0])
    with db.read() as tx:
        responses, raters = load_responses(tx), load_raters(tx)
    db.close()
    kwargs = dict(methods=["A", "B"], tasks=["camera"], min_catch_pass=0.8, n_boot=200, seed=1)
    renamed = [{**r, "rater": "zz" + r["rater"][::-1]} for r in responses]
    renamed_raters = [{**r, "rater": "zz" + r["rater"][::-1]} for r in raters]
    assert analyse(renamed, renamed_raters, **kwargs)["confusion"] == analyse(responses, raters, **kwargs)["confusion"]

"""`sr3 study create` and the seeded design: counts, balance, matching, re-encoding, errors."""

from __future__ import annotations

import io
import sqlite3
import warnings
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from sr3.cli import main
from sr3.errors import UserError
from sr3.study import create as create_module
from sr3.study import design
from sr3.study.config import StudyConfig
from sr3.study.create import create_study, encode_png, parse_methods
from sr3.study.report import write_report
from sr3.study.server import create_app
from sr3.study.testing import make_folders


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = [], 8
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        chunks.append(data[i + 4:i + 8])
        i += 12 + n
    return chunks


def rows(db, sql):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_create_counts_balance_and_encoding(tmp_path):
    dirs = make_folders(tmp_path, ["sr3", "regression"], n_images=6, size=16)
    db = tmp_path / "study.db"
    summary = create_study(dirs["reference"], {"sr3": dirs["sr3"], "regression": dirs["regression"]}, db,
                           tasks=("camera", "reference"), scale=4, trials_per_rater=4, catch_rate=0.25, seed=3)
    # 2 tasks x 2 methods x 6 images method trials; 2 tasks x 6 images catch trials.
    assert summary["images"] == 6
    assert summary["method_trials"] == 24 and summary["catch_trials"] == 12
    assert summary["trials_per_rater"] == 5  # 4 method + round(4 * 0.25) catch
    assert not list(tmp_path.glob(".study.db.*.tmp"))  # built beside, renamed into place

    counts = Counter(rows(db, "SELECT task, kind, method, real_side FROM trials"))
    for task in ("camera", "reference"):
        for method in ("sr3", "regression"):
            # every (task, method) has all 6 images once
            assert counts[(task, "method", method, "left")] + counts[(task, "method", method, "right")] == 6
        # sides balanced exactly per task: 12 method trials -> 6 left, 6 right
        left = sum(n for (t, k, _, side), n in counts.items() if t == task and k == "method" and side == "left")
        assert left == 6
        assert counts[(task, "catch", None, "left")] == 3 and counts[(task, "catch", None, "right")] == 3

    # Each image as served: 16x16 (LR 4x4), uncompressed PNG, IHDR/IDAT/IEND only.
    served = rows(db, "SELECT t.task, li.width, li.height, lb.data, ri.width, ri.height, rb.data, mi.width, mi.height "
                      "FROM trials t JOIN images li ON li.id = t.left_image JOIN blobs lb ON lb.id = li.blob_id "
                      "JOIN images ri ON ri.id = t.right_image JOIN blobs rb ON rb.id = ri.blob_id "
                      "LEFT JOIN images mi ON mi.id = t.middle_image")
    assert len(served) == 36
    for task, lw, lh, ldata, rw, rh, rdata, mw, mh in served:
        assert (lw, lh) == (rw, rh) == (16, 16)
        assert len(ldata) == len(rdata) == len(encode_png(Image.new("RGB", (16, 16))))
        assert png_chunks(ldata) == png_chunks(rdata) == [b"IHDR", b"IDAT", b"IEND"]
        assert ldata[8:33] == rdata[8:33]  # identical IHDR: size, bit depth, colour type, filter, interlace
        assert (mw, mh) == ((4, 4) if task == "reference" else (None, None))
    # Image ids are opaque, never repeated between trials.
    ids = [i for r in rows(db, "SELECT left_image, right_image, middle_image FROM trials") for i in r if i]
    assert len(ids) == len(set(ids)) == 24 * 2 + 12 * 2 + 18
    assert all(len(i) == 22 for i in ids)


def test_same_seed_same_design_other_seed_differs(tmp_path):
    dirs = make_folders(tmp_path, ["a", "b"], n_images=8)
    query = "SELECT task, kind, method, image_name, real_side FROM trials ORDER BY kind, pool_index"
    designs = []
    for name, seed in (("1.db", 7), ("2.db", 7), ("3.db", 8)):
        create_study(dirs["reference"], {"a": dirs["a"], "b": dirs["b"]}, tmp_path / name, seed=seed,
                     trials_per_rater=4)
        designs.append(rows(tmp_path / name, query))
    assert designs[0] == designs[1]
    assert designs[0] != designs[2]


def test_metadata_and_file_names_are_stripped(tmp_path):
    dirs = make_folders(tmp_path, ["m"], n_images=2, size=16)
    # Give one reference EXIF and a text chunk carrying its file name, the output an ICC-like text chunk.
    img = Image.open(dirs["reference"] / "img0.png").convert("RGB")
    exif = Image.Exif()
    exif[0x010E] = "secret-description"  # ImageDescription
    img.save(dirs["reference"] / "img0.jpg", exif=exif.tobytes(), quality=95)
    (dirs["reference"] / "img0.png").unlink()
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "img0-secret-title")
    Image.open(dirs["m"] / "img0.png").save(dirs["m"] / "img0.png", pnginfo=info)
    db = tmp_path / "s.db"
    create_study(dirs["reference"], {"m": dirs["m"]}, db, catch_rate=0, trials_per_rater=2)
    for (data,) in rows(db, "SELECT data FROM blobs"):
        assert png_chunks(data) == [b"IHDR", b"IDAT", b"IEND"]
        assert b"secret" not in data and b"img0" not in data


def test_bad_and_mismatched_images_are_skipped_with_warning(tmp_path):
    dirs = make_folders(tmp_path, ["m"], n_images=4, size=16)
    (dirs["reference"] / "img1.png").write_bytes(b"not a png at all")            # corrupt reference
    Image.new("RGB", (20, 16)).save(dirs["m"] / "img2.png")                      # wrong size output
    Image.new("RGB", (16, 16)).save(dirs["m"] / "extra.png")                      # no reference
    (dirs["reference"] / "img3.png").rename(dirs["reference"] / "img3.bmp")      # other extension still matches
    Image.open(dirs["reference"] / "img3.bmp").save(dirs["reference"] / "img3.bmp", format="BMP")
    with pytest.warns(UserWarning) as caught:
        summary = create_study(dirs["reference"], {"m": dirs["m"]}, tmp_path / "s.db", catch_rate=0)
    messages = " | ".join(str(w.message) for w in caught)
    assert "img1.png" in messages and ("corrupt" in messages or "not a readable image" in messages)
    assert "img2" in messages and "same size" in messages
    assert "extra" in messages
    assert summary["images"] == 2
    assert sorted(r[0] for r in rows(tmp_path / "s.db", "SELECT DISTINCT image_name FROM trials")) == ["img0", "img3"]


def test_lr_folder_is_used_for_the_reference_task(tmp_path):
    dirs = make_folders(tmp_path, ["m"], n_images=2, size=16)
    lr = tmp_path / "lr"
    lr.mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(lr / f"img{i}.png")
    db = tmp_path / "s.db"
    create_study(dirs["reference"], {"m": dirs["m"]}, db, tasks=("reference",), lr=lr, catch_rate=0,
                 trials_per_rater=2)
    sizes = rows(db, "SELECT DISTINCT i.width, i.height FROM trials t JOIN images i ON i.id = t.middle_image")
    assert sizes == [(8, 8)]


@pytest.mark.parametrize("case, message", [
    ("empty", "no images found"),
    ("nomatch", "no file name is shared"),
    ("exists", "already exists"),
    ("noscale", "needs the LR input"),
    ("badname", "method names are"),
    ("baddir", "no such folder"),
    ("outdir", "is a folder; give --out a new file name"),
    ("outroot", "is a folder; give --out a new file name"),
])
def test_user_errors(tmp_path, case, message):
    dirs = make_folders(tmp_path, ["m"], n_images=2)
    methods = {"m": dirs["m"]}
    kwargs = {}
    out = tmp_path / "s.db"
    if case == "empty":
        (tmp_path / "empty").mkdir()
        methods = {"m": tmp_path / "empty"}
    elif case == "nomatch":
        other = make_folders(tmp_path / "o", ["x"], n_images=2, prefix="other")
        methods = {"m": other["x"]}
    elif case == "exists":
        out.write_bytes(b"answers!")
    elif case == "noscale":
        kwargs["tasks"] = ("reference",)
    elif case == "baddir":
        methods = {"m": tmp_path / "missing"}
    elif case == "outdir":
        out = tmp_path
    elif case == "outroot":
        out = "/"
    with pytest.raises(UserError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no output for ..." precedes the error in the nomatch case
        if case == "badname":
            parse_methods(["bad name=x"])
        create_study(dirs["reference"], methods, out, **kwargs)
    if case == "exists":
        assert out.read_bytes() == b"answers!"  # never overwritten
    elif case.startswith("out"):
        assert not list(tmp_path.glob(".*.tmp"))
    else:
        assert not out.exists() and not list(tmp_path.glob(".s.db.*"))


def test_cli_create_and_one_line_errors(tmp_path, capsys):
    dirs = make_folders(tmp_path, ["a", "b"], n_images=3)
    out = tmp_path / "s.db"
    assert main(["study", "create", "--reference", str(dirs["reference"]), "--methods",
                 f"a={dirs['a']},b={dirs['b']}", "--out", str(out), "--task", "both", "--scale", "2",
                 "--trials-per-rater", "2", "--seed", "1"]) == 0
    assert "3 images" in capsys.readouterr().out
    config = StudyConfig.from_json(rows(out, "SELECT value FROM meta WHERE key = 'config'")[0][0])
    assert config.tasks == ("camera", "reference") and config.methods == ("a", "b")
    assert config.trials_per_rater == 2 and config.seed == 1 and config.display_seconds == 3.0
    assert main(["study", "create", "--reference", str(dirs["reference"]), "--methods", f"a={dirs['a']}",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sr3: error: ") and "already exists" in err
    assert main(["study", "serve", str(tmp_path / "nope.db")]) == 2
    assert "no such study database" in capsys.readouterr().err
    assert main(["study", "report", str(tmp_path / "nope.db"), "--out", str(tmp_path / "r")]) == 2
    assert "no such study database" in capsys.readouterr().err
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    assert main(["study", "report", str(tmp_path / "junk.db"), "--out", str(tmp_path / "r")]) == 2
    assert "not an sr3 study database" in capsys.readouterr().err


def _config(**kw):
    base = dict(tasks=("camera",), methods=("A", "B", "C"), trials_per_rater=5, catch_rate=0.2, seed=0)
    base.update(kw)
    return StudyConfig(**base)


def test_design_rater_sequences_cover_pool_without_repeating_images():
    config = _config()
    names = [f"n{i}" for i in range(10)]
    pool = design.build_pool(config, names)
    method = [t for t in pool if t.kind == "method"]
    catch = [t for t in pool if t.kind == "catch"]
    assert len(method) == 30 and len(catch) == 10
    seen = Counter()
    for k in range(6):  # 6 raters x 5 trials = the 30 method trials exactly once
        seq = design.rater_sequence(config, k, method, catch)
        assert len(seq) == 6 and sum(t.kind == "catch" for t in seq) == 1
        images = [t.image_name for t in seq]
        assert len(set(images)) == 6  # no photo twice for one rater, catch trial included
        seen.update((t.method, t.image_name) for t in seq if t.kind == "method")
        assert design.rater_sequence(config, k, method, catch) == seq  # seeded
    assert len(seen) == 30 and set(seen.values()) == {1}
    # With both tasks, raters alternate.
    both = _config(tasks=("camera", "reference"))
    assert [design.rater_task(both, k) for k in range(4)] == ["camera", "reference", "camera", "reference"]


def test_encode_png_is_canonical():
    rng = np.random.default_rng(0)
    a = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    b = Image.new("RGB", (10, 12), (128, 128, 128))
    b.info["dpi"] = (300, 300)
    ea, eb = encode_png(a), encode_png(b)
    assert len(ea) == len(eb) and png_chunks(ea) == png_chunks(eb) == [b"IHDR", b"IDAT", b"IEND"]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(ea))), np.asarray(a))  # lossless


@pytest.mark.parametrize("field, value, message", [
    ("display_seconds", float("inf"), r"--display-seconds inf: must be a finite number in \[0, 3600\]"),
    ("display_seconds", float("nan"), "--display-seconds nan: must be a finite number"),
    ("display_seconds", -1.0, "--display-seconds -1.0: must be"),
    ("display_seconds", 1e9, "--display-seconds 1000000000.0: must be"),  # setTimeout would fire at once
    ("trials_per_rater", 0, r"--trials-per-rater 0: must be an integer in \[1, "),
    ("trials_per_rater", 2.5, "--trials-per-rater 2.5: must be an integer"),
    ("catch_rate", 1.0, r"--catch-rate 1.0: must be a finite number in \[0, 1\)"),
    ("catch_rate", float("nan"), "--catch-rate nan"),
    ("seed", -1, r"--seed -1: must be an integer in \[0, 18446744073709551615\]"),
    ("seed", 2**64, "--seed 18446744073709551616: must be"),
    ("seed", True, "--seed True: must be an integer"),
    ("scale", 1, "--scale 1: must be an integer in"),
    ("scale", 0, "--scale 0: must be"),
    ("min_catch_pass", float("inf"), "--min-catch-pass inf"),
    ("raters_per_client", -1, "--raters-per-client -1"),
    ("rater_window_seconds", 0.0, r"--rater-window-seconds 0.0: must be a finite number in \(0, "),
    ("rater_window_seconds", float("inf"), "--rater-window-seconds inf"),
    ("tasks", ("camera", "camera"), "--task"),
    ("tasks", (), "--task"),
    ("methods", (), "--methods"),
    ("schema_version", 99, "study schema version 99"),
])
def test_config_range_checks(field, value, message):
    with pytest.raises(UserError, match=message):
        _config(**{field: value})


@pytest.mark.parametrize("flag, value", [("--display-seconds", "inf"), ("--display-seconds", "nan"),
                                         ("--display-seconds", "-1"), ("--seed", "-1"),
                                         ("--raters-per-client", "-3"), ("--scale", "0")])
def test_cli_create_refuses_bad_numbers_in_one_line(tmp_path, capsys, flag, value):
    dirs = make_folders(tmp_path, ["a"], n_images=2)
    out = tmp_path / "s.db"
    code = main(["study", "create", "--reference", str(dirs["reference"]), "--methods", f"a={dirs['a']}",
                 "--out", str(out), "--task", "both", flag, value])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"sr3: error: {flag} ")
    assert not out.exists() and not list(tmp_path.glob(".s.db.*"))


def test_a_damaged_config_is_a_one_line_error_at_serve_and_report(tmp_path, capsys):
    dirs = make_folders(tmp_path, ["a"], n_images=2)
    db = tmp_path / "s.db"
    create_study(dirs["reference"], {"a": dirs["a"]}, db, trials_per_rater=1)
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value = replace(value, '\"display_seconds\": 3.0', '\"display_seconds\": Infinity') "
                "WHERE key = 'config'")
    con.commit()
    con.close()
    assert "Infinity" in rows(db, "SELECT value FROM meta WHERE key = 'config'")[0][0]
    with pytest.raises(UserError, match="invalid study config .*--display-seconds inf"):
        create_app(db, None)
    assert main(["study", "report", str(db), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--display-seconds inf" in err


def test_report_refuses_bad_numbers(tmp_path):
    dirs = make_folders(tmp_path, ["a"], n_images=2)
    db = tmp_path / "s.db"
    create_study(dirs["reference"], {"a": dirs["a"]}, db, trials_per_rater=1)
    for kwargs, message in [({"n_boot": 10**9}, "--bootstrap 1000000000"), ({"n_boot": -1}, "--bootstrap -1"),
                            ({"seed": -1}, "--seed -1"), ({"min_catch_pass": float("nan")}, "--min-catch-pass nan")]:
        with pytest.raises(UserError, match=message):
            write_report(db, tmp_path / "r", **kwargs)
    assert not (tmp_path / "r").exists()


def test_per_rater_counts_never_exceed_the_photos():
    # (trials_per_rater, catch_rate, n_images) -> (method, catch) trials of one rater
    cases = {(50, 0.1, 100): (50, 5), (50, 0.1, 26): (24, 2), (6, 0.34, 6): (4, 2), (50, 0.1, 4): (3, 1),
             (5, 0.2, 1): (1, 0), (5, 0.0, 3): (3, 0), (3, 0.5, 0): (0, 0)}
    for (per_rater, rate, n_images), expected in cases.items():
        assert design.per_rater_counts(_config(trials_per_rater=per_rater, catch_rate=rate), n_images) == expected


def test_create_warns_when_too_small_to_avoid_repeats(tmp_path):
    dirs = make_folders(tmp_path, ["a", "b"], n_images=4, size=8)
    with pytest.warns(UserWarning, match="4 images are too few for 50 method \\+ 5 catch trials per rater .* "
                                         "each rater gets 3 method \\+ 1 catch trials"):
        summary = create_study(dirs["reference"], {"a": dirs["a"], "b": dirs["b"]}, tmp_path / "s.db")
    assert summary["trials_per_rater"] == 4


def test_a_study_that_appears_during_the_build_is_not_overwritten(tmp_path, monkeypatch):
    dirs = make_folders(tmp_path, ["a"], n_images=2)
    out = tmp_path / "s.db"
    real_store = create_module._store_trials

    def store_then_race(*args):
        real_store(*args)
        out.write_bytes(b"another study's answers")  # a second `create` finished first

    monkeypatch.setattr(create_module, "_store_trials", store_then_race)
    with pytest.raises(UserError, match="already exists"):
        create_study(dirs["reference"], {"a": dirs["a"]}, out, trials_per_rater=1)
    assert out.read_bytes() == b"another study's answers"
    assert not list(tmp_path.glob(".s.db.*"))

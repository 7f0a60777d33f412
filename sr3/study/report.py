"""``sr3 study report``: confusion rates with bootstrap CIs, rater screening, chart and exports.

Confusion rate (SR3's "fool rate", Saharia et al. 2021, Fig. 5) of a method in a
task = share of that method's trials in which the rater picked the method's
output, not the real photo.  50% means indistinguishable.

Screening: a rater who answers catch trials (obviously degraded image vs the
real one) wrongly more often than ``min_catch_pass`` allows is excluded from
every confusion rate; the report lists who and why.  Raters without answers
are listed too but contribute nothing.

Uncertainty: 95% percentile bootstrap that resamples raters *and* images with
replacement (each answer weighted by how often its rater and its image were
drawn), because both are samples from larger populations; seeded.
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..atomic import atomic_write_bytes, atomic_write_text
from .config import QUESTIONS, SEED_LIMIT, check_integer, check_number
from .db import RESPONSE_COLUMNS, StudyDB, load_raters, load_responses
from .design import KIND_CATCH, KIND_METHOD

_CHUNK = 250  # bootstrap replicates per vectorised block (bounds memory)
# A million replicates pin a 95% percentile to well under 0.1 percentage point;
# more only costs time (hours on a large study).
MAX_BOOTSTRAP = 1_000_000


def bootstrap_ci(rater_idx: np.ndarray, image_idx: np.ndarray, fooled: np.ndarray, *,
                 n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the mean of ``fooled`` resampling raters and images (two-way bootstrap)."""
    if len(fooled) == 0 or n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    n_r, n_i = rater_idx.max() + 1, image_idx.max() + 1
    f = fooled.astype(np.float64)
    stats = []
    for start in range(0, n_boot, _CHUNK):
        b = min(_CHUNK, n_boot - start)
        wr = rng.multinomial(n_r, np.full(n_r, 1.0 / n_r), size=b).astype(np.float64)
        wi = rng.multinomial(n_i, np.full(n_i, 1.0 / n_i), size=b).astype(np.float64)
        w = wr[:, rater_idx] * wi[:, image_idx]
        total = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            stats.append((w @ f) / total)  # nan when no drawn rater saw a drawn image
    stats = np.concatenate(stats)
    stats = stats[~np.isnan(stats)]
    if len(stats) == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _group_seed(seed: int, task: str, method: str) -> int:
    # Stable across runs and independent of group order.
    return (seed * 1_000_003 + zlib.crc32(f"{task}\0{method}".encode())) % 2**63


def analyse(responses: list[dict], raters: list[dict], *, methods: list[str], tasks: list[str],
            min_catch_pass: float, n_boot: int = 2000, seed: int = 0) -> dict:
    """All numbers of the report from the answers (the rows of :func:`~.db.load_responses`)."""
    by_rater: dict[str, list[dict]] = defaultdict(list)
    for row in responses:
        by_rater[row["rater"]].append(row)

    rater_rows = []
    for info in raters:
        rows = by_rater.get(info["rater"], [])
        catch = [r for r in rows if r["kind"] == KIND_CATCH]
        passed = sum(r["chose_real"] for r in catch)
        pass_rate = passed / len(catch) if catch else None
        if not rows:
            reason = "no answers"
        elif pass_rate is not None and pass_rate < min_catch_pass:
            reason = (f"failed {len(catch) - passed} of {len(catch)} catch trials "
                      f"(pass rate {pass_rate:.2f} < {min_catch_pass:.2f})")
        else:
            reason = ""
        rts = [r["rt_ms"] for r in rows]
        rater_rows.append({
            "rater": info["rater"], "task": info["task"], "assigned": info["assigned"], "answered": len(rows),
            "completed": len(rows) == info["assigned"] and info["assigned"] > 0,
            "catch_answered": len(catch), "catch_passed": passed, "catch_pass_rate": pass_rate,
            "median_rt_ms": float(np.median(rts)) if rts else None,
            "included": reason == "", "excluded_reason": reason or None, "agreement": None,
            "agreement_trials": 0})
    included = {r["rater"] for r in rater_rows if r["included"]}
    kept = [r for r in responses if r["kind"] == KIND_METHOD and r["rater"] in included]

    # Agreement: for each trial answered by several kept raters, the share of the
    # *other* raters who chose the same side; a rater's agreement is its mean over
    # such trials, the overall figure is the share of agreeing rater pairs.
    by_trial: dict[str, list[str]] = defaultdict(list)
    for r in kept:
        by_trial[r["trial"]].append((r["rater"], r["choice"]))
    per_rater: dict[str, list[float]] = defaultdict(list)
    pairs = agreeing = 0
    for answers in by_trial.values():
        n = len(answers)
        if n < 2:
            continue
        counts = {"left": 0, "right": 0}
        for _, choice in answers:
            counts[choice] += 1
        for rater, choice in answers:
            per_rater[rater].append((counts[choice] - 1) / (n - 1))
        pairs += n * (n - 1) // 2
        agreeing += sum(c * (c - 1) // 2 for c in counts.values())
    for row in rater_rows:
        values = per_rater.get(row["rater"])
        if values:
            row["agreement"] = float(np.mean(values))
            row["agreement_trials"] = len(values)

    confusion = []
    for task in tasks:
        for method in methods:
            rows = [r for r in kept if r["task"] == task and r["method"] == method]
            fooled = np.array([not r["chose_real"] for r in rows], dtype=bool)
            # Index raters by arrival order, not by their random public ids, so the
            # bootstrap draws depend only on the seed and the answers.
            r_ids = {name: i for i, name in enumerate(sorted({r["rater_index"] for r in rows}))}
            i_ids = {name: i for i, name in enumerate(sorted({r["image_name"] for r in rows}))}
            lo, hi = bootstrap_ci(np.array([r_ids[r["rater_index"]] for r in rows], dtype=np.int64),
                                  np.array([i_ids[r["image_name"]] for r in rows], dtype=np.int64),
                                  fooled, n_boot=n_boot, seed=_group_seed(seed, task, method))
            confusion.append({
                "task": task, "method": method, "n_answers": len(rows), "n_fooled": int(fooled.sum()),
                "confusion_rate": float(fooled.mean()) if len(rows) else None,
                "ci_low": None if np.isnan(lo) else lo, "ci_high": None if np.isnan(hi) else hi,
                "n_raters": len(r_ids), "n_images": len(i_ids)})

    all_catch = [r for r in responses if r["kind"] == KIND_CATCH]
    screened = [r for r in rater_rows if r["catch_answered"]]
    return {
        "confusion": confusion,
        "raters": rater_rows,
        "excluded": [{"rater": r["rater"], "reason": r["excluded_reason"]} for r in rater_rows if not r["included"]],
        "catch": {"answers": len(all_catch), "passed": int(sum(r["chose_real"] for r in all_catch)),
                  "pass_rate": (sum(r["chose_real"] for r in all_catch) / len(all_catch)) if all_catch else None,
                  "raters_screened": len(screened),
                  "raters_passed": sum(r["catch_pass_rate"] >= min_catch_pass for r in screened),
                  "min_catch_pass": min_catch_pass},
        "agreement": {"rater_pairs": pairs, "agreeing_pairs": agreeing,
                      "pairwise_agreement": agreeing / pairs if pairs else None},
        "raters_total": len(raters), "raters_included": len(included),
        "bootstrap": {"replicates": n_boot, "seed": seed, "level": 0.95, "resampled": ["raters", "images"]},
    }


def plot(result: dict, tasks: list[str], methods: list[str], title: str | None = None):
    """Bar chart in the style of SR3's Fig. 5: fool rate per method, 50% line, 95% CIs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(1.2 + 1.5 * len(methods) * len(tasks), 3.6),
                             squeeze=False, sharey=True)
    colors = plt.get_cmap("tab10").colors
    highest = 0.0
    for ax, task in zip(axes[0], tasks):
        rows = {r["method"]: r for r in result["confusion"] if r["task"] == task}
        x = np.arange(len(methods))
        rates = [100 * (rows[m]["confusion_rate"] or 0) for m in methods]
        lo = [100 * rows[m]["ci_low"] if rows[m]["ci_low"] is not None else np.nan for m in methods]
        hi = [100 * rows[m]["ci_high"] if rows[m]["ci_high"] is not None else np.nan for m in methods]
        yerr = np.array([[max(r - l, 0) for r, l in zip(rates, lo)], [max(h - r, 0) for r, h in zip(rates, hi)]])
        ax.bar(x, rates, color=[colors[i % len(colors)] for i in range(len(methods))], width=0.65,
               yerr=np.nan_to_num(yerr), capsize=4, ecolor="#333")
        tops = [h if not np.isnan(h) else r for r, h in zip(rates, hi)]
        for xi, rate, top, m in zip(x, rates, tops, methods):
            n = rows[m]["n_answers"]
            ax.text(xi, top + 1.5, f"{rate:.1f}%" if n else "n/a", ha="center", va="bottom", fontsize=9)
        ax.axhline(50, color="#555", linestyle="--", linewidth=1)
        ax.set_xticks(x, methods, rotation=20 if len(methods) > 3 else 0)
        highest = max([highest, *tops])
        ax.set_title(QUESTIONS[task] if len(QUESTIONS[task]) < 40 else
                     ("Task without input" if task == "camera" else "Task with input shown"), fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0][0].set_ylim(0, min(100, max(60, 10 * np.ceil((highest + 8) / 10))))  # shared by all panels
    axes[0][0].set_ylabel("Fool rate (%), 95% CI")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def _csv(rows: list[dict], columns) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_report(db_path: str | Path, out: str | Path, *, n_boot: int = 2000, seed: int = 0,
                 min_catch_pass: float | None = None, title: str | None = None) -> dict:
    """Analyse the study at ``db_path`` and write the report files into folder ``out``."""
    check_integer("--bootstrap", n_boot, 0, MAX_BOOTSTRAP, "e.g. 2000; 0 = no intervals")
    check_integer("--seed", seed, 0, SEED_LIMIT - 1)
    if min_catch_pass is not None:
        check_number("--min-catch-pass", min_catch_pass, 0, 1, "e.g. 0.8")
    db = StudyDB(db_path)
    try:
        config = db.config()
        with db.read() as tx:
            responses = load_responses(tx)
            raters = load_raters(tx)
    finally:
        db.close()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create folder ({e.strerror}); choose another --out") from None
    threshold = config.min_catch_pass if min_catch_pass is None else min_catch_pass
    result = analyse(responses, raters, methods=list(config.methods), tasks=list(config.tasks),
                     min_catch_pass=threshold, n_boot=n_boot, seed=seed)
    result["study"] = {"database": str(db_path), "config": json.loads(config.to_json()),
                       "answers": len(responses)}
    result["study"]["config"].pop("consent_text", None)

    atomic_write_text(out / "report.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "confusion.csv", _csv(result["confusion"], result["confusion"][0].keys()))
    atomic_write_text(out / "raters.csv", _csv(result["raters"], [
        "rater", "task", "assigned", "answered", "completed", "catch_answered", "catch_passed",
        "catch_pass_rate", "agreement", "agreement_trials", "median_rt_ms", "included", "excluded_reason"]))
    atomic_write_text(out / "responses.csv", _csv(responses, RESPONSE_COLUMNS))
    fig = plot(result, list(config.tasks), list(config.methods), title=title)
    for fmt in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150, metadata={"Date": None} if fmt == "svg" else None)
        atomic_write_bytes(out / f"confusion.{fmt}", buf.getvalue())
    import matplotlib.pyplot as plt
    plt.close(fig)
    return result


def summary_lines(result: dict) -> list[str]:
    """A short human-readable summary for the terminal."""
    lines = [f"raters: {result['raters_included']} included of {result['raters_total']}"]
    for e in result["excluded"]:
        lines.append(f"  excluded {e['rater']}: {e['reason']}")
    c = result["catch"]
    if c["answers"]:
        lines.append(f"catch trials: {c['passed']}/{c['answers']} passed ({100 * c['pass_rate']:.1f}%)")
    for row in result["confusion"]:
        if row["n_answers"]:
            ci = (f" [95% CI {100 * row['ci_low']:.1f}-{100 * row['ci_high']:.1f}]"
                  if row["ci_low"] is not None else "")
            lines.append(f"{row['task']:9s} {row['method']:>16s}: confusion {100 * row['confusion_rate']:.1f}% "
                         f"({row['n_fooled']}/{row['n_answers']}){ci}")
        else:
            lines.append(f"{row['task']:9s} {row['method']:>16s}: no answers")
    return lines

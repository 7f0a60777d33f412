"""One cascade row over SR training seeds: mean and 95% t-interval of FD, KID and CAS.

    python experiments/cdm_seed_interval.py experiments/results/cdm_best_cascade_cpu_base24k_sr6k_dpmpp_w1.json \\
        experiments/results/cdm_best_cascade_cpu_base24k_sr6k_s1_dpmpp_w1.json \\
        experiments/results/cdm_best_cascade_cpu_base24k_sr6k_s2_dpmpp_w1.json --row w1

Each file is one ``cdm_best_cascade.py --out`` report, the same command with another ``--sr``
run (one SR training seed each); the files must agree on everything but the SR run (same
base, samples, sampler and guidance), or the interval would mix settings.  The interval is
the ablation's own (experiments/cdm_ablation.py ``interval``: Student t over seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the ablation's interval, from the same folder
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing sr3

from cdm_ablation import interval  # noqa: E402
from sr3.errors import UserError  # noqa: E402

METRICS = ("fd", "kid", "cas_top1")
SAME_SETTINGS = ("feature_network", "samples", "base_steps", "sr_steps", "sampler")  # what must not differ


def cascade_setting(report: dict) -> dict:
    """Everything of a report that must be equal across SR seeds: the sampling settings, the SR stage's
    augmentation level and mode, and the base run's training facts (the entry of ``training`` that is
    not the SR run)."""
    sr_run = report["sr"]["run"]
    return {**{key: report.get(key) for key in SAME_SETTINGS},
            "sr level": report["sr"]["level"], "sr truncated": report["sr"]["truncated"],
            "base": {name: facts for name, facts in report["training"].items() if name != sr_run}}


def seed_interval(reports: list[dict], row: str) -> dict:
    """Mean and 95% interval of each metric of ``row`` over reports that differ only in their SR run."""
    settings = [cascade_setting(r) for r in reports]
    for key in settings[0]:
        if len({json.dumps(setting[key], sort_keys=True) for setting in settings}) != 1:
            raise UserError(f"the reports differ in '{key}': give reports of one cascade setting, one SR seed each")
    runs = [r["sr"]["run"] for r in reports]
    if len(set(runs)) != len(runs):
        raise UserError(f"an SR run appears twice ({runs}): give one report per SR training seed")
    missing = [r["sr"]["run"] for r in reports if row not in r["rows"]]
    if missing:
        raise UserError(f"row '{row}' is missing from the reports of {missing}: rerun them with the same --guidance")
    return {"row": row, "sr_runs": runs,
            **{m: interval([r["rows"][row][m] for r in reports]) for m in METRICS}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("reports", type=Path, nargs="+", help="cdm_best_cascade.py --out JSON files, one per SR seed")
    p.add_argument("--row", default="w1", help="row name in the reports (w<guidance>, e.g. w1)")
    args = p.parse_args(argv)
    try:
        reports = [json.loads(path.read_text()) for path in args.reports]
        print(json.dumps(seed_interval(reports, args.row), indent=1))
    except (OSError, json.JSONDecodeError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

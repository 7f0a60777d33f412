"""The augmentation arms on the best cascade's base: one set of base samples under every SR run,
FD/KID/CAS per run, a 95% interval per arm, and each arm against no augmentation.

    python experiments/cdm_arms.py --runs runs/cdm-arms6k --sr sr-none-s0 sr-none-s1 sr-none-s2 \\
        sr-noise-s0 sr-noise-s1 sr-noise-s2 sr-blur-s0 sr-blur-s1 sr-blur-s2 \\
        --classifier runs/cdm-cpu/classifier --data ../shared/data/fashion-mnist \\
        --base-sampler dpmpp --eta 1 --guidance 1 --out experiments/results/cdm_arms_base24k_sr6k_w1.json

The ablation (experiments/cdm_ablation.py) trains and compares the arms at one training length;
this script asks its central question again — does conditioning augmentation help the
cascade? — with SR stages trained as long as the best cascade's and sampled on the best
cascade's base.  SR run folders are named ``sr-<arm>-s<seed>`` (arms: none, noise, blur); the
base is sampled once and every SR run refines the same base samples with the same seeds at
s = 0, so the rows differ only in the SR stage's training.  Rows ``<arm>-s0/seed<k>`` and the
intervals are the ablation's own (``summarise``: Student t over training seeds; each arm minus
``none`` with a pooled two-sample t-interval); the table is plot_cdm_ablation.py's.  The
report is rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the ablation's scoring, from the same folder

from cdm_ablation import ARMS, summarise  # noqa: E402
from cdm_best_cascade import Scoring, add_cascade_arguments, command_line  # noqa: E402
from plot_cdm_ablation import table  # noqa: E402

from sr3.atomic import atomic_write_text  # noqa: E402

RUN_NAME = re.compile(r"sr-(?P<arm>[a-z]+)-s(?P<seed>\d+)")  # the ablation's SR run folder names


def differences_table(report: dict) -> str:
    """Each arm's FD and CAS minus no augmentation's, with the pooled 95% interval (its half-width
    is the smallest difference these seeds resolve)."""
    lines = ["| arm − none | FD difference | resolved | CAS difference (points) | resolved |", "|---|---:|:-:|---:|:-:|"]
    for name, row in report["ablation"].items():
        vs_none = row.get("vs_none") or {}
        fd, cas = vs_none.get("fd"), vs_none.get("cas_top1")
        if fd and cas:
            lines.append(f"| {name} − none-s0 | {fd['diff']:+.2f} ± {fd['ci95']:.2f} | {'yes' if fd['resolved'] else 'no'} "
                         f"| {100 * cas['diff']:+.1f} ± {100 * cas['ci95']:.1f} | {'yes' if cas['resolved'] else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_cascade_arguments(p)
    p.add_argument("--sr", nargs="+", required=True,
                   help=f"SR run folders inside --runs, named sr-<arm>-s<seed> (arm: {', '.join(ARMS)})")
    p.add_argument("--guidance", type=float, default=0.0, help="guidance weight w >= 0 of the base")
    args = p.parse_args(argv)
    names = [RUN_NAME.fullmatch(name) for name in args.sr]
    for run, name in zip(args.sr, names):
        if name is None or name["arm"] not in ARMS:
            raise SystemExit(f"{args.runs / run}: name SR run folders sr-<arm>-s<seed> with arm one of {', '.join(ARMS)}")
    scoring = Scoring(args, command_line("cdm_arms.py", argv), args.sr)
    report = scoring.report
    steps = {run: report["training"][run]["steps"] for run in args.sr}
    if len(set(steps.values())) != 1:  # arms trained for different lengths would confound the comparison
        raise SystemExit(f"the SR runs trained for different numbers of steps ({steps}): finish them equally")
    report.update(guidance=args.guidance, sr_level=0.0, ablation={})
    plan = [(f"{arm}-s0", arm, 0.0, False) for arm in ARMS if any(name["arm"] == arm for name in names)]
    base_images = None  # sampled with the first SR run, then shared: the base does not depend on the SR stage
    for run, name in zip(args.sr, names):
        t = time.perf_counter()
        outputs = scoring.cascade(run, 0.0, False, args.guidance).generate(scoring.labels, scoring.seeds,
                                                                                base_images=base_images)
        base_images = outputs[0]
        row = report["rows"][f"{name['arm']}-s0/seed{int(name['seed'])}"] = {
            **scoring.judge(outputs[-1], scoring.labels), "run": run,
            "seconds": round(time.perf_counter() - t, 1)}  # the first row's include sampling the base
        report["ablation"] = summarise(report["rows"], plan)
        atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
        print(f"{run}: fd {row['fd']:.2f} kid {row['kid']:.3f} cas {row['cas_top1']:.3f}", flush=True)
    print(table(report))
    print(differences_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

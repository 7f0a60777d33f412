"""``sr3 study create | serve | report``: the 2AFC human study's commands (library in sr3/study/).

The study's settings (display time, trials, catch rate, seed, ...) are flags generated
from :class:`sr3.study.config.StudyConfig`, whose defaults and ranges live there only."""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

from ..config import add_dataclass_arguments, flag_values
from ..errors import UserError
from ..study.config import TASKS, StudyConfig
from ..study.create import create_study, parse_methods
from ..study.report import summary_lines, write_report
from ..study.server import serve

# StudyConfig fields that are not flags: set from --task/--methods/--consent-file, or bookkeeping.
NOT_FLAGS = ("tasks", "methods", "consent_text", "n_images", "schema_version", "created_at", "extra")


def add_parser(subparsers) -> None:
    study = subparsers.add_parser(
        "study", help="human 2AFC study: create, serve to raters, report confusion rates",
        description="Run SR3's two-alternative forced-choice human evaluation (Saharia et al. 2021, Sec. 4.2).")
    sub = study.add_subparsers(dest="study_command", required=True, metavar="STEP")

    p = sub.add_parser("create", help="build a study database from references and method outputs")
    p.add_argument("--reference", required=True, metavar="DIR", help="folder of real high-resolution images")
    p.add_argument("--methods", required=True, action="append", metavar="NAME=DIR[,NAME=DIR...]",
                   help="each method's outputs, matched to references by file name; may be repeated")
    p.add_argument("--out", required=True, metavar="STUDY.db", help="new SQLite file (or postgresql:// URL)")
    p.add_argument("--task", choices=[*TASKS, "both"], default="camera",
                   help="camera: 'which is from a camera?'; reference: LR input shown in the middle; "
                        "both: raters alternate (default: camera)")
    add_dataclass_arguments(p, StudyConfig, title="study settings", skip=NOT_FLAGS)
    p.add_argument("--lr", metavar="DIR", help="LR inputs for the reference task, matched by file name")
    p.add_argument("--consent-file", metavar="FILE", help="plain-text consent/instructions shown before the study")
    p.set_defaults(func=_create)

    p = sub.add_parser("serve", help="serve the rater web page")
    p.add_argument("db", metavar="STUDY.db")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--admin-token", metavar="TOKEN",
                   help="token for /admin/status and /admin/export (default: $SR3_STUDY_ADMIN_TOKEN, "
                        "else a random one printed at start)")
    p.add_argument("--max-raters", type=int, metavar="N", help="refuse new raters after N (0 = admit none)")
    p.add_argument("--raters-per-client", type=int, metavar="N",
                   help="replace the study's limit of new raters per client address for this run (0 = no limit)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("report", help="confusion rates, CIs, rater screening, chart")
    p.add_argument("db", metavar="STUDY.db")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap replicates (default: 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    p.add_argument("--min-catch-pass", type=float, metavar="F", help="override the study's exclusion threshold")
    p.add_argument("--title", help="title of the chart")
    p.set_defaults(func=_report)


def _create(args: argparse.Namespace) -> int:
    consent = None
    if args.consent_file:
        try:
            consent = Path(args.consent_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{args.consent_file}: cannot read ({e}); give a UTF-8 text file") from None
    settings = {k: v for k, v in flag_values(StudyConfig, args).items() if k not in NOT_FLAGS}
    tasks = TASKS if args.task == "both" else (args.task,)
    summary = create_study(args.reference, parse_methods(args.methods), args.out, tasks=tasks, lr=args.lr,
                           consent_text=consent, **settings)
    print(f"study written to {summary['out']}: {summary['images']} images, methods {', '.join(summary['methods'])}, "
          f"tasks {', '.join(summary['tasks'])}; {summary['method_trials']} method + {summary['catch_trials']} "
          f"catch trials; {summary['trials_per_rater']} trials per rater")
    return 0


def _serve(args: argparse.Namespace) -> int:
    if not (0 < args.port < 65536):
        raise UserError(f"--port {args.port}: must be 1-65535")
    token = args.admin_token or os.environ.get("SR3_STUDY_ADMIN_TOKEN")
    generated = not token
    if generated:
        token = secrets.token_urlsafe(18)
    serve(args.db, host=args.host, port=args.port, admin_token=token, max_raters=args.max_raters,
          raters_per_client=args.raters_per_client, show_token=generated)
    return 0


def _report(args: argparse.Namespace) -> int:
    result = write_report(args.db, args.out, n_boot=args.bootstrap, seed=args.seed,
                          min_catch_pass=args.min_catch_pass, title=args.title)
    for line in summary_lines(result):
        print(line)
    print(f"report written to {args.out}/ (report.json, confusion.csv, raters.csv, responses.csv, "
          "confusion.png, confusion.svg)")
    return 0

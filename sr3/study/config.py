"""The configuration of one study, frozen at ``sr3 study create`` and stored in the database.

Everything that shapes what raters see is here, so a study database is
self-describing: the report and the server read the same values the creator chose.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from ..config import from_dict
from ..errors import UserError

# The two tasks of SR3's human evaluation (Saharia et al. 2021, Sec. 4.2).
TASK_CAMERA = "camera"        # no input shown: "which image, would you guess, is from a camera?"
TASK_REFERENCE = "reference"  # LR input shown between the two candidates
TASKS = (TASK_CAMERA, TASK_REFERENCE)

QUESTIONS = {
    TASK_CAMERA: "Which image, would you guess, is from a camera?",
    TASK_REFERENCE: "Which image is a better high-quality version of the image in the middle?",
}

# The paper shows each pair for 3 seconds before it is hidden.
PAPER_DISPLAY_SECONDS = 3.0

SCHEMA_VERSION = 1

# Browsers run a setTimeout longer than 2**31 - 1 ms (24.8 days) at once, which
# would hide the images immediately; an hour is far beyond any sensible display.
MAX_DISPLAY_SECONDS = 3600.0
MAX_SCALE = 64
MAX_TRIALS_PER_RATER = 1_000_000
MAX_RATERS_PER_CLIENT = 1_000_000
SEED_LIMIT = 2**64  # seeds are unsigned 64-bit integers
MAX_RATER_WINDOW_SECONDS = 30 * 24 * 3600.0

DEFAULT_CONSENT = (
    "This is a short research study about image quality. You will see pairs of photos, "
    "one at a time, and pick one of each pair. There are no right or wrong answers that "
    "matter to you; go with your first impression. Taking part is voluntary and anonymous: "
    "we store only your answers, how long each took, and a random id, no name, e-mail or IP "
    "address. You can stop at any time and come back later with the same browser or the "
    "resume link shown on the page."
)


@dataclass(frozen=True)
class StudyConfig:
    """What a study shows and to whom; every number is range-checked here.

    * ``tasks``: non-empty, each ``"camera"`` or ``"reference"``, no repeats.
    * ``methods``: the method names, non-empty.
    * ``display_seconds``: how long a pair is shown, finite, in [0, 3600]; 0 = until answered.
    * ``trials_per_rater``: method trials of one rater, in [1, 1e6].  ``catch_rate``
      (in [0, 1)) adds ``max(1, round(trials_per_rater * catch_rate))`` catch trials
      on top (none when 0).  A rater sees every photo at most once, so a study with
      fewer photos than that gives each rater fewer trials (:func:`.design.per_rater_counts`).
    * ``seed``: seed of the design, an integer in [0, 2**64).
    * ``scale``: None, or the LR factor of the reference task, an integer in [2, 64].
    * ``min_catch_pass``: raters whose share of passed catch trials is below this
      (in [0, 1]) are excluded from the confusion rates (the report can override it).
    * ``raters_per_client`` / ``rater_window_seconds``: at most this many new rater
      sessions per client address (IPv6: per /64) within any window of this many
      seconds, so one client cannot use up ``--max-raters`` or collect many sessions
      to compare; ``raters_per_client`` in [0, 1e6], 0 = no limit; window in (0, 30 days].
    """

    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    display_seconds: float = PAPER_DISPLAY_SECONDS
    """How long a pair is shown, in seconds, finite, in [0, 3600]; 0 = until answered (the paper: 3)."""
    trials_per_rater: int = 50
    """Method trials of one rater, in [1, 1e6]; catch trials come on top."""
    catch_rate: float = 0.1
    """Catch trials per method trial, in [0, 1): max(1, round(trials * rate)) catch trials; 0 = none."""
    seed: int = 0
    """Seed of the design (sides, sequences), an integer in [0, 2**64)."""
    scale: int | None = None
    """LR factor of the reference task when the LR input is made by bicubic downsampling, in [2, 64]."""
    min_catch_pass: float = 0.8
    """Raters passing a smaller share of catch trials than this (in [0, 1]) are excluded."""
    raters_per_client: int = 5
    """New rater sessions allowed per client address (IPv6: per /64) within the window, in [0, 1e6]; 0 = no limit."""
    rater_window_seconds: float = 3600.0
    """The rate-limit window in seconds, in (0, 30 days]."""
    consent_text: str = DEFAULT_CONSENT
    n_images: int = 0
    schema_version: int = SCHEMA_VERSION
    created_at: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.tasks or len(set(self.tasks)) != len(self.tasks) or any(t not in TASKS for t in self.tasks):
            raise UserError(f"--task {list(self.tasks)}: choose camera, reference or both")
        if not self.methods or not all(isinstance(m, str) and m for m in self.methods):
            raise UserError(f"--methods {list(self.methods)}: give at least one NAME=DIR")
        check_number("--display-seconds", self.display_seconds, 0, MAX_DISPLAY_SECONDS,
                     "0 = until answered; the paper uses 3")
        check_integer("--trials-per-rater", self.trials_per_rater, 1, MAX_TRIALS_PER_RATER)
        check_number("--catch-rate", self.catch_rate, 0, 1, "e.g. 0.1; 0 = no catch trials", open_high=True)
        check_integer("--seed", self.seed, 0, SEED_LIMIT - 1)
        if self.scale is not None:
            check_integer("--scale", self.scale, 2, MAX_SCALE, "e.g. 4 for 64->256")
        check_number("--min-catch-pass", self.min_catch_pass, 0, 1, "e.g. 0.8")
        check_integer("--raters-per-client", self.raters_per_client, 0, MAX_RATERS_PER_CLIENT, "0 = no limit")
        check_number("--rater-window-seconds", self.rater_window_seconds, 0, MAX_RATER_WINDOW_SECONDS,
                     "e.g. 3600", open_low=True)
        check_integer("n_images", self.n_images, 0, None)
        if self.schema_version != SCHEMA_VERSION:
            raise UserError(f"study schema version {self.schema_version!r}: this sr3 reads version "
                            f"{SCHEMA_VERSION}; use the sr3 version that created the study")

    @property
    def n_catch(self) -> int:
        if self.catch_rate <= 0:
            return 0
        return max(1, round(self.trials_per_rater * self.catch_rate))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "study database") -> "StudyConfig":
        """The stored config, read by the project's one JSON rule (unknown keys are an error)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{source}: stored study config is not valid JSON ({e})") from None
        return from_dict(cls, data, source)


def check_integer(name: str, value, low: int, high: int | None, hint: str = "") -> None:
    """Raise a one-line :class:`UserError` unless ``value`` is an int (not bool) in [low, high]."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise UserError(f"{name} {value!r}: must be an integer {bounds}{'; ' + hint if hint else ''}")


def check_number(name: str, value, low: float, high: float, hint: str = "", *,
                 open_low: bool = False, open_high: bool = False) -> None:
    """Raise a one-line :class:`UserError` unless ``value`` is a finite number in the range."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value > low if open_low else value >= low) and (value < high if open_high else value <= high))
    if not ok:
        bounds = f"{'(' if open_low else '['}{_plain(low)}, {_plain(high)}{')' if open_high else ']'}"
        raise UserError(f"{name} {value!r}: must be a finite number in {bounds}{'; ' + hint if hint else ''}")


def _plain(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"

"""The configuration of one study, frozen at ``sr3 study create`` and stored in the database.

Everything that shapes what raters see is here, so a study database is
self-describing: the report and the server read the same values the creator chose.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

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
    """What a study shows and to whom.

    ``trials_per_rater`` counts the method trials of one rater; ``catch_rate``
    adds ``max(1, round(trials_per_rater * catch_rate))`` catch trials on top
    (none when 0).  ``display_seconds == 0`` means the images stay until answered.
    """

    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    display_seconds: float = PAPER_DISPLAY_SECONDS
    trials_per_rater: int = 50
    catch_rate: float = 0.1
    seed: int = 0
    scale: int | None = None
    # A rater whose share of passed catch trials is below this is excluded from
    # the confusion rates (the report can override it).
    min_catch_pass: float = 0.8
    consent_text: str = DEFAULT_CONSENT
    n_images: int = 0
    schema_version: int = SCHEMA_VERSION
    created_at: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for task in self.tasks:
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r}")

    @property
    def n_catch(self) -> int:
        if self.catch_rate <= 0:
            return 0
        return max(1, round(self.trials_per_rater * self.catch_rate))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "StudyConfig":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["tasks"] = tuple(data["tasks"])
        data["methods"] = tuple(data["methods"])
        return cls(**data)

"""The seeded experimental design: which trials exist, which side is real, who sees what.

Pure functions of the :class:`~.config.StudyConfig` (and, for a rater, of the
rater's arrival index), so the same seed always gives the same study.  The
opaque ids that go on the wire are *not* part of the design: they come from
``secrets`` because they are security tokens, not experimental choices.

Design choices (and why):

* **One pool trial per (task, method, image)**, ordered in rounds so that any
  run of at most ``n_images`` consecutive trials shows every image at most once
  and cycles through the methods (a Latin-square-like layout).  Rater *j* of a
  task takes the next ``trials_per_rater`` trials cyclically, so coverage of
  (method, image) stays balanced as raters arrive.
* **No photo twice in a session**, catch trials included: a photo that came back
  would betray the reference (it is the one that repeats).  A rater's sequence
  therefore holds at most one trial per photo; a study with fewer photos than
  the requested method + catch trials gives each rater fewer trials, keeping the
  catch share (:func:`per_rater_counts`; ``sr3 study create`` warns).
* **Sides are balanced**: exactly half of the trials (+-1) have the real image on
  the left, in a seeded random order, so a rater with a side bias scores 50%.
* **Catch trials** (an obviously degraded copy against the reference) use
  photos outside the rater's method trials, and sit at seeded random
  positions in the rater's sequence.
* With both tasks, raters alternate between them on arrival: each rater keeps
  one question for the whole session, as in the paper's two separate studies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import StudyConfig

KIND_METHOD = "method"
KIND_CATCH = "catch"

# Fixed tags keep the random streams of different purposes independent.
_TAG_IMAGE_ORDER, _TAG_SIDES, _TAG_CATCH_SIDES, _TAG_RATER = 1, 2, 3, 4


@dataclass(frozen=True)
class PoolTrial:
    task: str
    kind: str
    method: str | None
    image_name: str
    real_side: str
    pool_index: int


def _rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng([seed, *tags])


def _balanced_sides(n: int, rng: np.random.Generator) -> list[str]:
    sides = (["left", "right"] * ((n + 1) // 2))[:n]
    return [sides[i] for i in rng.permutation(n)]


def build_pool(config: StudyConfig, image_names: list[str]) -> list[PoolTrial]:
    """All trials of the study, method and catch, for every task."""
    names = sorted(image_names)
    methods = list(config.methods)
    pool: list[PoolTrial] = []
    for t, task in enumerate(config.tasks):
        order = [names[i] for i in _rng(config.seed, _TAG_IMAGE_ORDER, t).permutation(len(names))]
        cells = [(methods[(r + j) % len(methods)], name)
                 for r in range(len(methods)) for j, name in enumerate(order)]
        sides = _balanced_sides(len(cells), _rng(config.seed, _TAG_SIDES, t))
        pool += [PoolTrial(task, KIND_METHOD, m, name, side, i)
                 for i, ((m, name), side) in enumerate(zip(cells, sides))]
        if config.n_catch:
            sides = _balanced_sides(len(order), _rng(config.seed, _TAG_CATCH_SIDES, t))
            pool += [PoolTrial(task, KIND_CATCH, None, name, side, i)
                     for i, (name, side) in enumerate(zip(order, sides))]
    return pool


def rater_task(config: StudyConfig, rater_index: int) -> str:
    return config.tasks[rater_index % len(config.tasks)]


def per_rater_counts(config: StudyConfig, n_images: int) -> tuple[int, int]:
    """``(method trials, catch trials)`` of one rater in a study of ``n_images`` photos.

    The requested ``trials_per_rater`` and ``n_catch``, unless together they
    exceed the photos: then the rater gets one trial per photo, catch trials
    keeping their share (at least one) but never all of them.
    """
    wanted_method, wanted_catch = config.trials_per_rater, config.n_catch
    total = min(n_images, wanted_method + wanted_catch)
    if total == 0:
        return 0, 0
    n_catch = 0
    if wanted_catch:
        n_catch = min(max(1, round(total * wanted_catch / (wanted_method + wanted_catch))), total - 1)
    return total - n_catch, n_catch


def rater_sequence(config: StudyConfig, rater_index: int, method_trials: list, catch_trials: list,
                   image_of=lambda trial: trial.image_name) -> list:
    """The ordered trials rater number ``rater_index`` answers; no photo appears twice.

    ``method_trials`` and ``catch_trials`` are the pool trials of this rater's
    task, each list sorted by ``pool_index``; any objects work as long as
    ``image_of(trial)`` gives the image name.  Returns a list of those objects.
    """
    j = rater_index // len(config.tasks)  # index among raters of this task
    n, n_catch = per_rater_counts(config, len({image_of(t) for t in method_trials}))
    start = j * n
    # Any n <= n_images consecutive pool trials show n different photos (see build_pool).
    chosen = [method_trials[(start + i) % len(method_trials)] for i in range(n)]
    rng = _rng(config.seed, _TAG_RATER, rater_index)
    if n_catch:
        seen = {image_of(t) for t in chosen}
        fresh = [t for t in catch_trials if image_of(t) not in seen]
        chosen += [fresh[i] for i in rng.permutation(len(fresh))[:n_catch]]
    return [chosen[i] for i in rng.permutation(len(chosen))]

"""Where a batch's results go, decided and checked before any image is sampled.

The rules (issue 16): an input is never overwritten, not even with ``--overwrite``; two
inputs never share an output name; an existing output is kept (the image is skipped with
one line) unless ``overwrite`` is given; an output folder that cannot be written is found
before minutes of sampling are spent, not after.  A run that would overwrite an input or
write two images to one name is refused as a whole, before any work.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError


@dataclass
class OutputPlan:
    """jobs: (index, input, output) to run, in input order; index = the input's position among the
        distinct inputs (image k of a run gets seed + k, whichever images are skipped).
    skipped: one line per input whose output exists (kept, no ``--overwrite``).
    problems: one line per output folder that cannot be written (its inputs are not run).
    inputs: the number of distinct inputs."""

    jobs: list[tuple[int, Path, Path]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    inputs: int = 0

    @property
    def blocked(self) -> int:
        """Inputs not run because their output cannot be written."""
        return self.inputs - len(self.jobs) - len(self.skipped)


def preview_path(output: Path) -> Path:
    """Where ``--preview`` puts the quick bicubic image: beside the result, never under its name, so a
    preview left by an interrupted run cannot pass for a result."""
    return output.with_name(f"{output.stem}.preview{output.suffix}")


def _key(path: Path) -> Path:
    return Path(os.path.realpath(path))


def plan_outputs(inputs: list[Path], output_for: Callable[[Path], Path], overwrite: bool = False,
                 preview: bool = False) -> OutputPlan:
    """Check every output path of a batch; raise UserError for a run that must not start at all."""
    unique: dict[Path, Path] = {}
    for src in inputs:
        if _key(src) in unique:
            warnings.warn(f"{src}: given more than once; upscaled once")
            continue
        unique[_key(src)] = src
    targets: dict[Path, Path] = {}  # real output path (results and previews) -> the input writing it
    for real_src, src in unique.items():
        out = output_for(src)
        for path in (out, preview_path(out)) if preview else (out,):
            real = _key(path)
            if real in unique:
                raise UserError(f"{unique[real]}: is an input and would be overwritten by the result of {src}; "
                                "choose an --out folder that holds no inputs")
            if real in targets:
                raise UserError(f"{targets[real]} and {src} would both be written to {path}; rename one or "
                                "upscale them into different --out folders")
            targets[real] = src
    plan = OutputPlan(inputs=len(unique))
    folder_error: dict[Path, str | None] = {}
    for index, src in enumerate(unique.values()):
        out = output_for(src)
        folder = out.parent
        if folder not in folder_error:
            folder_error[folder] = folder_problem(folder)
            if folder_error[folder]:
                plan.problems.append(folder_error[folder])
        if folder_error[folder]:
            continue
        if out.is_dir():
            plan.problems.append(f"{out}: is a folder where the output of {src} should go; rename it or "
                                 "choose another --out")
        elif out.exists() and not overwrite:
            plan.skipped.append(f"{src}: skipped, {out} exists (pass --overwrite to replace it)")
        else:
            plan.jobs.append((index, src, out))
    if plan.problems and not plan.jobs and not plan.skipped and len(plan.problems) == 1:
        raise UserError(plan.problems[0])
    return plan


def folder_problem(folder: Path) -> str | None:
    """None if a file can be created in ``folder`` (made if missing), else a one-line reason."""
    if folder.exists() and not folder.is_dir():
        return f"{folder}: is a file, not a folder; choose another --out"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".sr3-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"{folder}: cannot write output folder ({e.strerror or e}); choose another --out"
    return None

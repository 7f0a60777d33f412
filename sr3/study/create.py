"""``sr3 study create``: turn folders of references and method outputs into a study database.

Outputs are matched to references by file name (relative path without the
extension, so ``a.png`` matches ``a.jpg``).  Only images that every method has
are used, so all methods are judged on the same photos.  A bad image is
reported and its name left out; it never stops the build.

Every image is re-encoded here, once, in the canonical way of :mod:`.images`,
and the study gets its own secret key for the per-session copies the server
makes of them.
"""

from __future__ import annotations

import os
import re
import secrets
import warnings
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from ..degradation import downsample
from ..errors import UserError
from ..imageio import list_images, load_image, pil_to_tensor, tensor_to_pil
from . import design
from .config import TASK_REFERENCE, StudyConfig
from .db import StudyDB, is_postgres_url
from .images import encode_png, new_serve_key

METHOD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}$")
# Catch trials: the reference shrunk by this factor and blown back up, i.e. an
# unmistakably blurry copy that an attentive rater never calls the camera image.
CATCH_DOWNSCALE = 8


def new_id() -> str:
    """An opaque, unguessable id for anything a rater's browser sees (128 bits)."""
    return secrets.token_urlsafe(16)


def degrade_for_catch(img: Image.Image) -> Image.Image:
    w, h = img.size
    small = img.resize((max(1, w // CATCH_DOWNSCALE), max(1, h // CATCH_DOWNSCALE)), Image.Resampling.BOX)
    return small.resize((w, h), Image.Resampling.BICUBIC)


def make_lr(img: Image.Image, scale: int) -> Image.Image:
    """The LR input shown in the reference task: sr3's one degradation operator."""
    return tensor_to_pil(downsample(pil_to_tensor(img)[None], scale)[0])


def parse_methods(specs: list[str]) -> dict[str, Path]:
    """``["A=dir1,B=dir2", "C=dir3"]`` -> ``{"A": dir1, "B": dir2, "C": dir3}``."""
    methods: dict[str, Path] = {}
    for spec in specs:
        for item in spec.split(","):
            if not item.strip():
                continue
            name, sep, folder = item.partition("=")
            name = name.strip()
            if not sep or not folder.strip():
                raise UserError(f"--methods {item!r}: expected NAME=DIR; e.g. --methods sr3=out/sr3,bicubic=out/bicubic")
            if not METHOD_NAME.match(name):
                raise UserError(f"--methods {name!r}: method names are 1-40 letters, digits, '_', '.', '+', '-'; rename it")
            if name in methods:
                raise UserError(f"--methods {name!r}: given twice; give each method once")
            methods[name] = Path(folder.strip())
    if not methods:
        raise UserError("--methods: no method given; pass NAME=DIR for each method's outputs")
    return methods


def index_folder(folder: Path, role: str) -> dict[str, Path]:
    """Image files of ``folder`` keyed by relative path without extension."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder ({role}); check the path")
    found: dict[str, Path] = {}
    for path in list_images(folder):
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in found:
            raise UserError(f"{path}: same name as {found[key].name} ({role}); keep one file per image name")
        found[key] = path
    if not found:
        raise UserError(f"{folder}: no images found ({role}); expected .png/.jpg/.webp/.tif/.bmp files")
    return found


@dataclass
class _Blobs:
    ref: int
    methods: dict
    lr: int | None
    degraded: int | None
    size: tuple[int, int]
    lr_size: tuple[int, int] | None


def create_study(reference: str | Path, methods: dict[str, Path], out: str | Path, *,
                 tasks: tuple[str, ...] = ("camera",), lr: str | Path | None = None,
                 consent_text: str | None = None, **settings) -> dict:
    """Build the study at ``out`` (a new SQLite file or a PostgreSQL URL); returns a summary.

    ``settings``: any other field of :class:`~.config.StudyConfig` (display_seconds,
    trials_per_rater, catch_rate, seed, scale, ...); defaults and ranges live there only.
    """
    # Range checks first (StudyConfig), before any image is read.
    config = StudyConfig(
        tasks=tuple(tasks), methods=tuple(methods), **settings,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **({"consent_text": consent_text} if consent_text else {}))
    scale = config.scale
    # The output is checked before any image is read.
    out = str(out)
    postgres = is_postgres_url(out)
    final = Path(out)
    if not postgres and (not final.name or final.is_dir()):
        raise UserError(f"{out}: is a folder; give --out a new file name such as study.db")
    if not postgres and final.exists():
        raise UserError(f"{final}: already exists; choose another --out or delete it "
                        "(a study database holds answers, sr3 never overwrites it)")
    if not postgres and not final.parent.is_dir():
        raise UserError(f"{final.parent}: no such folder; create it or choose another --out")
    build_target = out if postgres else final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
    needs_lr = TASK_REFERENCE in tasks
    if needs_lr and lr is None and scale is None:
        raise UserError("--task reference needs the LR input: pass --lr DIR, or --scale N to make it "
                        "by bicubic downsampling of the references")
    refs = index_folder(Path(reference), "references")
    outputs = {m: index_folder(Path(d), f"method {m}") for m, d in methods.items()}
    lrs = index_folder(Path(lr), "LR inputs") if (needs_lr and lr is not None) else None
    names = _match(refs, outputs)

    db = None
    try:
        db = StudyDB(build_target, create=True)
        with db.write() as tx:
            blobs = _store_images(db, tx, names, refs, outputs, lrs, config)
            if not blobs:
                raise UserError(f"{reference}: none of the matched images could be used (see warnings above); "
                                "fix or remove the bad files")
            config = replace(config, n_images=len(blobs))
            n_method, n_catch = design.per_rater_counts(config, len(blobs))
            if (n_method, n_catch) != (config.trials_per_rater, config.n_catch):
                warnings.warn(f"{len(blobs)} images are too few for {config.trials_per_rater} method + "
                              f"{config.n_catch} catch trials per rater without showing a photo twice (the "
                              f"real photo would be the one that repeats): each rater gets {n_method} method + "
                              f"{n_catch} catch trials; add images to get more")
            pool = design.build_pool(config, sorted(blobs))
            _store_trials(db, tx, pool, blobs)
            tx.run("INSERT INTO meta (key, value) VALUES ('config', ?)", (config.to_json(),))
            tx.run("INSERT INTO meta (key, value) VALUES ('serve_key', ?)", (new_serve_key().hex(),))
        db.close()
        if not postgres:
            _move_into_place(Path(build_target), final)
    except BaseException:
        if db is not None:
            db.close()
        if not postgres:
            Path(build_target).unlink(missing_ok=True)
        raise
    pool_method = sum(t.kind == design.KIND_METHOD for t in pool)
    return {"out": out, "images": len(blobs), "methods": list(methods), "tasks": list(tasks),
            "method_trials": pool_method, "catch_trials": len(pool) - pool_method,
            "trials_per_rater": n_method + n_catch}


def _move_into_place(built: Path, final: Path) -> None:
    """Rename ``built`` to ``final`` unless ``final`` appeared meanwhile (another create): never overwrite."""
    try:
        os.link(built, final)  # fails if final exists, atomically
    except FileExistsError:
        raise UserError(f"{final}: already exists (created while this study was built); choose another "
                        "--out or delete it (a study database holds answers, sr3 never overwrites it)") from None
    except OSError:  # a file system without hard links: check, then rename
        if final.exists():
            raise UserError(f"{final}: already exists; choose another --out or delete it") from None
        os.replace(built, final)
        return
    built.unlink()


def _match(refs: dict[str, Path], outputs: dict[str, dict[str, Path]]) -> list[str]:
    names = set(refs)
    for method, files in outputs.items():
        missing = sorted(set(refs) - set(files))
        if missing:
            warnings.warn(f"method {method}: no output for {len(missing)} reference image(s) "
                          f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); they are left out")
        extra = sorted(set(files) - set(refs))
        if extra:
            warnings.warn(f"method {method}: {len(extra)} output(s) have no reference of the same name "
                          f"({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''}); ignored")
        names &= set(files)
    if not names:
        raise UserError("no file name is shared by the references and every method's outputs; "
                        "outputs are matched to references by file name (extension ignored)")
    return sorted(names)


def _store_images(db, tx, names, refs, outputs, lrs, config: StudyConfig) -> dict[str, _Blobs]:
    next_blob = [0]

    def put(img: Image.Image) -> int:
        next_blob[0] += 1
        tx.run("INSERT INTO blobs (id, data) VALUES (?, ?)", (next_blob[0], db.blob_param(encode_png(img))))
        return next_blob[0]

    blobs: dict[str, _Blobs] = {}
    for name in names:
        try:
            ref = load_image(refs[name])
            outs = {m: load_image(files[name]) for m, files in outputs.items()}
        except UserError as e:
            warnings.warn(f"{e}; image {name!r} is left out of the study")
            continue
        wrong = [f"{m} {o.size[0]}x{o.size[1]}" for m, o in outs.items() if o.size != ref.size]
        if wrong:
            warnings.warn(f"{refs[name]}: reference is {ref.size[0]}x{ref.size[1]} but {', '.join(wrong)}; "
                          "both images of a trial must be the same size, image left out")
            continue
        lr_img = None
        if TASK_REFERENCE in config.tasks:
            if lrs is not None:
                if name not in lrs:
                    warnings.warn(f"{name}: no LR input of that name in --lr; image left out")
                    continue
                try:
                    lr_img = load_image(lrs[name])
                except UserError as e:
                    warnings.warn(f"{e}; image {name!r} is left out of the study")
                    continue
            else:
                w, h = ref.size
                if w % config.scale or h % config.scale:
                    warnings.warn(f"{refs[name]}: {w}x{h} is not divisible by --scale {config.scale}; "
                                  "image left out (crop it or pass --lr)")
                    continue
                lr_img = make_lr(ref, config.scale)
        blobs[name] = _Blobs(
            ref=put(ref), methods={m: put(o) for m, o in outs.items()},
            lr=put(lr_img) if lr_img is not None else None,
            degraded=put(degrade_for_catch(ref)) if config.n_catch else None,
            size=ref.size, lr_size=lr_img.size if lr_img is not None else None)
    return blobs


def _store_trials(db, tx, pool: list[design.PoolTrial], blobs: dict[str, _Blobs]) -> None:
    images, trials = [], []

    def alias(blob_id: int, size) -> str:
        image_id = new_id()
        images.append((image_id, blob_id, size[0], size[1]))
        return image_id

    for t in pool:
        b = blobs[t.image_name]
        real = b.ref
        other = b.methods[t.method] if t.kind == design.KIND_METHOD else b.degraded
        left, right = (real, other) if t.real_side == "left" else (other, real)
        middle = alias(b.lr, b.lr_size) if t.task == TASK_REFERENCE else None
        trials.append((new_id(), t.task, t.kind, t.method, t.image_name, t.real_side, t.pool_index,
                       alias(left, b.size), alias(right, b.size), middle))
    tx.many("INSERT INTO images (id, blob_id, width, height) VALUES (?, ?, ?, ?)", images)
    tx.many("INSERT INTO trials (id, task, kind, method, image_name, real_side, pool_index, "
            "left_image, right_image, middle_image) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", trials)

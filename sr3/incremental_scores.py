"""FID/KID/IS over thousands of images, fed batch by batch, in memory that does not grow with the count.

CDM reports FID on 50,000 samples and SR3 on its whole test sets; keeping every
generated image, or even every feature vector, grows with that number.  Here:

* **FID** comes from running sums of the features and of their outer products
  (torchmetrics' ``FrechetInceptionDistance`` keeps exactly these, in float64), so
  it is *exact* for any number of images at a memory cost of D + D^2 numbers per side.
* **KID and IS** need the features themselves (KID averages an unbiased MMD^2 over
  random subsets, Bińkowski et al. 2018).  They are computed on a uniform random
  sample of at most ``reservoir`` features per side, kept by reservoir sampling
  (Vitter 1985, Algorithm R) from a seeded generator; below the cap they are the
  usual all-image estimates.  The scores say when the cap was reached.

:func:`generate_and_score` streams a generator function through this, writing each
image to disk as it comes and reading back the images a previous, killed run wrote,
so a 50,000-sample evaluation resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from .imageio import load_image, save_image, tensor_to_pil
from .metrics import DistributionScores, FeatureExtractor, _Identity, distribution_scores

DEFAULT_RESERVOIR = 10_000


class _Reservoir:
    """A uniform sample of at most ``capacity`` rows of everything appended (Algorithm R)."""

    def __init__(self, capacity: int, generator: torch.Generator):
        self.capacity, self.generator, self.seen = capacity, generator, 0
        self.rows: torch.Tensor | None = None

    def extend(self, rows: torch.Tensor) -> torch.Tensor:
        """Add rows [B, D]; returns where each went (-1 = not kept) so paired data can follow."""
        rows = rows.detach().float().cpu()
        if self.rows is None:
            self.rows = torch.empty(self.capacity, rows.shape[1])
        slots = torch.full((rows.shape[0],), -1, dtype=torch.long)
        for j in range(rows.shape[0]):
            t = self.seen + j  # 0-based position of this row in the stream
            if t < self.capacity:
                slot = t
            else:
                slot = int(torch.randint(t + 1, (1,), generator=self.generator))
                if slot >= self.capacity:
                    continue
            self.rows[slot] = rows[j]
            slots[j] = slot
        self.seen += rows.shape[0]
        return slots

    def kept(self) -> torch.Tensor:
        return self.rows[:min(self.seen, self.capacity)] if self.rows is not None else torch.zeros(0, 0)


class IncrementalDistributionScores:
    """Accumulate real and generated images batch by batch; :meth:`compute` gives FID/KID/IS.

    extractor: a :class:`sr3.metrics.FeatureExtractor` (uint8 images -> features, logits);
    reservoir: features kept per side for KID/IS (>= 2); seed: the reservoir's and KID's draws.
    Memory: O(D^2 + reservoir x D), whatever the number of images.
    """

    def __init__(self, extractor: FeatureExtractor, *, reservoir: int = DEFAULT_RESERVOIR, seed: int = 0,
                 device: str | torch.device = "cpu"):
        if reservoir < 2:
            raise ValueError("reservoir must hold at least 2 features")
        self.extractor, self.device, self.seed = extractor.to(device).eval(), torch.device(device), seed
        self.reservoir = reservoir
        self._fid = None
        # one generator per side, so the generated side's draws do not depend on how many real images came first
        self._features = {True: _Reservoir(reservoir, torch.Generator().manual_seed(seed))}
        self.reset_generated()

    def reset_generated(self) -> None:
        """Forget the generated images and keep the real ones: score the next method against the same
        real side without reading it again (as if this object were new and fed the same real images)."""
        if self._fid is not None:
            self._fid.reset()  # made with reset_real_features=False: the real sums stay
        self._features[False] = _Reservoir(self.reservoir, torch.Generator().manual_seed(self.seed + 1))
        self._logits = _Reservoir(self.reservoir, self._features[False].generator)

    @property
    def count(self) -> dict[str, int]:
        return {"real": self._features[True].seen, "fake": self._features[False].seen}

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        """Add images [B, C, H, W] in [-1, 1] (the models' range; grey C = 1 is repeated to RGB)."""
        u8 = images.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
        if u8.shape[1] == 1:
            u8 = u8.expand(-1, 3, -1, -1)
        feats, logits = self.extractor(u8.to(self.device))
        self.update_features(feats, real, logits)

    def update_features(self, features: torch.Tensor, real: bool, logits: torch.Tensor | None = None) -> None:
        """Add precomputed features [B, D] (and, for generated images, class logits [B, K] for IS)."""
        if self._fid is None:
            self._fid = FrechetInceptionDistance(feature=_Identity(features.shape[1]),
                                                 reset_real_features=False).to(self.device)
        self._fid.update(features.to(self.device, torch.float64), real=real)
        slots = self._features[real].extend(features)
        if logits is not None and not real:
            # IS pairs each kept feature's logits: the same slots, so both reservoirs hold the same images
            logits = logits.detach().float().cpu()
            if self._logits.rows is None:
                self._logits.rows = torch.empty(self._logits.capacity, logits.shape[1])
            kept = slots >= 0
            self._logits.rows[slots[kept]] = logits[kept]
            self._logits.seen = self._features[False].seen

    def compute(self, **kwargs) -> DistributionScores:
        """Scores so far (``kwargs`` go to :func:`sr3.metrics.distribution_scores`: kid_subset_size ...)."""
        real, fake = self._features[True], self._features[False]
        logits = self._logits.kept() if self._logits.rows is not None else None
        scores = distribution_scores(real.kept(), fake.kept(), extractor=self.extractor.name, fake_logits=logits,
                                     seed=self.seed, **kwargs)
        notes = [scores.notes] if scores.notes else []
        fid = scores.fid
        if real.seen >= 2 and fake.seen >= 2:
            fid = float(self._fid.compute())  # exact: from the running sums over every image
        capped = [f"{n} of {r.seen}" for n, r in (("real", real), ("generated", fake)) if r.seen > r.capacity]
        if capped:
            notes.append(f"KID/IS on a uniform sample of {real.capacity} features per side ({', '.join(capped)}); "
                         "FID on all images")
        return dataclasses.replace(scores, n_real=real.seen, n_fake=fake.seen, fid=fid, notes="; ".join(notes))


def generate_and_score(generate: Callable[[list[int], torch.Tensor], torch.Tensor], labels: torch.Tensor,
                       scores: IncrementalDistributionScores, *, batch_size: int, out_dir: str | Path | None = None,
                       first_seed: int = 0, progress: Callable[[int], None] | None = None) -> DistributionScores:
    """Generate ``len(labels)`` images in batches and score them as they come.

    generate(seeds, labels) -> images [B, C, H, W] in [-1, 1]: image i has seed
    ``first_seed + i`` and class ``labels[i]`` (e.g. ``lambda s, y: cascade.generate(y, s)``
    for ``sr3 generate``).  out_dir: each image is written as ``{i:06d}.png`` (atomic) as
    soon as its batch is done; on a rerun, images already there are read back instead of
    generated again, so a killed run resumes (with per-image seeds the files are the ones
    the first run would have written).  The real side must already be in ``scores``.
    """
    out = Path(out_dir) if out_dir is not None else None
    n = len(labels)
    for start in range(0, n, batch_size):
        index = list(range(start, min(n, start + batch_size)))
        paths = [out / f"{i:06d}.png" for i in index] if out is not None else None
        if paths is not None and all(p.exists() for p in paths):
            images = torch.stack([_read_back(p) for p in paths])
        else:
            images = generate([first_seed + i for i in index], labels[index]).detach().float().cpu()
            if paths is not None:
                # score what the files hold, so a resumed run scores exactly the same pixels (a file the
                # killed run wrote is kept: batched GPU sampling may differ from it in the last bits)
                images = images.clamp(-1, 1).add(1).mul(127.5).round().div(127.5).sub(1)
                if images.shape[1] == 1:
                    images = images.repeat(1, 3, 1, 1)
                for j, path in enumerate(paths):
                    if path.exists():
                        images[j] = _read_back(path)
                    else:
                        save_image(tensor_to_pil(images[j]), path)
        scores.update(images, real=False)
        if progress:
            progress(len(index))
    return scores.compute()


def _read_back(path: Path) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = np.asarray(load_image(path), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(127.5).sub(1)


def stream_real(scores: IncrementalDistributionScores, batches: Iterable[torch.Tensor]) -> None:
    """Add the real images of ``batches`` ([B, C, H, W] in [-1, 1]) to ``scores``."""
    for batch in batches:
        scores.update(batch, real=True)

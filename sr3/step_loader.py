"""What one training step draws, built ahead of time by data-loader workers.

Everything random in step k of part p (the batch, dropout, noise levels and noise)
comes from one generator seeded by (seed, k, p) (:func:`step_generator`).  A *part*
is one micro-batch of the step's batch: with P processes and A accumulation steps,
the batch is cut into P x A parts and process r trains on parts r*A .. r*A + A - 1.
Since item k of :class:`StepBatches` is a pure function of (seed, k, parts), worker
processes can build batches k+1, k+2, ... while step k trains, and a resumed run
(which starts the loader at its checkpoint's step) sees exactly the batches the
uninterrupted run saw, with or without workers.

The worker returns each part's batch together with the dropout seed it drew first
and the generator's state after the batch, so the training process continues the
very same random stream (gamma, eps) as if it had drawn the batch itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.utils.data

from .data import Batch


def step_generator(seed: int, step: int, part: int) -> torch.Generator:
    """The generator for everything random in one step of one part (= process rank without accumulation)."""
    state = np.random.SeedSequence([seed, step, part]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@dataclass
class PartDraw:
    """One micro-batch: its batch, the seed for torch's global RNG (dropout) and the generator state
    after drawing the batch (continue with :meth:`generator`)."""

    batch: Batch
    dropout_seed: int
    generator_state: torch.Tensor

    def generator(self) -> torch.Generator:
        generator = torch.Generator()
        generator.set_state(self.generator_state)
        return generator

    def pin_memory(self) -> "PartDraw":
        """Page-locked copies for asynchronous host-to-GPU transfer (DataLoader(pin_memory=True) calls this)."""
        b = self.batch
        pinned = Batch(hr=b.hr.pin_memory(), lr=None if b.lr is None else b.lr.pin_memory(),
                       label=None if b.label is None else b.label.pin_memory(), skipped=b.skipped)
        return PartDraw(pinned, self.dropout_seed, self.generator_state)


def draw_part(dataset, seed: int, step: int, part: int, batch_size: int) -> PartDraw:
    generator = step_generator(seed, step, part)
    dropout_seed = int(torch.randint(2**62, (1,), generator=generator))
    batch = dataset.sample(batch_size, generator)
    return PartDraw(batch, dropout_seed, generator.get_state())


class StepBatches(torch.utils.data.Dataset):
    """Item ``step``: the list of :class:`PartDraw` this process trains on at that step.

    dataset: anything with ``sample(batch_size, generator) -> Batch``; parts: the part
    indices of this process; part_size: images per part.
    """

    def __init__(self, dataset, seed: int, parts: list[int], part_size: int, steps: int):
        self.dataset, self.seed, self.parts, self.part_size, self.steps = dataset, seed, parts, part_size, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> list[PartDraw]:
        return [draw_part(self.dataset, self.seed, step, p, self.part_size) for p in self.parts]


def _keep(items):  # batch_size=None hands over one item; keep it as built (no collation)
    return items


def _one_thread_per_worker(_worker_id: int) -> None:
    # decoding workers each use one core; intra-op threads there would fight the training process
    torch.set_num_threads(1)


def step_loader(dataset, seed: int, parts: list[int], part_size: int, start: int, steps: int,
                num_workers: int = 0, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """Iterate the draws of steps ``start .. steps-1`` in order, ``num_workers`` processes ahead."""
    batches = StepBatches(dataset, seed, parts, part_size, steps)
    extra = {"prefetch_factor": 2, "worker_init_fn": _one_thread_per_worker} if num_workers else {}
    # A private generator: DataLoader draws a base seed for its workers at every iterator start, and
    # taking it from torch's global RNG would shift every later global draw.  Workers never use it.
    return torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(start, steps), num_workers=num_workers,
                                       collate_fn=_keep, pin_memory=pin_memory, generator=torch.Generator(),
                                       **extra)

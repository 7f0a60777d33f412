"""Shared fixtures: tiny generated images and a tiny trained model (no data from ../shared)."""

from __future__ import annotations

import dataclasses
import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from sr3.config import Config, DiffusionConfig
from sr3.data import ImageFolderDataset
from sr3.predict_refine import load_predictor
from sr3.presets import PRESETS
from sr3.train import train


# The test models are tiny: one thread avoids thread start-up and spin costs that made
# small ops 40-300x slower with 2 threads on a busy 2-core machine.
torch.set_num_threads(1)


def write_idx(path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (the MNIST / Fashion-MNIST format)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth colour gradient with texture: enough structure for SR to learn something."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    base = np.stack([np.sin(6 * x * c + rng.uniform(0, 6)) * np.cos(4 * y * c) for c in rng.uniform(0.5, 2, 3)], -1)
    arr = 127.5 + 80 * base + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(64, 48), (48, 64), (80, 80), (57, 45)]):
        make_photo(rng, w, h).save(folder / f"img{i}.png")
    return folder


def tiny_config(steps: int = 8, **train_changes):
    config = PRESETS["tiny"]
    return config.replace(train=dataclasses.replace(config.train, steps=steps, sample_every=0, log_every=1,
                                                    checkpoint_every=4, **train_changes))


@pytest.fixture(scope="session")
def tiny_model_dir(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_run")
    config = tiny_config()
    dataset = ImageFolderDataset(image_folder, config.data.crop_size)
    return train(config, dataset, out, progress=False)


def lowres_config(objective: str, anchor: str = "bicubic", steps: int = 4) -> Config:
    """The tiny preset computing at LR resolution (model.pixel_unshuffle = 4) on the residual, v-prediction."""
    config = tiny_config(steps=steps)
    return config.replace(model=dataclasses.replace(config.model, pixel_unshuffle=4),
                          diffusion=DiffusionConfig(objective=objective, target="residual", residual_scale=4.0,
                                                    prediction="v", anchor=anchor))


@pytest.fixture(scope="session")
def refiner_dir(image_folder, tmp_path_factory):
    """A tiny predictor and a tiny refiner trained on it (a few steps each): (refiner dir, predictor dir)."""
    root = tmp_path_factory.mktemp("predict_refine")
    predictor_config = lowres_config("regression")
    dataset = ImageFolderDataset(image_folder, predictor_config.data.crop_size)
    predictor_dir = train(predictor_config, dataset, root / "predictor", progress=False)
    refiner_config = lowres_config("diffusion", anchor="predictor")
    predictor = load_predictor(predictor_dir, refiner_config)
    return train(refiner_config, dataset, root / "refiner", progress=False, predictor=predictor,
                 predictor_dir=predictor_dir), predictor_dir

"""A small Fashion-MNIST CNN: the feature network of the CDM experiment's metrics.

Standard FID needs Inception-v3 weights that these machines do not have, and an
ImageNet network is a poor judge of 32x32 grey clothing anyway.  As is common for
(Fashion-)MNIST generative models, the distribution metrics here use a classifier
trained on the real training set:

* **FD-FMNIST-CNN**: the Fréchet distance between the penultimate-layer (128-d)
  features of real and generated images (the FID formula, *not* FID: other network,
  other numbers; never compare with published FIDs);
* **IS-FMNIST-CNN**: the Inception-Score formula exp(E KL(p(y|x) || p(y))) on this
  network's 10-way softmax (maximum 10).

Both go through :func:`sr3.metrics.distribution_scores`; the same architecture is
what CAS trains on generated images (:func:`sr3.metrics.classification_accuracy_score`).
A trained classifier directory holds ``classifier.json`` and ``model.safetensors``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save

from .atomic import atomic_write_bytes, write_json
from .config import read_json
from .errors import UserError
from .metrics import FeatureExtractor, fit_classifier

FEATURE_NAME = "FD-FMNIST-CNN"
INPUT_SIZE = 32


class FashionCNN(nn.Module):
    """Three conv blocks (32-64-128 channels, each halving the size) and a 128-d feature layer.

    Input: [B, C, H, W] images in [-1, 1]; resized to 32x32 and averaged to grey, so
    3-channel grey samples and 1-channel data give the same answer.
    """

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        w = width
        self.convs = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(4 * w, 128)
        self.head = nn.Linear(128, num_classes)
        self.config = {"num_classes": num_classes, "width": width}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().mean(dim=1, keepdim=True)
        if x.shape[-1] != INPUT_SIZE:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        return F.relu(self.fc(self.convs(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 2, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0, device: str | torch.device = "cpu") -> FashionCNN:
    """Train a FashionCNN on images [N, C, H, W] in [-1, 1] with labels [N] (Adam, seeded order), on ``device``."""
    torch.manual_seed(seed)
    model = FashionCNN(int(labels.max()) + 1).to(device)
    return fit_classifier(model, images, labels, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                          device=device)


def save_classifier(model: FashionCNN, path: str | Path, info: dict | None = None) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path / "model.safetensors", save({k: v.contiguous() for k, v in model.state_dict().items()}))
    write_json(path / "classifier.json", {**model.config, **(info or {})})
    return path


def load_classifier(path: str | Path) -> FashionCNN:
    path = Path(path)
    try:
        config = read_json(path / "classifier.json", "classifier config")
        state = load_file(str(path / "model.safetensors"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a Fashion-MNIST classifier directory ({e})") from None
    model = FashionCNN(config["num_classes"], config["width"])
    model.load_state_dict(state)
    return model.eval()


class ClassifierExtractor(FeatureExtractor):
    """The classifier as a :class:`sr3.metrics.FeatureExtractor`: uint8 images -> (128-d features, logits)."""

    def __init__(self, model: FashionCNN):
        super().__init__(f"{FEATURE_NAME} (Fashion-MNIST classifier trained in this project; NOT Inception/FID)")
        self.model = model.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor):
        x = images.float() / 127.5 - 1.0
        feats = self.model.features(x)
        return feats, self.model.head(feats)


def load_classifier_extractor(path: str | Path) -> ClassifierExtractor:
    return ClassifierExtractor(load_classifier(path))

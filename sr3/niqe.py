"""NIQE: the Natural Image Quality Evaluator (Mittal, Soundararajan & Bovik, IEEE SPL 2013).

A no-reference measure: it needs no HR image.  The luma is normalised by its local mean
and contrast (MSCN coefficients, Eq. 1); in each 96x96 block, at full and half
resolution, 18 features describe the shape of the MSCN histogram and of the products
of neighbouring coefficients (asymmetric generalised Gaussians, Eqs. 7-8).  A
multivariate Gaussian fitted to the test image's block features is compared with one
fitted to pristine natural photos (Eq. 10).  Lower means more natural statistics; blur
and over-smoothing raise it, which is why SR papers use it beside PSNR for outputs with
invented texture.

This follows BasicSR 1.4.2's ``basicsr/metrics/niqe.py`` (which matches the official
MATLAB release to 4 decimals): Y channel of MATLAB's rgb2ycbcr rounded to integers,
96 px blocks without overlap, a MATLAB ``imresize`` (bicubic, anti-aliased, symmetric
borders) for the half scale, and the pristine model ``sr3/assets/niqe_pris_params.npz``
copied from that release (Apache-2.0; see the NOTICE file beside it).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import convolve
from scipy.special import gamma

from .errors import UserError
from .metrics import rgb_to_y

PARAMS_FILE = Path(__file__).parent / "assets" / "niqe_pris_params.npz"
BLOCK = 96
"""Block side in px (the official recommendation); images smaller than one block get NaN."""
AGGD_SHAPES = np.arange(0.2, 10.001, 0.001)
"""Candidate shape parameters of the generalised Gaussian, searched by moment matching."""


@lru_cache(maxsize=4)
def load_params(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu [36], cov [36, 36], gaussian_window [7, 7]) of the pristine-image model (float64)."""
    path = Path(path) if path is not None else PARAMS_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            return (data["mu_pris_param"].reshape(-1).astype(np.float64), data["cov_pris_param"].astype(np.float64),
                    data["gaussian_window"].astype(np.float64))
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"{path}: not a NIQE pristine-parameter file ({e}); use basicsr's niqe_pris_params.npz") from None


def _cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB's bicubic kernel (a = -0.5)."""
    ax = np.abs(x)
    return ((1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
            + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _matlab_resize_matrix(n_in: int, scale: float) -> np.ndarray:
    """[n_out, n_in] matrix of MATLAB ``imresize(..., scale, 'bicubic')`` along one axis (anti-aliased, symmetric borders)."""
    n_out = math.ceil(n_in * scale)
    width = 4.0 / scale if scale < 1 else 4.0
    u = np.arange(1, n_out + 1) / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate of each output pixel
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    w = scale * _cubic((u[:, None] - idx) * scale) if scale < 1 else _cubic(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    idx = idx.astype(int) - 1  # 0-based
    idx = np.where(idx < 0, -idx - 1, idx)  # symmetric (half-sample) reflection, as MATLAB pads
    idx = np.where(idx >= n_in, 2 * n_in - 1 - idx, idx)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.repeat(np.arange(n_out), taps), idx.reshape(-1)), w.reshape(-1))
    return m


def matlab_half_size(img: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(img, 0.5)`` of a 2-D float image (bicubic, anti-aliased)."""
    return _matlab_resize_matrix(img.shape[0], 0.5) @ img @ _matlab_resize_matrix(img.shape[1], 0.5).T


_R_GAM = np.square(gamma(2 / AGGD_SHAPES)) / (gamma(1 / AGGD_SHAPES) * gamma(3 / AGGD_SHAPES))


def _aggd(block: np.ndarray) -> tuple[float, float, float]:
    """Asymmetric generalised Gaussian fit by moment matching (Lasmar et al. 2009): (shape, left scale, right scale)."""
    block = block.reshape(-1)
    left_std = np.sqrt(np.mean(block[block < 0] ** 2))
    right_std = np.sqrt(np.mean(block[block > 0] ** 2))
    gammahat = left_std / right_std
    rhat = np.mean(np.abs(block)) ** 2 / np.mean(block**2)
    rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    alpha = AGGD_SHAPES[np.argmin((_R_GAM - rhatnorm) ** 2)]
    k = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left_std * k, right_std * k


def _block_features(block: np.ndarray) -> list[float]:
    """The 18 NIQE features of one block of MSCN coefficients."""
    alpha, bl, br = _aggd(block)
    feats = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):  # horizontal, vertical and both diagonal neighbours
        alpha, bl, br = _aggd(block * np.roll(block, shift, axis=(0, 1)))
        mean = (br - bl) * gamma(2 / alpha) / gamma(1 / alpha)
        feats += [alpha, mean, bl, br]
    return feats


def niqe_of_luma(y: np.ndarray, params: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> float:
    """NIQE of a 2-D luma image on the [0, 255] scale (NaN when smaller than one 96 px block)."""
    mu_p, cov_p, window = params if params is not None else load_params()
    h, w = y.shape
    nh, nw = h // BLOCK, w // BLOCK
    if nh == 0 or nw == 0:
        return float("nan")
    img = y[: nh * BLOCK, : nw * BLOCK].astype(np.float64)
    per_scale = []
    for scale in (1, 2):
        mu = convolve(img, window, mode="nearest")
        sigma = np.sqrt(np.abs(convolve(img**2, window, mode="nearest") - mu**2))
        mscn = (img - mu) / (sigma + 1)
        b = BLOCK // scale
        per_scale.append(np.array([_block_features(mscn[i * b:(i + 1) * b, j * b:(j + 1) * b])
                                   for j in range(nw) for i in range(nh)]))
        if scale == 1:
            img = matlab_half_size(img / 255.0) * 255.0
    feats = np.concatenate(per_scale, axis=1)
    mu_d = np.nanmean(feats, axis=0)
    finite = feats[~np.isnan(feats).any(axis=1)]
    # One block has no covariance; np.cov of a single row is NaN, so use zeros (only the pristine covariance remains).
    cov_d = np.cov(finite, rowvar=False) if len(finite) > 1 else np.zeros_like(cov_p)
    diff = mu_p - mu_d
    return float(np.sqrt(diff @ np.linalg.pinv((cov_p + cov_d) / 2) @ diff))


def niqe(image: torch.Tensor, params: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> float:
    """NIQE of one RGB image ``[3, H, W]`` in [0, 1]: lower is more natural (pristine photos score about 3-6).

    Uses BT.601 luma on [0, 255] rounded to integers, as BasicSR/MATLAB do.  Images
    smaller than 96x96 px give NaN.
    """
    y = (rgb_to_y(image.float().clamp(0, 1))[0, 0] * 255.0).round().double().numpy()
    return niqe_of_luma(y, params)

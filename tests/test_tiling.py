import torch

import sr3
from sr3.tiling import TiledDenoiser, blend_ramp, tile_starts


def test_tile_starts_cover_the_image_with_overlap():
    assert tile_starts(100, 128, 32) == [0]
    starts = tile_starts(300, 128, 32)
    assert starts[0] == 0 and starts[-1] == 300 - 128
    assert all(b - a <= 128 - 32 for a, b in zip(starts, starts[1:]))


def test_blend_weights_are_positive_and_ramp_only_inside_the_image():
    w = blend_ramp(64, 16, at_start=True, at_end=False)
    assert float(w.min()) > 0 and w[0] == 1 and w[-1] < w[-17] == 1


def test_tiled_equals_untiled_when_the_image_fits_one_tile(tiny_model_dir):
    pipe = sr3.load(tiny_model_dir)
    lr = torch.rand(1, 3, 12, 16) * 2 - 1
    untiled = pipe.upscale_tensor(lr, steps=4, seed=1, tile=0)
    tiled = pipe.upscale_tensor(lr, steps=4, seed=1, tile=64)
    assert torch.equal(untiled, tiled)


def test_tiling_blends_estimates_exactly_for_a_pointwise_denoiser():
    """A denoiser without spatial context gives the same answer tiled or not: the blend is exact."""
    class Pointwise:
        def __call__(self, x, gamma):
            return torch.tanh(x * 0.5 + gamma)

        def crop(self, window):
            return self
    x = torch.randn(1, 3, 100, 140)
    tiled = TiledDenoiser(Pointwise(), tile=48, overlap=16)
    assert len(tiled.tiles(100, 140)) == 3 * 4
    assert torch.allclose(tiled(x, 0.3), Pointwise()(x, 0.3), atol=1e-6)


def test_no_seams_at_tile_borders(tiny_model_dir):
    """On a smooth input, the jump across a tile border is no larger than jumps elsewhere."""
    pipe = sr3.load(tiny_model_dir)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 24), torch.linspace(-1, 1, 40), indexing="ij")
    lr = torch.stack([0.6 * xx, 0.6 * yy, 0.3 * xx * yy])[None]
    out = pipe.upscale_tensor(lr, sampler="ddim", steps=6, seed=0, tile=64)  # 96x160 output, 2x3 tiles
    tiles = TiledDenoiser(None, 64, 32).tiles(96, 160)
    borders = sorted({left + 64 for _, left, _, _ in tiles if left + 64 < 160})
    col_jump = (out[..., 1:] - out[..., :-1]).abs().mean(dim=(0, 1, 2))  # mean jump between column j and j+1
    interior = torch.cat([col_jump[:borders[0] - 8], col_jump[borders[-1] + 8:]])
    for b in borders:
        assert float(col_jump[b - 1]) <= float(interior.quantile(0.99)), b


class BoxBlur:
    """A denoiser with spatial context: a 9x9 box blur (replicate padding at its own borders)."""

    def __call__(self, x, gamma):
        return torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (4, 4, 4, 4), mode="replicate"), 9, stride=1)

    def crop(self, window):
        return self


def test_tiled_matches_untiled_for_a_denoiser_with_spatial_context():
    """Each tile only sees its own pixels, so near its inner edges it is wrong by ~O(1) on noise; the
    linear blend gives those pixels weights of 1/(overlap+1) ... so the full-image error stays small.
    Tolerance: 0.15 max abs (noise of std 1; a single tile's edge error is about 0.3)."""
    x = torch.randn(1, 3, 100, 140, generator=torch.Generator().manual_seed(0))
    untiled = BoxBlur()(x, 0.5)
    tiled = TiledDenoiser(BoxBlur(), tile=48, overlap=16)(x, 0.5)
    err = (tiled - untiled).abs()
    assert float(err.max()) < 0.15, float(err.max())
    # and the error is where tiles meet, not spread over the image
    assert float(err.mean()) < 0.01


def test_progress_ticks_once_per_network_evaluation(tiny_model_dir):
    """The progress callback ticks once per network evaluation: per step with one tile, per tile and step
    when tiled, and count_evaluations predicts it."""
    pipe = sr3.load(tiny_model_dir)
    calls = []
    hook = pipe.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        for lr_size, tile in (((8, 10), 0), ((8, 10), 64), ((24, 40), 64)):
            ticks = []
            calls.clear()
            lr = torch.rand(1, 3, *lr_size) * 2 - 1
            pipe.upscale_tensor(lr, steps=3, seed=0, tile=tile, progress=lambda: ticks.append(1))
            expected = pipe.count_evaluations(*lr_size, pipe.settings(steps=3, tile=tile))
            assert len(ticks) == len(calls) == expected, (lr_size, tile, len(ticks), len(calls), expected)
        assert expected == 3 * 8  # 96 x 160 output in 64 px tiles overlapping by 32 px: 2 x 4 tiles
    finally:
        hook.remove()

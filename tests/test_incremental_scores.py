"""FID/KID/IS fed batch by batch: exact FID, bounded reservoirs, resumable generation."""

import pytest
import torch

from sr3.incremental_scores import IncrementalDistributionScores, generate_and_score
from sr3.metrics import RandomConvExtractor, distribution_scores


def _images(n, shift, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 16, 16, generator=g) * 1.6 - 0.8 + shift).clamp(-1, 1)


def test_fid_from_batches_equals_fid_from_all_features_and_memory_is_capped():
    extractor = RandomConvExtractor(dim=16)
    real, fake = _images(300, 0.0, 1), _images(300, 0.15, 2)
    scores = IncrementalDistributionScores(extractor, reservoir=100)
    for k in range(0, 300, 64):
        scores.update(real[k:k + 64], real=True)
        scores.update(fake[k:k + 64], real=False)
    u8 = lambda x: x.add(1).mul(127.5).round().to(torch.uint8)  # noqa: E731
    (fr, _), (ff, lf) = extractor(u8(real)), extractor(u8(fake))
    reference = distribution_scores(fr, ff, extractor=extractor.name, fake_logits=lf)
    result = scores.compute(kid_subset_size=50)
    assert result.n_real == result.n_fake == 300
    assert abs(result.fid - reference.fid) < 1e-6 * max(1.0, reference.fid) and result.fid > 0.01
    # KID/IS from at most 100 kept features per side, drawn uniformly from all 300
    assert scores._features[False].kept().shape == (100, 16) and "uniform sample of 100" in result.notes
    kept = scores._features[False].kept()
    positions = [int(torch.cdist(row[None], ff).argmin()) for row in kept]
    assert len(set(positions)) == 100 and max(positions) >= 200  # late images replace early ones
    assert result.kid_mean > 0 and 1 <= result.is_mean <= 10


def test_generate_and_score_resumes_from_the_images_on_disk(tmp_path):
    extractor = RandomConvExtractor(dim=16)
    calls = []

    def generate(seeds, labels):
        calls.append(list(seeds))
        return torch.stack([_images(1, 0.1 * int(y), s)[0] for s, y in zip(seeds, labels)])

    labels = torch.arange(40) % 4

    def run(out, n):
        scores = IncrementalDistributionScores(extractor, reservoir=64)
        scores.update(_images(40, 0.0, 7), real=True)
        return generate_and_score(generate, labels[:n], scores, batch_size=16, out_dir=out)

    full = run(tmp_path / "full", 40)
    calls.clear()
    run(tmp_path / "split", 20)  # "killed" after 20 images (the last batch of 4 written too)
    resumed = run(tmp_path / "split", 40)
    # the first batch is read back; the batch the kill cut short is generated again, whole
    assert calls == [list(range(0, 16)), list(range(16, 20)), list(range(16, 32)), list(range(32, 40))]
    assert resumed.fid == full.fid and resumed.kid_mean == full.kid_mean
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == [f"{i:06d}.png" for i in range(40)]


def test_reset_generated_scores_the_next_method_against_the_same_real_images():
    extractor = RandomConvExtractor(dim=16)
    real, method_a, method_b = _images(120, 0.0, 1), _images(120, 0.3, 2), _images(120, 0.1, 3)

    def fresh(fake):
        scores = IncrementalDistributionScores(extractor, reservoir=50)
        scores.update(real, real=True)
        scores.update(fake, real=False)
        return scores.compute(kid_subset_size=20)

    shared = IncrementalDistributionScores(extractor, reservoir=50)
    shared.update(real, real=True)
    shared.update(method_a, real=False)
    first = shared.compute(kid_subset_size=20)
    shared.reset_generated()
    shared.update(method_b, real=False)
    second = shared.compute(kid_subset_size=20)
    # each method as if scored alone: FID from the kept real sums, KID from the same reservoir draws
    assert (first.fid, first.kid_mean) == pytest.approx((fresh(method_a).fid, fresh(method_a).kid_mean), rel=1e-9)
    assert (second.fid, second.kid_mean) == pytest.approx((fresh(method_b).fid, fresh(method_b).kid_mean), rel=1e-9)
    assert second.n_real == 120 and second.n_fake == 120 and second.fid < first.fid

import json
import runpy
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import sr3
from sr3.adversarial import PatchDiscriminator, discriminator_loss, generator_loss


def test_hinge_losses_take_their_textbook_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-3.0, 0.0])
    # relu(1 - real) = [0, 0.5] -> 0.25; relu(1 + fake) = [0, 1] -> 0.5
    assert discriminator_loss(real, fake).item() == 0.75
    assert generator_loss(fake).item() == 1.5
    assert discriminator_loss(torch.zeros(3), torch.zeros(3)).item() == 2.0  # an undecided critic


def test_patch_discriminator_gives_one_logit_per_patch_and_uses_its_conditioning():
    torch.manual_seed(0)
    disc = PatchDiscriminator(width=8)
    image, cond = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    logits = disc(image, cond)
    assert logits.shape == (2, 1, 7, 7)
    assert not torch.allclose(logits, disc(image, torch.zeros_like(cond)))


def test_spectral_norm_bounds_every_layer():
    torch.manual_seed(0)
    disc = PatchDiscriminator(width=8)
    for _ in range(30):  # power iterations run in training mode
        disc(torch.randn(1, 6, 64, 64))
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert abs(sigma.item() - 1.0) < 0.05


def test_discriminator_learns_to_tell_texture_from_its_blur():
    torch.manual_seed(0)
    disc = PatchDiscriminator(width=8)
    optimizer = torch.optim.Adam(disc.parameters(), lr=2e-3, betas=(0.5, 0.999))
    kernel = torch.full((3, 1, 5, 5), 1 / 25)

    def pair():
        real = torch.rand(8, 3, 32, 32) * 2 - 1  # fine texture
        return real, F.conv2d(F.pad(real, (2, 2, 2, 2), mode="reflect"), kernel, groups=3)  # its local mean

    real, blurred = pair()
    before = discriminator_loss(disc(real, blurred), disc(blurred, blurred)).item()
    for _ in range(60):
        real, blurred = pair()
        loss = discriminator_loss(disc(real, blurred), disc(blurred, blurred))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    real, blurred = pair()
    with torch.no_grad():
        gap = (disc(real, blurred).mean() - disc(blurred, blurred).mean()).item()
        after = discriminator_loss(disc(real, blurred), disc(blurred, blurred)).item()
    assert before > 1.9 and after < 0.5 and gap > 1.5


# ------------------------------------------------- the experiment (experiments/adversarial_refiner.py)
SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "adversarial_refiner.py"


def _fine_tune(refiner: Path, data: Path, out: Path, weight: float) -> dict[str, torch.Tensor]:
    runpy.run_path(str(SCRIPT), run_name="adversarial_refiner").get("main")(
        ["--init", str(refiner), "--data", str(data), "--out", str(out), "--steps", "4", "--keep-every", "2",
         "--batch-size", "2", "--adv-weight", str(weight), "--lr", "1e-3"])
    return load_file(str(out / "snapshots" / "step_0000004" / "model.safetensors"))


def test_adversarial_fine_tuning_writes_loadable_refiners_and_its_term_changes_them(refiner_dir, image_folder,
                                                                                     tmp_path):
    model_dir, _ = refiner_dir
    control = _fine_tune(model_dir, image_folder, tmp_path / "control", 0.0)
    again = _fine_tune(model_dir, image_folder, tmp_path / "again", 0.0)
    adversarial = _fine_tune(model_dir, image_folder, tmp_path / "adversarial", 0.5)
    assert all(torch.equal(control[k], again[k]) for k in control)  # seeded: the same run twice is the same
    assert any(not torch.equal(control[k], adversarial[k]) for k in control)  # the adversarial term acts
    for snapshot in ("step_0000002", "step_0000004"):  # complete model directories, predictor included
        upscaler = sr3.load(tmp_path / "adversarial" / "snapshots" / snapshot, bf16=False)
        out = upscaler.upscale_tensor(torch.rand(1, 3, 8, 8) * 2 - 1, tile=0)
        assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()
    assert json.loads((tmp_path / "adversarial" / "args.json").read_text())["adv_weight"] == 0.5

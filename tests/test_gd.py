"""The gradient-descent engine: the update rule against a naive loop, batch independence, options."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from preimage import build_representation
from preimage.inversion.gd import DivergedError, GDConfig, config_from_dict, descend, gd_setup, invert_gd, optimize_gd
from preimage.inversion.objectives import FeatureReconstruction
from preimage.inversion.parametrization import PixelSpace, PyramidSpace
from preimage.inversion.presets import list_presets, resolve_preset
from preimage.photos import load_photo
from preimage.representations import Representation


class BlurDown(Representation):
    """A tiny linear Φ for engine tests: 2×2 average pooling of a fixed conv (B, 4, H/2, W/2)."""

    spec = "test:blur"

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.conv2d(x.mean(1, keepdim=True) * 255, self.weight, padding=1), 2)


def tiny_config(**kw) -> GDConfig:
    base = dict(schedule=[(0.004, 10), (0.0004, 5)], lambda_tv=1.0, grey=True, pixel_mean=(128.0,))
    base.update(kw)
    return GDConfig(**base)


def test_descend_matches_naive_momentum_loop() -> None:
    """A quadratic energy: our loop equals M&V's update written out by hand, momentum resets included."""
    a = torch.tensor([[1.0, 2.0, -1.0]])
    x0 = torch.tensor([[[[0.5, -0.3, 2.0]]]])
    schedule = [(0.1, 3), (0.01, 2)]

    def energy(x):
        e = ((x.flatten(1) - a) ** 2).sum(1)
        return e, e

    x, totals, _ = descend(x0, energy, schedule, momentum=0.9, step_scale=2.0, progress=False)

    ref = x0.flatten().clone()
    m = torch.zeros(3)
    for lr, n in schedule:
        m = torch.zeros(3)
        for _ in range(n):
            grad = 2 * (ref - a.flatten())
            m = 0.9 * m - lr * 2.0 * grad
            ref = ref + m
    torch.testing.assert_close(x.flatten(), ref)
    assert totals.shape == (5, 1)


def test_descend_matches_naive_adam_loop() -> None:
    """Adam with β = (0.8, 0.9) over two phases (moments kept across them) against its update written out."""
    a = torch.tensor([[1.0, 2.0, -1.0]])
    x0 = torch.tensor([[[[0.5, -0.3, 2.0]]]])
    schedule = [(0.1, 3), (0.01, 2)]

    def energy(x):
        e = ((x.flatten(1) - a) ** 4).sum(1)
        return e, e

    x, _, _ = descend(x0, energy, schedule, momentum=0.0, step_scale=1.0, optimizer="adam", adam_betas=(0.8, 0.9),
                      progress=False)

    ref, m, v, k = x0.flatten().clone(), torch.zeros(3), torch.zeros(3), 0
    for lr, n in schedule:
        for _ in range(n):
            k += 1
            grad = 4 * (ref - a.flatten()) ** 3
            m, v = 0.8 * m + 0.2 * grad, 0.9 * v + 0.1 * grad**2
            ref = ref - lr * (m / (1 - 0.8**k)) / ((v / (1 - 0.9**k)).sqrt() + 1e-8)
    torch.testing.assert_close(x.flatten(), ref)


@pytest.mark.parametrize("optimizer, relative", [("momentum", False), ("adam", False), ("adam", True)])
def test_backtrack_against_a_naive_loop(optimizer: str, relative: bool) -> None:
    """Three rows of a quartic whose energy is infinite beyond a wall: row 1's step is far too large for it (its
    wall near), so it blows up and goes back to its lowest-energy iterate with its momentum zeroed and a tenth of
    the rate (again at each blow-up); row 0's energy is infinite at steps 6 and 9 (so it goes back to an iterate
    past its start); the loop written out per row. Row 2 stays finite and descends exactly as without
    backtracking, where row 1 ends beyond its wall. ``relative``: Adam's rate times a contrast read off the
    last energy's iterate (as invert_gd's relative_step does), 1 there but NaN beyond the wall: a row sent back
    makes no step rather than a NaN one."""
    curvature, wall = torch.tensor([0.1, 40.0, 0.02]), torch.tensor([1e3, 1.5, 1e3])
    x0 = torch.tensor([[[[0.5, -0.3]]], [[[1.0, 1.2]]], [[[-2.0, 0.7]]]])
    schedule, lr_scale = [(0.4, 40)], 1.0 if optimizer == "momentum" else 10.0

    seen = {}

    def energy(x):
        flat = x.flatten(1)
        seen["x"] = flat.detach().clone()  # what it saw (backtracking rewrites x in place)
        blown = flat.detach().abs().amax(1) > wall
        blown[0] |= seen["step"] in (6, 9)
        seen["step"] += 1
        e = curvature * (flat**4).sum(1)
        return torch.where(blown, torch.full_like(e, float("inf")), e), e

    def contrast(x):
        return torch.where(seen["x"].abs().amax(1) > wall, float("nan"), 1.0)

    def run(backtrack: bool) -> tuple[torch.Tensor, torch.Tensor]:
        seen["step"] = 0
        x, totals, _ = descend(x0, energy, [(lr * lr_scale, n) for lr, n in schedule], momentum=0.9, step_scale=1.0,
                               optimizer=optimizer, adam_betas=(0.9, 0.9), contrast=contrast if relative else None,
                               backtrack=backtrack, progress=False)
        return x, totals

    x, totals = run(True)
    plain, plain_totals = run(False)
    assert int(torch.isinf(totals[:, 0]).sum()) == 2 and bool(torch.isinf(totals[:, 1]).any())
    assert bool(torch.isfinite(totals[:, 2]).all()) and bool(torch.isfinite(totals[-1]).all())
    assert bool((totals[-1, :2] < totals[0, :2]).all())
    assert torch.equal(x[2], plain[2]) and not bool(torch.isfinite(plain_totals[-1, 1]))

    for row in range(3):
        ref, m, v, k = x0[row].flatten().clone(), torch.zeros(2), torch.zeros(2), 0
        best, best_ref, rate = float("inf"), ref.clone(), 1.0
        for lr, n in schedule:
            lr = lr * lr_scale
            for _ in range(n):
                k += 1
                e = float(curvature[row] * (ref**4).sum())
                if float(ref.abs().max()) > wall[row] or (row == 0 and k - 1 in (6, 9)):
                    e = float("inf")
                grad = 4 * curvature[row] * ref**3
                if e < best:
                    best, best_ref = e, ref.clone()
                back = e == float("inf")
                if back:
                    ref, m, grad, rate = best_ref.clone(), torch.zeros(2), torch.zeros(2), rate * 0.1
                if optimizer == "momentum":
                    m = 0.9 * m - lr * rate * grad
                    ref = ref + m
                else:
                    m, v = 0.9 * m + 0.1 * grad, 0.9 * v + 0.1 * grad**2
                    if not back:
                        ref = ref - lr * rate * (m / (1 - 0.9**k)) / ((v / (1 - 0.9**k)).sqrt() + 1e-8)
        torch.testing.assert_close(x[row].flatten(), ref)


def test_backtrack_stops_a_descent_only_where_there_is_nothing_to_go_back_to() -> None:
    """With stop_on_divergence, a row that blows up after a finite energy goes back; one never finite stops it."""
    x0 = torch.tensor([[[[1.0]]], [[[2.0]]]])

    def blows_up(x):
        e = torch.where(x.flatten(1).abs().amax(1) > 10, float("inf"), x.flatten(1).square().sum(1))
        return e, e

    x, _, _ = descend(x0, blows_up, [(5.0, 10)], momentum=0.9, step_scale=1.0, backtrack=True,
                      stop_on_divergence=True, progress=False)
    assert bool(torch.isfinite(x).all())
    with pytest.raises(DivergedError) as info:
        descend(x0, blows_up, [(5.0, 10)], momentum=0.9, step_scale=1.0, stop_on_divergence=True, progress=False)
    assert info.value.row == 1

    def never_finite(x):
        e = torch.stack([x[0].sum() ** 2, torch.tensor(float("nan"))])
        return e, e

    with pytest.raises(DivergedError) as info:
        descend(x0, never_finite, [(0.1, 3)], momentum=0.9, step_scale=1.0, backtrack=True, stop_on_divergence=True,
                progress=False)
    assert info.value.row == 1 and info.value.iteration == 0


def test_backtrack_keeps_a_too_large_step_finite() -> None:
    """invert_gd at a rate that diverges (NaN image): with backtrack the image stays finite and its energy ends
    below its start's."""
    img = load_photo("camera")[None, :, 100:132, 200:232]
    diverged = invert_gd(BlurDown(), img, tiny_config(schedule=[(100.0, 20)]), device="cpu", progress=False)
    assert not bool(torch.isfinite(diverged.energy[-1]).all())
    kept = invert_gd(BlurDown(), img, tiny_config(schedule=[(100.0, 20)], backtrack=True), device="cpu",
                     progress=False)
    assert bool(torch.isfinite(kept.images).all()) and float(kept.energy[-1, 0, 0]) < float(kept.energy[0, 0, 0])
    assert not bool(torch.isfinite(kept.energy).all())  # it did blow up on the way


def test_glide_and_relative_step_against_a_naive_adam_loop() -> None:
    """``glide``: the rate falls geometrically within a phase to the next phase's (the last phase holds its rate);
    ``contrast``: each row's Adam step times contrast(x) (here its own std, at least 1, over 20), at every step.
    Two rows of very different contrast; the loop is written out by hand."""
    a = torch.tensor([[1.0, 2.0, -1.0, 0.5], [0.1, 0.0, 0.2, -0.1]])
    x0 = torch.tensor([[30.0, -20.0, 5.0, 0.0], [0.5, 0.2, -0.3, 0.1]]).view(2, 1, 1, 4)
    schedule = [(8.0, 4), (1.0, 2)]

    def energy(x):
        e = ((x.flatten(1) - a) ** 2).sum(1)
        return e, e

    x, _, _ = descend(x0, energy, schedule, momentum=0.0, step_scale=1.0, optimizer="adam", adam_betas=(0.9, 0.9),
                      glide=True, contrast=lambda x: x.flatten(1).std(dim=1).clamp_min(1.0) / 20.0, progress=False)

    rates = [8.0 * (1.0 / 8.0) ** (i / 4) for i in range(4)] + [1.0, 1.0]
    ref, m, v = x0.flatten(1).clone(), torch.zeros(2, 4), torch.zeros(2, 4)
    for k, lr in enumerate(rates, start=1):
        grad = 2 * (ref - a)
        m, v = 0.9 * m + 0.1 * grad, 0.9 * v + 0.1 * grad**2
        contrast = torch.tensor([[max(float(row.std()), 1.0) / 20.0] for row in ref])
        ref = ref - lr * contrast * (m / (1 - 0.9**k)) / ((v / (1 - 0.9**k)).sqrt() + 1e-8)
    torch.testing.assert_close(x.flatten(1), ref)


def test_relative_step_needs_adam_in_pixel_or_pyramid_space() -> None:
    with pytest.raises(ValueError, match="relative_step needs optimizer adam"):
        tiny_config(relative_step=True)
    with pytest.raises(ValueError, match="relative_step needs optimizer adam"):
        tiny_config(relative_step=True, optimizer="adam", parametrization="fourier")
    assert tiny_config(relative_step=True, optimizer="adam").relative_step
    assert tiny_config(relative_step=True, optimizer="adam", parametrization="pyramid").relative_step


def test_relative_step_on_a_pyramid_by_a_naive_loop() -> None:
    """relative_step on a pyramid from a flat start: each row's Adam step times the std of its collapsed image (grey
    levels, at least 1) over the random start's σ0 / sqrt(C·H·W). A 4×4 grey image from levels 4×4, 2×2, 1×1 (weights
    1, 0.5, 0.25); the collapse written out with bilinear-doubling matrices, the Adam loop by hand."""
    u2 = _bilinear_doubling(2)

    def collapse(z: torch.Tensor) -> torch.Tensor:  # (N, 21) -> (N, 4, 4) mean-subtracted pixels
        fine, middle, top = z[:, :16].view(-1, 4, 4), z[:, 16:20].view(-1, 2, 2), z[:, 20:]
        return fine + 0.5 * u2 @ (middle + 0.5 * top.view(-1, 1, 1)) @ u2.T

    originals = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    originals[1] = 0.5 + 0.05 * (originals[1] - 0.5)  # a low-contrast one
    phi = BlurDown()
    with torch.no_grad():
        target = phi(originals)
    objective = FeatureReconstruction(phi, target)
    config = tiny_config(parametrization="pyramid", levels=3, level_step=0.5, optimizer="adam", adam_betas=(0.9, 0.9),
                         relative_step=True, start_scale=0.0, lambda_tv=0.0, lambda_alpha=0.0, sigma0_227=300.0,
                         schedule=[(4.0, 6)])
    result = optimize_gd(objective, (2, 1, 4, 4), config, device="cpu", progress=False)

    start_contrast = 300.0 * (16 / (227 * 227 * 3)) ** 0.5 / 4
    ref, m, v = torch.zeros(2, 21), torch.zeros(2, 21), torch.zeros(2, 21)
    for k in range(1, 7):
        variables = ref.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(((collapse(variables) + 128) / 255)[:, None]).sum(), variables)
        m, v = 0.9 * m + 0.1 * grad, 0.9 * v + 0.1 * grad**2
        contrast = torch.tensor([[max(float(image.std()), 1.0) / start_contrast] for image in collapse(ref)])
        ref = ref - 4.0 * contrast * (m / (1 - 0.9**k)) / ((v / (1 - 0.9**k)).sqrt() + 1e-8)
    torch.testing.assert_close(result.images[:, 0, 0], ((collapse(ref) + 128) / 255).clamp(0, 1))


def test_clamped_pyramid_by_a_naive_loop() -> None:
    """clamp on a pyramid: after every Adam step the finest level moves by what the collapsed image has outside
    [0, 255] (mean 128), so that the image is the clamped one. The collapse and the loop written out as above, from
    a seeded random start far out of range and with steps large enough to leave it again."""
    u2 = _bilinear_doubling(2)

    def collapse(z: torch.Tensor) -> torch.Tensor:  # (N, 21) -> (N, 4, 4) mean-subtracted pixels
        fine, middle, top = z[:, :16].view(-1, 4, 4), z[:, 16:20].view(-1, 2, 2), z[:, 20:]
        return fine + 0.5 * u2 @ (middle + 0.5 * top.view(-1, 1, 1)) @ u2.T

    originals = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    phi = BlurDown()
    with torch.no_grad():
        target = phi(originals)
    objective = FeatureReconstruction(phi, target)
    config = tiny_config(parametrization="pyramid", levels=3, level_step=0.5, optimizer="adam", adam_betas=(0.9, 0.9),
                         clamp=True, lambda_tv=0.0, lambda_alpha=0.0, sigma0_227=100000.0, schedule=[(60.0, 8)])
    result = optimize_gd(objective, (2, 1, 4, 4), config, device="cpu", progress=False)

    ref = gd_setup(config, 2, 1, 4, 4).starts.view(2, 21).clone()
    assert collapse(ref).abs().max() > 300  # the start is far out of range: the clamp has work from the first step
    m, v, clamped = torch.zeros(2, 21), torch.zeros(2, 21), 0
    for k in range(1, 9):
        variables = ref.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(((collapse(variables) + 128) / 255)[:, None]).sum(), variables)
        m, v = 0.9 * m + 0.1 * grad, 0.9 * v + 0.1 * grad**2
        ref = ref - 60.0 * (m / (1 - 0.9**k)) / ((v / (1 - 0.9**k)).sqrt() + 1e-8)
        pixels = collapse(ref)
        excess = pixels - pixels.clamp(-128, 127)
        clamped += int((excess != 0).sum())
        ref[:, :16] -= excess.flatten(1)
    assert clamped > 0
    torch.testing.assert_close(result.images[:, 0, 0], (collapse(ref) + 128) / 255)


def test_start_scale_sizes_the_random_start() -> None:
    """Pixels of L2 norm start_scale · σ0, σ0 = 0.25 · sqrt(C·H·W / (227·227·3)) written out; 0: flat pixel_mean."""
    config = tiny_config(grey=False, sigma0_227=0.25, start_scale=0.5, restarts=2)
    starts = gd_setup(config, 1, 3, 20, 30).starts
    sigma0 = 0.25 * (3 * 20 * 30 / (227 * 227 * 3)) ** 0.5
    torch.testing.assert_close(starts.flatten(1).norm(dim=1), torch.full((2,), 0.5 * sigma0))
    flat = gd_setup(tiny_config(start_scale=0.0, optimizer="adam", parametrization="pyramid"), 1, 1, 20, 30)
    torch.testing.assert_close(flat.space.to_image(flat.starts), torch.full((1, 1, 20, 30), 128 / 255))
    with pytest.raises(ValueError, match="start_scale"):
        tiny_config(start_scale=0.0, restarts=2)
    with pytest.raises(ValueError, match="start_scale"):
        tiny_config(start_scale=-1.0)


def _bilinear_doubling(n: int) -> torch.Tensor:
    """(2n, n): output pixel i samples the n-pixel line at i/2 - 1/4 (half-pixel centres), clamped to [0, n - 1]."""
    matrix = torch.zeros(2 * n, n)
    for i in range(2 * n):
        x = min(max(i / 2 - 0.25, 0.0), n - 1.0)
        left = min(int(x), n - 2) if n > 1 else 0
        matrix[i, left] += 1 - (x - left)
        if n > 1:
            matrix[i, left + 1] += x - left
    return matrix


def test_pyramid_space_by_the_formula() -> None:
    """An 8×8 image from four levels (8×8, 4×4, 2×2, 1×1), collapsed coarsest first: pixels =
    fine + s·U(middle + s·U(coarse + s·U(top))), U a bilinear doubling written out as a matrix."""
    space = PyramidSpace(1, 8, 8, levels=6, step=0.5, pixel=PixelSpace(mean=(10.0,), scale=100.0))
    assert space.sides == [(8, 8), (4, 4), (2, 2), (1, 1)] and space.variable_shape(2) == (2, 1, 85)
    fine, middle, coarse, top = torch.randn(8, 8), torch.randn(4, 4), torch.tensor([[1.0, 2.0], [3.0, 5.0]]), 7.0
    z = torch.cat([fine.flatten(), middle.flatten(), coarse.flatten(), torch.tensor([top])])[None, None]
    u2, u4 = _bilinear_doubling(2), _bilinear_doubling(4)
    pixels = fine + 0.5 * u4 @ (middle + 0.5 * u2 @ (coarse + 0.5 * top) @ u2.T) @ u4.T
    torch.testing.assert_close(space.pixels(z)[0, 0], pixels)
    torch.testing.assert_close(space.to_image(z)[0, 0], (pixels + 10.0) / 100.0)


def test_pyramid_space_gradient_by_the_formula_and_finite_differences() -> None:
    """The collapse's gradient against autograd through the formula's matrices (the bilinear doubling written out),
    and against finite differences in float64 at a side that doubles and one that does not."""
    space = PyramidSpace(2, 8, 8, levels=4, step=0.5)
    z = torch.randn(3, 2, 85, requires_grad=True)
    weights = torch.randn(3, 2, 8, 8)
    (grad,) = torch.autograd.grad((space.pixels(z) * weights).sum(), z)
    fine, middle, coarse, top = z.split([64, 16, 4, 1], dim=2)
    u1, u2, u4 = _bilinear_doubling(1), _bilinear_doubling(2), _bilinear_doubling(4)
    pixels = fine.unflatten(2, (8, 8)) + 0.5 * u4 @ (middle.unflatten(2, (4, 4)) + 0.5 * u2 @ (
        coarse.unflatten(2, (2, 2)) + 0.5 * u1 @ top.unflatten(2, (1, 1)) @ u1.T) @ u2.T) @ u4.T
    (expected,) = torch.autograd.grad((pixels * weights).sum(), z)
    torch.testing.assert_close(grad, expected)
    for height, width in ((16, 12), (12, 7)):
        small = PyramidSpace(1, height, width, levels=3)
        variables = torch.randn(small.variable_shape(2), dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(small.pixels, (variables,))


def test_pyramid_collapse_and_its_gradient_by_torch_interpolation() -> None:
    """The collapse (its exact doublings and their adjoints written out) against one made of ``F.interpolate`` and
    autograd: 224×160 (doublings down to 7×5, then 4×3 and 2×2 by interpolation), 17×22 (the height not doubling where
    the width does; 1×1 → 2×2 an exact doubling), 1×3 (every step by interpolation); and the image, three channel
    means folded in, against the pixels plus the means over 255."""
    means = (120.0, 110.0, 100.0)
    for height, width in ((224, 160), (17, 22), (1, 3)):
        space = PyramidSpace(3, height, width, levels=8, step=0.85, pixel=PixelSpace(mean=means))
        z = torch.randn(space.variable_shape(2), dtype=torch.float64, requires_grad=True)
        weights = torch.randn(2, 3, height, width, dtype=torch.float64)
        sides = space.sides
        levels = z.split([h * w for h, w in sides], dim=2)
        expected = 0.85 ** (len(sides) - 1) * levels[-1].unflatten(2, sides[-1])
        for k in reversed(range(len(sides) - 1)):
            expected = 0.85**k * levels[k].unflatten(2, sides[k]) + F.interpolate(
                expected, size=sides[k], mode="bilinear", align_corners=False)
        pixels = space.pixels(z)
        torch.testing.assert_close(pixels, expected)
        (grad,) = torch.autograd.grad((pixels * weights).sum(), z)
        (expected_grad,) = torch.autograd.grad((expected * weights).sum(), z)
        torch.testing.assert_close(grad, expected_grad)
        image = space.to_image(z)
        torch.testing.assert_close(image, (expected + torch.tensor(means, dtype=torch.float64).view(1, 3, 1, 1)) / 255)
        (image_grad,) = torch.autograd.grad((image * weights).sum(), z)
        torch.testing.assert_close(image_grad, expected_grad / 255)


def test_pyramid_space_round_trip_and_sides() -> None:
    space = PyramidSpace(3, 17, 22)
    assert space.sides == [(17, 22), (9, 11), (5, 6), (3, 3), (2, 2), (1, 1)]
    assert PyramidSpace(3, 64, 64, levels=3).sides == [(64, 64), (32, 32), (16, 16)]
    image = torch.rand(2, 3, 17, 22)
    z = space.from_image(image)
    assert z.shape == space.variable_shape(2)
    torch.testing.assert_close(space.to_image(z), image, atol=1e-6, rtol=0)
    inside = space.clamp(z.clone())
    torch.testing.assert_close(inside, z)  # an image inside [0, 1] is left as it is
    z[:, :, 17 * 22:] += torch.randn(2, 3, z.shape[-1] - 17 * 22) * 100  # coarse levels far out of range
    outside = space.to_image(z)
    clamped = space.clamp(z.clone())
    torch.testing.assert_close(space.to_image(clamped), outside.clamp(0, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(clamped[:, :, 17 * 22:], z[:, :, 17 * 22:])  # only the finest level moved
    fused = z.clone().requires_grad_(True)
    fused_image = space.clamped_image(fused)  # the same clamp, and the clamped image differentiable in the variables
    torch.testing.assert_close(fused.detach(), clamped)
    torch.testing.assert_close(fused_image.detach(), space.to_image(clamped), atol=1e-5, rtol=0)
    (grad,) = torch.autograd.grad(fused_image.sum(), fused)
    free = z.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(space.to_image(free).sum(), free)
    torch.testing.assert_close(grad, plain)


def test_pyramid_needs_adam_and_levels() -> None:
    with pytest.raises(ValueError, match="pyramid needs optimizer adam"):
        tiny_config(parametrization="pyramid")
    for bad in ({"levels": 0}, {"level_step": 0.0}, {"levels": 2.5}):
        with pytest.raises(ValueError):
            tiny_config(parametrization="pyramid", optimizer="adam", **bad)


def test_pyramid_descent_lowers_the_loss_and_starts_as_pixels_do() -> None:
    """From the same seeded start as pixel space (the noise in the finest level), Adam on the levels lowers Φ's loss."""
    img = load_photo("camera")[None, :, 100:132, 200:232]
    cfg = tiny_config(parametrization="pyramid", optimizer="adam", schedule=[(8.0, 30)])
    res = invert_gd(BlurDown(), img, cfg, device="cpu", progress=False)
    assert res.data_loss[-1, 0, 0] < 0.5 * res.data_loss[0, 0, 0]
    first = invert_gd(BlurDown(), img, tiny_config(optimizer="adam", schedule=[(8.0, 1)]), device="cpu", progress=False)
    torch.testing.assert_close(res.data_loss[0], first.data_loss[0])


def test_loss_falls() -> None:
    img = load_photo("camera")[None, :, 100:132, 200:232]
    res = invert_gd(BlurDown(), img, tiny_config(schedule=[(0.004, 30)]), device="cpu", progress=False)
    assert res.data_loss[-1, 0, 0] < 0.5 * res.data_loss[0, 0, 0]
    assert res.images.shape == (1, 1, 1, 32, 32)
    assert 0 <= res.images.min() and res.images.max() <= 1


@pytest.mark.parametrize("settings", [{"jitter": 0}, {"jitter": 2},
                                      {"parametrization": "pyramid", "optimizer": "adam", "schedule": [(8.0, 15)]}])
def test_alone_equals_in_batch_of_four(settings: dict) -> None:
    """A reconstruction does not depend on the rest of the batch (same seed): real HOG, 1e-4."""
    hog = build_representation("hog")
    crops = torch.stack([load_photo(n)[:, 40:88, 60:108].mean(0, keepdim=True)
                         for n in ("camera", "coins", "moon", "astronaut")])
    cfg = tiny_config(**settings)
    batch = invert_gd(hog, crops, cfg, device="cpu", progress=False)
    alone = invert_gd(hog, crops[2:3], cfg, device="cpu", progress=False)
    torch.testing.assert_close(alone.images[0], batch.images[2], atol=1e-4, rtol=0)
    torch.testing.assert_close(alone.energy[:, 0], batch.energy[:, 2], atol=1e-4, rtol=1e-4)


def test_restarts_and_seeds_differ() -> None:
    img = load_photo("camera")[None, :, :32, :32]
    res = invert_gd(BlurDown(), img, tiny_config(restarts=3), device="cpu", progress=False)
    assert res.images.shape == (1, 3, 1, 32, 32)
    assert not torch.allclose(res.images[0, 0], res.images[0, 1])
    again = invert_gd(BlurDown(), img, tiny_config(restarts=1, seed=1), device="cpu", progress=False)
    torch.testing.assert_close(again.images[0, 0], res.images[0, 1])  # restart r uses seed + r


def test_mask_selects_neurons() -> None:
    """Outside the mask the target does not matter; the gradient w.r.t. masked-out features is zero."""
    rep = BlurDown()
    x = torch.rand(1, 1, 16, 16)
    target = rep(x)
    mask = torch.zeros_like(target)
    mask[:, 1] = 1  # one channel
    other = target.clone()
    other[:, 0] += 5.0
    image = torch.rand(1, 1, 16, 16)
    a = FeatureReconstruction(rep, target, mask)(image)
    b = FeatureReconstruction(rep, other, mask)(image)
    torch.testing.assert_close(a, b)
    features = rep(image).detach().requires_grad_(True)  # the term as a function of Φ's output
    term = FeatureReconstruction(lambda _: features, target, mask)(image)
    (grad,) = torch.autograd.grad(term.sum(), features)
    assert torch.all(grad[:, 0] == 0) and torch.any(grad[:, 1] != 0)
    expected = 2 * (features[:, 1] - target[:, 1]) / target[:, 1].square().sum()  # ∂/∂f of ‖f − t‖²/‖t‖² in the mask
    torch.testing.assert_close(grad[:, 1], expected.detach())


def test_clamp_keeps_valid_range() -> None:
    img = load_photo("camera")[None, :, :32, :32]
    cfg = tiny_config(clamp=True, schedule=[(0.004, 5)])
    seen = []
    invert_gd(BlurDown(), img, cfg, device="cpu", progress=False, callback=lambda t, x, e: seen.append(x.clone()))
    pix = torch.stack(seen)
    assert pix.min() >= -128 - 1e-4 and pix.max() <= 127 + 1e-4


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="finite"):
        tiny_config(lambda_tv=float("nan"))
    with pytest.raises(ValueError, match="schedule"):
        tiny_config(schedule=[])
    with pytest.raises(ValueError, match="adam_betas"):
        tiny_config(adam_betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="surrogate must be true or false"):
        tiny_config(surrogate="yes")
    with pytest.raises(ValueError, match="unknown GD settings"):
        config_from_dict({"lambda_tvv": 1})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            invert_gd(BlurDown(), torch.rand(1, 1, 8, 8), tiny_config(), device="cuda", progress=False)


def test_mv2015_preset_is_deep_goggle() -> None:
    assert "mv2015" in list_presets()
    hog = resolve_preset("mv2015", "hog")
    assert hog["schedule"] == [[0.004, 200], [0.0004, 200], [0.00004, 200], [0.000004, 200]]
    assert (hog["lambda_tv"], hog["alpha"], hog["lambda_alpha"], hog["tv_beta"], hog["grey"]) == (1.0, 6, 8e-10, 2, True)
    assert config_from_dict(hog).iterations == 800
    for spec, lam in [("caffenet:relu2", 1.0), ("caffenet:pool2", 10.0), ("alexnet:relu4", 10.0), ("caffenet:fc8", 100.0)]:
        p = resolve_preset("mv2015", spec)
        assert p["lambda_tv"] == lam and config_from_dict(p).iterations == 400 and not p["grey"]
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_preset("nope", "hog")


def test_mv2015_lambda_tv_by_depth_is_deep_goggles_table() -> None:
    """deep-goggle's CaffeNet λTV, layer by layer (1 for layers 1–6, 10 for 7–12, 100 for 13–20), and the same
    rule by relative depth for every other network."""
    caffenet = ["conv1", "relu1", "pool1", "norm1", "conv2", "relu2"], ["pool2", "norm2", "conv3", "relu3", "conv4",
                "relu4"], ["conv5", "relu5", "pool5", "fc6", "relu6", "fc7", "relu7", "fc8"]
    for lam, layers in zip((1.0, 10.0, 100.0), caffenet):
        for layer in layers:
            assert resolve_preset("mv2015", f"caffenet:{layer}")["lambda_tv"] == lam, layer
    lite = {"stem": 1.0, "stage2": 1.0, "stage3": 10.0, "stage5": 10.0, "stage6": 100.0, "logits": 100.0}  # k/11
    for layer, lam in lite.items():
        assert resolve_preset("mv2015", f"efficientnet_lite0:{layer}")["lambda_tv"] == lam, layer
    tuned_deep, mv_deep = resolve_preset("tuned", "efficientnet_lite0:stage5"), resolve_preset("mv2015", "efficientnet_lite0:stage5")
    assert [lr for lr, _ in tuned_deep["schedule"]] == pytest.approx([lr / 10 for lr, _ in mv_deep["schedule"]])
    tuned, mv = resolve_preset("tuned", "efficientnet_lite0:stage4"), resolve_preset("mv2015", "efficientnet_lite0:stage4")
    assert tuned.pop("backtrack") and not mv.pop("backtrack", False) and tuned == mv


def test_preset_inheritance() -> None:
    """``fast`` keeps mv2015's energy (weights, priors, σ0) for HOG, HOGb and DSIFT and tuned's for every network
    layer (their λTV by depth and per layer included), and changes only how it is descended."""
    how = ("clamp", "schedule", "optimizer", "adam_betas", "surrogate", "relative_step", "glide", "parametrization",
           "start_scale", "learned_start", "backtrack")
    for spec, iterations in (("hog", 100), ("hogb", 180), ("dsift", 180)):
        fast, mv = resolve_preset("fast", spec), resolve_preset("mv2015", spec)
        cfg = config_from_dict(fast)
        assert cfg.clamp and cfg.surrogate and cfg.optimizer == "adam" and cfg.iterations == iterations
        assert {k: v for k, v in fast.items() if k not in how} == {k: v for k, v in mv.items() if k not in how}
    for spec in ("caffenet:conv5", "efficientnet_lite0:stem", "efficientnet_lite0:stage4", "efficientnet_lite0:head",
                 "efficientnet_lite0:prob"):
        fast, tuned = resolve_preset("fast", spec), resolve_preset("tuned", spec)
        assert config_from_dict(fast).optimizer == "adam"
        assert config_from_dict(fast).parametrization == ("pixel" if spec.endswith("prob") else "pyramid")
        assert {k: v for k, v in fast.items() if k not in how} == {k: v for k, v in tuned.items() if k not in how}

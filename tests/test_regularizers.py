"""The α-norm and TV^β priors against naive loops and finite differences."""
import pytest
import torch

from preimage.inversion.regularizers import ImagePrior, alpha_norm, total_variation


def naive_tv(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-image TV^β by explicit loops, replicated borders (zero difference past the edge)."""
    b, c, h, w = x.shape
    out = torch.zeros(b, dtype=x.dtype)
    for n in range(b):
        for k in range(c):
            for u in range(h):
                for v in range(w):
                    dx = x[n, k, u, v + 1] - x[n, k, u, v] if v + 1 < w else 0.0
                    dy = x[n, k, u + 1, v] - x[n, k, u, v] if u + 1 < h else 0.0
                    out[n] += (dx * dx + dy * dy) ** (beta / 2)
    return out


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
def test_total_variation_matches_naive_loop(beta: float) -> None:
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(total_variation(x, beta, eps=0.0), naive_tv(x, beta))


def test_alpha_norm_by_hand() -> None:
    x = torch.tensor([[[[1.0, -2.0], [0.5, 0.0]]], [[[3.0, 0.0], [0.0, 0.0]]]])
    # image 0: 1 + 64 + 1/64 + 0 for alpha = 6; image 1: 729
    torch.testing.assert_close(alpha_norm(x, 6), torch.tensor([65.015625, 729.0]))


@pytest.mark.parametrize(("alpha", "beta"), [(6.0, 1.0), (6.0, 2.0), (2.5, 3.0)])
def test_regularizers_gradcheck(alpha: float, beta: float) -> None:
    x = torch.randn(2, 1, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: total_variation(t, beta), (x,))
    assert torch.autograd.gradcheck(lambda t: alpha_norm(t, alpha), (x,))


def test_bad_exponents() -> None:
    x = torch.zeros(1, 1, 3, 3)
    with pytest.raises(ValueError):
        alpha_norm(x, 0)
    with pytest.raises(ValueError):
        total_variation(x, -1)


@pytest.mark.parametrize(("alpha", "beta"), [(6.0, 2.0), (3.0, 1.0), (2.5, 3.0)])
def test_image_prior_and_its_gradient_equal_the_formula(alpha: float, beta: float) -> None:
    """ImagePrior against (λα/2·Σ|x|^α + λTV/2·Σ(dx² + dy² [+ ε])^(β/2)) / σ0² written out, differentiated by autograd."""
    x = torch.randn(3, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    prior = ImagePrior(lambda_alpha=0.3, alpha=alpha, lambda_tv=2.0, tv_beta=beta, sigma0=1.7)
    dx = torch.nn.functional.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    dy = torch.nn.functional.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    eps = 1e-8 if beta < 2 else 0.0
    expected = (0.3 / 2 * x.abs().pow(alpha).sum((1, 2, 3))
                + 2.0 / 2 * (dx * dx + dy * dy + eps).pow(beta / 2).sum((1, 2, 3))) / 1.7**2
    weights = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    value = prior(x)
    torch.testing.assert_close(value, expected)
    (ours,) = torch.autograd.grad((value * weights).sum(), x)
    (theirs,) = torch.autograd.grad((expected * weights).sum(), x)
    torch.testing.assert_close(ours, theirs)

"""The descent: momentum gradient descent (M&V's) or Adam on any energy of a batch of rows, with a piecewise-constant
or gliding learning rate, per-row relative steps, a projection after each step, and backtracking where a row's energy
blows up. :mod:`.gd` runs it on the inversion's energy.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .settings import ADAM_BETAS

__all__ = ["DivergedError", "descend"]

_ADAM_EPS = 1e-8


class DivergedError(ValueError):
    """The energy of a row became NaN or infinite (the step is too large for it).

    Attributes:
        row: the first row (``i·R + r``) whose energy is not finite; ``problem``: its problem ``i``.
        iteration: the 0-based iteration where it happened.
    """

    def __init__(self, row: int, iteration: int, value: float) -> None:
        super().__init__(f"the descent diverged at iteration {iteration + 1} (energy {value}): lower the learning "
                         "rate (gd.schedule), set gd.backtrack=true or use another preset")
        self.row, self.iteration, self.problem = row, iteration, row


def descend(x: torch.Tensor, energy: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
            schedule: Sequence[tuple[float, int]], *, momentum: float, step_scale: float,
            optimizer: str = "momentum", adam_betas: tuple[float, float] = ADAM_BETAS,
            glide: bool = False, contrast: Callable[[torch.Tensor], torch.Tensor] | None = None,
            project: Callable[[torch.Tensor], torch.Tensor] | None = None,
            callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
            progress: bool = True, stop_on_divergence: bool = False,
            backtrack: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Momentum gradient descent (or Adam) with a piecewise-constant learning rate and momentum resets.

    Args:
        x: starting variables ``(N, ...)``.
        energy: ``x -> (total (N,), data term (N,))``; the sum of ``total`` is differentiated.
        schedule: ``[(lr, iterations), ...]``; the momentum is zeroed at each change of lr.
        momentum: momentum coefficient μ: ``m ← μ m − lr · step_scale · ∇E``, ``x ← x + m``.
        step_scale: multiplies the gradient (σ0² in M&V's units).
        optimizer: ``momentum`` as above, or ``adam``: ``x ← x − lr · m̂ / (√v̂ + ε)`` (β = ``adam_betas``;
            ε 1e-8; ``momentum`` and ``step_scale`` unused; the moments run on across the phases).
        glide: within each phase the rate falls geometrically from the phase's to the next phase's (the last
            phase's stays constant).
        contrast: Adam only: ``x -> (N,)``, called at every step after the energy at ``x``: each row's rate is
            multiplied by it (e.g. the image's contrast over a reference); ``None``: not.
        project: optional, applied to the variables after each step (e.g. a space's ``clamp``: the pixels kept in
            the valid range); it may work in place.
        callback: called as ``callback(t, x, total)`` after each step (for logging).
        progress: show a progress bar over iterations.
        stop_on_divergence: raise :class:`DivergedError` at the first step whose energy is not finite (one
            device synchronisation per step); otherwise the non-finite rows run on (the caller notes them).
        backtrack: a row whose energy is not finite goes back to its lowest-energy iterate so far, its momentum
            (Adam: first moment) zeroed and its rate a tenth of what it was, from then on (one device
            synchronisation per step); rows whose energy stays finite descend exactly as without it. Such a step
            is a divergence only if the row had no finite energy yet.

    Returns:
        ``(x, totals (T, N), data terms (T, N))``.
    """
    iterations = sum(n for _, n in schedule)
    totals = x.new_empty(iterations, x.shape[0])
    data = x.new_empty(iterations, x.shape[0])
    velocity = torch.zeros_like(x)
    second = torch.zeros_like(x) if optimizer == "adam" else None
    denominator = torch.empty_like(x) if optimizer == "adam" else None  # Adam's √v̂ + ε, rewritten in place
    x = x.detach().clone()
    row_shape = (-1,) + (1,) * (x.dim() - 1)
    if backtrack:
        best_x, best_energy = x.clone(), x.new_full((x.shape[0],), math.inf)
        rate = x.new_ones(x.shape[0])  # each row's rate over the schedule's: a tenth per backtrack
    slowed = False  # has any row backtracked (until then the rates are all 1 and not applied)
    t = 0
    with tqdm(total=iterations, disable=not progress, desc="gd", unit="it", leave=False) as bar:
        for phase, (phase_lr, steps) in enumerate(schedule):
            if second is None:
                velocity.zero_()
            ratio = (schedule[phase + 1][0] / phase_lr) ** (1 / steps) if glide and phase + 1 < len(schedule) else 1.0
            for step in range(steps):
                lr = phase_lr * ratio**step
                x.requires_grad_(True)
                total, data_term = energy(x)
                finite = torch.isfinite(total.detach()) if backtrack or stop_on_divergence else None
                if stop_on_divergence:
                    # with backtrack, only a row that has had no finite energy yet has nothing to go back to
                    lost = ~finite & ~torch.isfinite(best_energy) if backtrack else ~finite
                    if bool(lost.any()):
                        row = int(lost.nonzero()[0, 0])
                        raise DivergedError(row, t, float(total[row].detach()))
                (grad,) = torch.autograd.grad(total.sum(), x)
                with torch.no_grad():
                    went_back = _backtrack(x.detach(), grad, total.detach(), finite, best_x, best_energy, rate,
                                           velocity) if backtrack else None
                    slowed |= went_back is not None
                    if second is None:
                        if slowed:
                            grad.mul_(rate.view(row_shape))
                        velocity.mul_(momentum).add_(grad, alpha=-lr * step_scale)
                        x = x.detach().add_(velocity)
                    else:
                        (b1, b2), k = adam_betas, t + 1
                        velocity.lerp_(grad, 1 - b1)
                        second.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                        # m̂ / (√v̂ + ε) as c·m̂ / (√v + c·ε), c = √(1 − β2^k): one pass fewer over the variables
                        correction = math.sqrt(1 - b2**k)
                        torch.sqrt(second, out=denominator).add_(_ADAM_EPS * correction)
                        if contrast is not None:
                            denominator.div_(contrast(x.detach()).view(row_shape))
                        if slowed:
                            denominator.div_(rate.view(row_shape))
                        if went_back is not None:  # no step for them (the contrast seen was the blown-up image's)
                            denominator.masked_fill_(went_back.view(row_shape), 1.0)
                        x = x.detach().addcdiv_(velocity, denominator, value=-lr * correction / (1 - b1**k))
                    if project is not None:
                        x = project(x)
                    totals[t] = total.detach()
                    data[t] = data_term.detach()
                if callback is not None:
                    callback(t, x, totals[t])
                t += 1
                bar.update(1)
                if t % 50 == 0:
                    bar.set_postfix(loss=f"{data[t - 1].mean().item():.4g}")
    return x.detach(), totals, data


def _backtrack(x: torch.Tensor, grad: torch.Tensor, total: torch.Tensor, finite: torch.Tensor,
               best_x: torch.Tensor, best_energy: torch.Tensor, rate: torch.Tensor,
               velocity: torch.Tensor) -> torch.Tensor | None:
    """:func:`descend`'s ``backtrack``, in place: keep each row's lowest-energy iterate, and send the rows whose energy
    ``total`` (N,) is not finite back to it (their momentum and gradient zeroed, their ``rate`` a tenth).

    Returns the rows sent back (N,) bool, or ``None`` if none was."""
    improved = total < best_energy  # never for a non-finite energy
    best_energy.copy_(torch.where(improved, total, best_energy))
    back = ~finite & torch.isfinite(best_energy)
    all_improved, any_back = torch.stack((improved.all(), back.any())).tolist()  # one device synchronisation
    if all_improved:  # the common case: a plain copy, several times faster than indexing
        best_x.copy_(x)
    else:
        best_x[improved] = x[improved]
    if not any_back:
        return None
    x[back] = best_x[back]
    velocity[back] = 0
    grad[back] = 0
    rate[back] *= 0.1
    return back

"""Frontier errors concentrated on hard inputs, and the same prompt failing the same way.

Every example gets an error propensity, fixed by the seed and the example: its confusability
(``Task.confusability``, relative to its pool's mean) times a log-normal draw, both raised to the
power ``frontier_error_concentration`` (sigma), then scaled so the traffic-weighted mean is
``frontier_error_rate`` and capped below 1. Sigma 0 gives every example the same propensity: the
first simulator's independent coin flip per call.

A wrong answer is the example's own fixed wrong answer (drawn once per example from a stream keyed
by the example) with probability ``frontier_error_consistency``, else a fresh one.
"""

from __future__ import annotations

import numpy as np

from loop_pipeline.sim.config import SimulationConfig
from loop_pipeline.sim.streams import Streams, seed_sequence
from loop_pipeline.sim.task_models import Example, Task

__all__ = ["FrontierErrors", "scaled_propensities"]

_MAX_PROPENSITY = 0.95  # even the hardest prompt is sometimes answered right


class FrontierErrors:
    """Decides whether the frontier answers a call wrongly and what it answers then."""

    def __init__(self, task: Task, config: SimulationConfig, streams: Streams,
                 shares: tuple[np.ndarray, np.ndarray]):
        self.task, self.config, self.streams = task, config, streams
        sigma = config.frontier_error_concentration
        raw = [self._raw_weights(pool, sigma) for pool in (task.pool, task.oos_pool)]
        self.propensity = scaled_propensities(raw, shares, config.frontier_error_rate, sigma == 0)
        self._fixed_wrong: dict[tuple[int, int], str] = {}
        self.fixed_answers_given = 0  # errors that were the example's own fixed wrong answer
        self._fixed_seed = seed_sequence(config.seed, "consistency")

    def _raw_weights(self, pool: list[Example], sigma: float) -> np.ndarray:
        """(confusability / pool mean) ** sigma * exp(sigma * z), z standard normal per example."""
        if not pool:
            return np.zeros(0)
        if any(example.ref != index for index, example in enumerate(pool)):
            raise ValueError("simulator pools must number their examples 0..n-1 (Example.ref)")
        draws = self.streams.hardness.standard_normal(len(pool))  # drawn even at sigma 0: later pools keep theirs
        if sigma == 0:
            return np.ones(len(pool))
        confusability = np.array([self.task.confusability(example) for example in pool], dtype=float)
        return (confusability / confusability.mean()) ** sigma * np.exp(sigma * draws)

    def output(self, example: Example, pool: int, draw: float) -> str:
        """The frontier's answer to ``example`` given this call's uniform ``draw`` (wrong below the propensity)."""
        if draw >= self.propensity[pool][example.ref]:
            return example.gold
        consistency = self.config.frontier_error_consistency
        if consistency > 0 and self.streams.consistency.random() < consistency:
            self.fixed_answers_given += 1
            return self.fixed_wrong(example, pool)
        output = self.task.wrong(example, self.streams.frontier)
        if output == example.gold:  # every error path returns something else; a guard
            raise AssertionError("simulated frontier error produced the gold answer")
        return output

    def fixed_wrong(self, example: Example, pool: int) -> str:
        """The example's own wrong answer: the same for every call of it, whatever the traffic order."""
        key = (pool, example.ref)
        if key not in self._fixed_wrong:
            seed = np.random.SeedSequence(self._fixed_seed.entropy, spawn_key=(*self._fixed_seed.spawn_key, *key))
            self._fixed_wrong[key] = self.task.wrong(example, np.random.default_rng(seed))
        return self._fixed_wrong[key]


def scaled_propensities(
    raw: list[np.ndarray], shares: tuple[np.ndarray, np.ndarray], rate: float, uniform: bool,
) -> list[np.ndarray]:
    """``raw`` weights (> 0) scaled so that sum(share * min(scale * weight, cap)) == ``rate``.

    ``uniform`` (or a rate the cap cannot reach with unequal weights) gives every example ``rate``.
    """
    if uniform or rate <= 0 or rate >= _MAX_PROPENSITY:
        return [np.full(len(weights), rate) for weights in raw]
    weights = np.concatenate(raw)
    share = np.concatenate(shares)
    share = share / share.sum()
    # With the k largest weights capped, the scale solving the mean is
    # (rate - cap * their share) / (share-weighted sum of the others); the first k whose scale caps
    # no other weight is the answer.
    order = np.argsort(-weights, kind="stable")
    w, p = weights[order], share[order]
    capped_share = np.concatenate(([0.0], np.cumsum(p)))
    rest = np.dot(p, w) - np.concatenate(([0.0], np.cumsum(p * w)))
    next_weight = np.concatenate((w, [0.0]))
    with np.errstate(divide="ignore", invalid="ignore"):  # all capped: nothing left to scale
        scales = (rate - _MAX_PROPENSITY * capped_share) / rest
        fits = (scales > 0) & (scales * next_weight <= _MAX_PROPENSITY)
    if not fits.any():  # cannot happen for 0 < rate < cap; a guard
        raise AssertionError(f"no error propensity scale reaches frontier_error_rate {rate}")
    scale = float(scales[int(np.argmax(fits))])
    return np.split(np.minimum(scale * weights, _MAX_PROPENSITY), [len(raw[0])])

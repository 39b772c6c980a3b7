"""Perturbations of a test episode, described by config (docs/design.md, "Perturbations").

A task's ``perturbation`` setting says what moves, by how much and when::

    perturbation:
      move: target                     # a movable part of the task's env (env.movable_parts())
      offset: {low: [-0.25, -0.25, 0.0], high: [0.25, 0.25, 0.0], min_norm: 0.15}   # metres
      within: {low: [-0.2, -0.2, 0.0], high: [0.2, 0.2, 1.0]}   # where the part may end up
      when: {state: ball_pos, axis: 2, above: 0.08}             # or {step: 20}

The offset is drawn uniformly in [low, high] from the episode's test seed, redrawn (same
stream) until it is at least ``min_norm`` long and puts the part inside ``within`` (the
part's position in its parent frame, the coordinates the simulator's reset randomises). So a
perturbed episode is reproducible, every method meets the same move on the same seed, and the
move is large enough to matter yet stays where the training scenes put the part. ``when`` is either a
control step or a condition on the env's privileged object state (a named slice of
``env.object_state()``, one axis, above or below a value): the move happens once, after the
first step at which it holds, and never if it never holds. The simulator applies it; the
policy learns of it only through its observations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kubm.errors import ConfigError

__all__ = ["EpisodePerturbation", "PerturbationSpec", "perturbation_spec"]

# Salt of the offset's random stream, so it is not the reset's stream of the same seed.
_SALT = 0x5EED


@dataclass(frozen=True)
class PerturbationSpec:
    move: str
    low: tuple[float, ...]
    high: tuple[float, ...]
    step: int | None = None  # move after this many executed steps ...
    state: str | None = None  # ... or once object_state()[state][axis] crosses the bound
    axis: int = 0
    above: float | None = None
    below: float | None = None
    min_norm: float = 0.0
    within_low: tuple[float, ...] | None = None
    within_high: tuple[float, ...] | None = None

    def offset(self, seed: int, position: np.ndarray | None = None, tries: int = 10000) -> np.ndarray:
        """The episode's offset for a part now at ``position`` (None: no ``within`` check)."""
        rng = np.random.default_rng([int(seed), _SALT])
        low, high = np.asarray(self.low, float), np.asarray(self.high, float)
        for _ in range(tries):
            off = rng.uniform(low, high)
            if np.linalg.norm(off) < self.min_norm:
                continue
            if position is not None and self.within_low is not None:
                new = np.asarray(position, float) + off
                if np.any(new < self.within_low) or np.any(new > self.within_high):
                    continue
            return off
        raise ConfigError(f"perturbation of {self.move!r}: no offset in [{list(self.low)}, {list(self.high)}] of norm "
                          f">= {self.min_norm} keeps it within [{self.within_low}, {self.within_high}] "
                          f"(seed {seed}); widen offset or within")

    def for_episode(self, seed: int) -> EpisodePerturbation:
        return EpisodePerturbation(self, int(seed))

    def describe(self) -> dict:
        when = {"step": self.step} if self.step is not None else {
            "state": self.state, "axis": self.axis, **({"above": self.above} if self.above is not None else {}),
            **({"below": self.below} if self.below is not None else {})}
        within = None if self.within_low is None else {"low": list(self.within_low), "high": list(self.within_high)}
        return {"move": self.move, "offset": {"low": list(self.low), "high": list(self.high), "min_norm": self.min_norm},
                "within": within, "when": when,
                "seeding": "offset ~ U(low, high) from numpy default_rng([test seed, 0x5EED]), redrawn until "
                           "|offset| >= min_norm and the part stays within"}


@dataclass
class EpisodePerturbation:
    """One episode's move: ``maybe_apply(env, t)`` after every step applies it once, when due."""
    spec: PerturbationSpec
    seed: int
    offset: np.ndarray | None = None  # drawn when the move happens (it depends on where the part is)
    applied_at: int | None = None  # the step after which the part moved

    def due(self, env, t: int) -> bool:
        s = self.spec
        if s.step is not None:
            return t + 1 >= s.step
        value = float(state_slice(env, s.state)[s.axis])
        return (s.above is not None and value > s.above) or (s.below is not None and value < s.below)

    def maybe_apply(self, env, t: int) -> bool:
        """Apply the move after step t if it is due and has not happened; True when it moved now."""
        if self.applied_at is not None or not self.due(env, t):
            return False
        self.offset = self.spec.offset(self.seed, env.part_position(self.spec.move))
        env.move_part(self.spec.move, self.offset)
        self.applied_at = int(t)
        return True


def state_slice(env, name: str) -> np.ndarray:
    """The named part of ``env.object_state()`` (layout ``env.object_state_layout``)."""
    start = 0
    for part, width in env.object_state_layout:
        if part == name:
            return np.asarray(env.object_state())[start: start + width]
        start += width
    raise ConfigError(f"perturbation.when.state {name!r} is not in {env.suite}/{env.task}'s object state; "
                      f"allowed: {[p for p, _ in env.object_state_layout]}")


def perturbation_spec(settings: dict, task_id: str) -> PerturbationSpec:
    """The task's ``perturbation`` setting, checked; a task without one is refused with the fix."""
    p = settings.get("perturbation")
    if not p:
        raise ConfigError(f"task {task_id} has no perturbation; add suites.<suite>.tasks.<task>.perturbation "
                          "(move, offset, when) to the config (config/README.md, Perturbations)")
    low, high = p["offset"]["low"], p["offset"]["high"]
    if len(low) != len(high) or any(a > b for a, b in zip(low, high)):
        raise ConfigError(f"{task_id}: perturbation.offset.low must be elementwise <= high, of the same length "
                          f"(got {low} and {high})")
    when = p["when"]
    if ("step" in when) == ("state" in when):
        raise ConfigError(f"{task_id}: perturbation.when needs exactly one of step or state (got {when})")
    if "state" in when and ("above" in when) == ("below" in when):
        raise ConfigError(f"{task_id}: perturbation.when with a state needs exactly one of above or below")
    within = p.get("within") or {}
    return PerturbationSpec(move=p["move"], low=tuple(map(float, low)), high=tuple(map(float, high)),
                            step=when.get("step"), state=when.get("state"), axis=int(when.get("axis", 0)),
                            above=when.get("above"), below=when.get("below"),
                            min_norm=float(p["offset"].get("min_norm", 0.0)),
                            within_low=tuple(within["low"]) if within else None,
                            within_high=tuple(within["high"]) if within else None)

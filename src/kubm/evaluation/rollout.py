"""One evaluation episode in the simulator, for any method.

Perception is what a deployed robot would run: the first frame's object mask (segmenter),
query points sampled in it, an online point tracker, and the flow autoencoder. The policy
is reached through a small adapter (``make_runner``), so one loop serves

- planning policies (K-UBM, KODex, regression): ``plan(qpos0, flow0, context, T) -> Plan``
  with ``Plan.actions [T,d_q]`` and ``Plan.flow [T,d_flow]`` (``flow[k]`` is the latent
  predicted for the observation made after k executed actions of the plan; may be None),
  and optionally ``replan(last_action, flow_obs, context, T_left) -> Plan`` plus
  ``replan_threshold_px`` (None = never replan);
- receding-horizon policies (Diffusion Policy, ACT): ``act(features) -> action`` with
  ``features = {"t", "qpos", "flow", "context"}`` (the current observation), and
  optionally ``reset()`` at the start of each episode.

Replanning (docs/design.md, "Replanning"): after every step the observed point centroid is compared with the
centroid of the decoded predicted flow; when the divergence exceeds the policy's threshold,
(per plan age where the fit calibrated an envelope; see
``kubm.policies.kubm.calibrate_replan_threshold``), at least ``min_replan_interval`` steps
after the current plan was made, the policy replans
from [last executed action; observed flow; context] for the steps left.

Context (docs/design.md, "Perturbations"): by default the task context (e.g. the goal
marker's centroid) is read from the first frame. With ``context_every_step`` it is observed
after every step as well: receding-horizon policies get the latest one, and a planning
policy replans when it has moved more than ``context_replan_px`` pixels from the context its
plan was made with. A marker hidden for a moment (the hand in front of it) keeps the last
context seen.

Perturbation: an ``EpisodePerturbation`` moves a part of the scene once, after the step at
which it is due (kubm.evaluation.perturbation); the policy sees it in the next observation.

Timing: ``policy_s`` sums ``time.perf_counter`` around policy calls only (plan, replan,
per-step action read / act); ``perception_s`` sums segmentation, tracking, context
extraction and AE encode/decode. Both are reported per step (total / steps).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kubm.errors import DataError, PerceptionError
from kubm.evaluation.metrics import centroid_divergence, mean_squared_jerk

__all__ = [
    "ActRunner",
    "EpisodeResult",
    "OnlinePerception",
    "PlanRunner",
    "frame_aux",
    "make_runner",
    "run_episode",
]


def _np(x: Any, dtype=np.float32) -> np.ndarray:
    """numpy view of an array-like or (CPU/GPU) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """obj[key] for a mapping, else getattr(obj, key)."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


# ----------------------------------------------------------------------------- perception
def frame_aux(env, obs):
    """Simulator side information for the tracker at this observation (only `sim` reads it)."""
    from kubm.perception.tracking import FrameAux

    return FrameAux(
        depth=obs.depth, seg=obs.seg, object_pose=np.asarray(env.object_poses()),
        object_ids=np.asarray(env.object_seg_ids), K=np.asarray(env.camera_intrinsics(), np.float64),
        world_to_cam=np.asarray(env.camera_extrinsics(), np.float64),
    )


@dataclass
class OnlinePerception:
    """First-frame mask -> queries -> online tracker, one episode at a time.

    segmenter: ``segment(frames [1,H,W,3], prompt, seg=[1,H,W]) -> [1,H,W]`` (any backend of
    kubm.perception.segmentation); tracker: online ``start`` / ``update`` (kubm.perception.
    tracking). Backends other than ``sim`` are prompted like the segment stage does (box and
    points from the first frame, plus the text prompt).
    """

    segmenter: Any
    tracker: Any
    n_points: int = 256
    erode_px: int = 2
    prompt_text: str | None = None

    def start(self, env, obs, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mask0 [H,W] bool, xy0 [N,2], visible0 [N]) on the reset frame."""
        from kubm.perception.queries import ordered_queries

        if obs.rgb is None:
            raise ValueError("evaluation needs a rendering env (make_env(..., render=True))")
        prompt = self._prompt(env, obs, seed)
        seg = None if obs.seg is None else obs.seg[None]
        mask0 = np.asarray(self.segmenter.segment(obs.rgb[None], prompt, seg=seg))[0].astype(bool)
        if not mask0.any():
            raise PerceptionError(f"seed {seed}: the segmenter found no object in the first frame")
        queries = ordered_queries(mask0, n=self.n_points, seed=int(seed), erode_px=self.erode_px)
        self.tracker.start(obs.rgb, queries, aux=frame_aux(env, obs))
        # On the query frame the tracks are the queries, all visible (as in the track stage).
        return mask0, queries[:, 1:].astype(np.float32), np.ones(len(queries), bool)

    @property
    def needs_frames(self) -> bool:
        """Whether tracking reads the images after the first (the sim tracker reads depth and seg only)."""
        return self.tracker.describe().get("backend") != "sim"

    def update(self, env, obs) -> tuple[np.ndarray, np.ndarray]:
        xy, vis = self.tracker.update(obs.rgb, aux=frame_aux(env, obs))
        return _np(xy), np.asarray(vis, bool)

    def _prompt(self, env, obs, seed: int):
        from kubm.perception.segmentation import SegPrompt

        if getattr(self.segmenter, "name", None) == "sim" or obs.seg is None:
            return SegPrompt(frame=0, text=self.prompt_text)
        from kubm.perception.prompts import first_frame_prompt, ground_truth_masks

        gt0 = ground_truth_masks(obs.seg, list(env.object_seg_ids))
        return first_frame_prompt(gt0, self.prompt_text or env.task, int(seed))


# ----------------------------------------------------------------------------- policies
class PlanRunner:
    """Adapter for planning policies (plan / replan / replan_threshold_px)."""

    needs_flow = False

    def __init__(self, policy):
        self.policy = policy
        self.threshold = _get(policy, "replan_threshold_px")
        # the threshold per plan age, where the fit calibrated one (see calibrate_replan_threshold)
        self.envelope = _get(policy, "replan_threshold_by_step")
        self.can_replan = hasattr(policy, "replan") and self.threshold is not None
        self.actions = self.flow = None
        self.k = 0
        self.context = None  # the context the current plan was made with

    def _take(self, plan) -> None:
        self.actions = _np(_get(plan, "actions"))
        flow = _get(plan, "flow")
        self.flow = None if flow is None else _np(flow)
        if self.actions.ndim != 2 or len(self.actions) == 0:
            raise ValueError(f"policy returned a plan with actions of shape {self.actions.shape}; expected [T, d_q]")
        self.k = 0

    def start(self, qpos0, flow0, context, T: int) -> None:
        self._take(self.policy.plan(qpos0, flow0, context, T))
        self.context = context

    def observe_context(self, context) -> None:
        """A plan keeps its context; a context change acts through a replan."""

    def act(self, t: int, qpos, flow) -> np.ndarray:
        a = self.actions[min(self.k, len(self.actions) - 1)]  # a short plan holds its last action
        self.k += 1
        return a

    def predicted_flow(self) -> np.ndarray | None:
        """Latent predicted for the current observation (after `k` actions of this plan)."""
        if self.flow is None or self.k >= len(self.flow):
            return None
        return self.flow[self.k]

    @property
    def steps_since_plan(self) -> int:
        return self.k

    def threshold_now(self) -> float:
        """The replan threshold for the current plan's age (px)."""
        if self.envelope:
            return float(self.envelope[min(self.k, len(self.envelope) - 1)])
        return float(self.threshold)

    def replan(self, last_action, flow_obs, context, T_left: int) -> None:
        self._take(self.policy.replan(last_action, flow_obs, context, T_left))
        self.context = context


class ActRunner:
    """Adapter for receding-horizon policies: ``act(features) -> action`` every step."""

    needs_flow = True
    can_replan = False
    threshold = None
    steps_since_plan = 0

    def __init__(self, policy):
        self.policy = policy
        self.context = None

    def start(self, qpos0, flow0, context, T: int) -> None:
        self.context = context
        if hasattr(self.policy, "reset"):
            self.policy.reset()

    def observe_context(self, context) -> None:
        self.context = context

    def act(self, t: int, qpos, flow) -> np.ndarray:
        return _np(self.policy.act({"t": t, "qpos": qpos, "flow": flow, "context": self.context}))

    def predicted_flow(self) -> None:
        return None

    def replan(self, *args, **kwargs) -> None:  # pragma: no cover - never called (can_replan False)
        raise NotImplementedError


def make_runner(policy):
    if hasattr(policy, "plan"):
        return PlanRunner(policy)
    if hasattr(policy, "act"):
        return ActRunner(policy)
    raise TypeError(f"{type(policy).__name__} has neither plan(qpos0, flow0, context, T) nor act(features); "
                    "the evaluator cannot run it")


# ----------------------------------------------------------------------------- episode
@dataclass
class EpisodeResult:
    seed: int
    success: bool
    steps: int
    replans: int
    wall_s: float
    policy_s: float  # total time in policy calls
    perception_s: float  # total time in segment / track / context / AE encode+decode
    divergence: np.ndarray  # [steps] px after each step, NaN where there is no prediction
    replanned: np.ndarray  # [steps] bool: a replan followed step t
    actions: np.ndarray  # [steps, d_q] executed (clipped to the joint limits)
    smoothness: float  # mean squared jerk of the executed actions
    frames: list[np.ndarray] | None = field(default=None, repr=False)
    context_replans: int = 0  # replans triggered by a context change (context_every_step)
    perturbed_at: int | None = None  # the step after which the perturbation moved its part

    @property
    def policy_step_s(self) -> float:
        return self.policy_s / max(self.steps, 1)

    @property
    def perception_step_s(self) -> float:
        return self.perception_s / max(self.steps, 1)


class _Clock:
    def __init__(self):
        self.total = 0.0

    def __enter__(self):
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.total += time.perf_counter() - self._t0


def run_episode(env, policy, ae, perception: OnlinePerception, seed: int, *,
                context_fn: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
                horizon: int | None = None, replan: bool = True, min_replan_interval: int = 5,
                record_video: bool = False, perturbation=None, context_every_step: bool = False,
                context_replan_px: float | None = None) -> EpisodeResult:
    """Run one episode and return its record. Success is ``env.success()`` after the final step.

    ae: ``encode(points [T,N,2], visible [T,N]) -> [T,d_flow]``, ``decode([T,d_flow]) -> [T,N,2]``.
    context_fn(rgb0, seg0) -> (d_c,) observable task context from the first frame.
    perturbation: an EpisodePerturbation (kubm.evaluation.perturbation) or None.
    """
    from kubm.report.video import overlay

    T = int(horizon or env.horizon)
    runner = make_runner(policy) if not isinstance(policy, (PlanRunner, ActRunner)) else policy
    limits = np.asarray(env.joint_limits(), np.float32)
    pol, per = _Clock(), _Clock()
    wall0 = time.perf_counter()

    obs = env.reset(seed)
    with per:
        _, xy, vis = perception.start(env, obs, seed)
        flow = _np(ae.encode(xy[None], vis[None]))[0]
        context = _np(context_fn(obs.rgb, obs.seg)).reshape(-1)
    qpos0 = np.asarray(obs.qpos, np.float32)
    with pol:
        runner.start(qpos0, flow, context, T)

    frames: list[np.ndarray] | None = [] if record_video else None

    def predicted_points() -> np.ndarray | None:
        latent = runner.predicted_flow()
        return None if latent is None else _np(ae.decode(latent[None]))[0]

    if record_video:
        with per:
            pred = predicted_points()
        frames.append(overlay(obs.rgb, None, xy, vis, pred))

    divergence = np.full(T, np.nan)
    replanned = np.zeros(T, bool)
    actions = np.zeros((T, len(limits)), np.float32)
    n_replans = n_context_replans = 0
    size = np.asarray(obs.rgb.shape[1::-1], np.float32)  # (W, H): context is image-normalised xy
    observe_context = context_every_step and context.size > 0
    # Skip the colour image where nothing reads it after the first frame (a third of the
    # render time; depth and seg are what sim tracking reads, so the records are unchanged).
    rgb_each_step = record_video or observe_context or getattr(perception, "needs_frames", True)
    skip_rgb = hasattr(env, "render_rgb") and not rgb_each_step
    if skip_rgb:
        env.render_rgb = False
    try:
        for t in range(T):
            with pol:
                action = runner.act(t, obs.qpos, flow)
            action = np.clip(np.asarray(action, np.float32).reshape(-1), limits[:, 0], limits[:, 1])
            actions[t] = action
            obs = env.step(action)
            with per:
                xy, vis = perception.update(env, obs)
                pred = predicted_points()
                if pred is not None:
                    divergence[t] = centroid_divergence(xy, vis, pred)
                if runner.needs_flow:
                    flow = _np(ae.encode(xy[None], vis[None]))[0]
                if observe_context:
                    context = _observed_context(context_fn, obs, context)
                    runner.observe_context(context)
            if record_video:
                frames.append(overlay(obs.rgb, None, xy, vis, pred))
            if replan and runner.can_replan and t < T - 1 and runner.steps_since_plan >= min_replan_interval:
                flow_diverged = np.isfinite(divergence[t]) and divergence[t] > runner.threshold_now()
                context_moved = (observe_context and context_replan_px is not None
                                 and float(np.max(np.abs(context - runner.context) * size)) > context_replan_px)
                if flow_diverged or context_moved:
                    with per:
                        flow_obs = _np(ae.encode(xy[None], vis[None]))[0]
                    with pol:
                        runner.replan(action, flow_obs, context, T - t - 1)
                    replanned[t] = True
                    n_replans += 1
                    n_context_replans += int(context_moved and not flow_diverged)
            if perturbation is not None:
                perturbation.maybe_apply(env, t)
    finally:
        if skip_rgb:
            env.render_rgb = True

    success = bool(env.success())
    return EpisodeResult(
        seed=int(seed), success=success, steps=T, replans=n_replans, wall_s=time.perf_counter() - wall0,
        policy_s=pol.total, perception_s=per.total, divergence=divergence, replanned=replanned,
        actions=actions, smoothness=mean_squared_jerk(actions, env.fps), frames=frames,
        context_replans=n_context_replans, perturbed_at=None if perturbation is None else perturbation.applied_at,
    )


def _observed_context(context_fn, obs, last: np.ndarray) -> np.ndarray:
    """The context in this observation, or the last one seen when the marker is hidden."""
    try:
        return _np(context_fn(obs.rgb, obs.seg)).reshape(-1)
    except DataError:
        return last

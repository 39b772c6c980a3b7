"""Model-predictive path integral control with the simulator itself as the model.

Each control step copies the env's live MuJoCo state into private MjData that
share the env's MjModel (the env's own data is only read), rolls out K
perturbed plans of H control steps, scores them with a task cost computed from
privileged state, and executes the first action of the cost-weighted plan; the
plan is then shifted by one step (warm start).

Actions are joint-position targets, exactly what `AdroitEnv.step` takes. The
plan lives in normalised units a ∈ [-1, 1] per joint (a = ±1 at the joint
limits), so `sigma` is a fraction of each joint's half range. It starts at
"hold the current pose" and its noise is piecewise constant over `knot`
steps (fewer dimensions, longer lookahead, lower jerk).

Two rollout backends:
- ``rollout``: `mujoco.rollout` (C, `threads` worker threads). Control is fixed
  per physics step, so the gravity compensation that `AdroitEnv.step` recomputes
  at every substep is frozen at the live state for the whole horizon.
- ``python``: steps each sample in Python exactly as `AdroitEnv.step` does
  (compensation recomputed every substep); one core.
"""

from __future__ import annotations

import mujoco
import numpy as np
from mujoco import rollout as mj_rollout

from kubm.experts.base import ParametrisedExpert
from kubm.experts.mppi.costs import Cost, Features, make_cost

_FULL = mujoco.mjtState.mjSTATE_FULLPHYSICS


class Plant:
    """What MPPI needs from an env: its model, the actuated joints and the
    joint-target → ctrl map (`AdroitEnv.qpos_to_ctrl`, evaluated on any MjData).

    Works for any env exposing `model`, `data`, `qpos_adr`, `dof_adr`,
    `joint_limits()` and `frame_skip` whose actuators are (affine) position servos.
    """

    def __init__(self, env):
        m = self.model = env.model
        self.qpos_adr = np.asarray(env.qpos_adr)
        self.dof_adr = np.asarray(env.dof_adr)
        self.limits = np.asarray(env.joint_limits(), np.float64)
        self.frame_skip = int(getattr(env, "frame_skip", 1))
        self.nu = int(m.nu)
        self.mid = self.limits.mean(axis=1)
        self.half = np.maximum(np.diff(self.limits, axis=1)[:, 0] / 2, 1e-9)
        self._gain = m.actuator_gainprm[:, 0].copy()
        self._b0 = m.actuator_biasprm[:, 0].copy()
        self._b1 = m.actuator_biasprm[:, 1].copy()
        self._gear = m.actuator_gear[:, 0].copy()
        self._lo, self._hi = m.actuator_ctrlrange.T.copy()

    def to_q(self, a: np.ndarray) -> np.ndarray:
        return self.mid + np.clip(a, -1.0, 1.0) * self.half

    def to_a(self, q: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(q) - self.mid) / self.half, -1.0, 1.0)

    def ctrl(self, q_des: np.ndarray, qfrc_bias: np.ndarray) -> np.ndarray:
        """ctrl holding q_des against the bias forces (any leading dims on q_des)."""
        bias = qfrc_bias[self.dof_adr] / self._gear
        return np.clip((bias - self._b0 - self._b1 * q_des) / self._gain, self._lo, self._hi)


class MPPI:
    """The sampling optimiser over normalised action plans (H, nu)."""

    def __init__(self, plant: Plant, cost: Cost, *, samples: int, horizon: int, temperature: float,
                 sigma: float, knot: int, warm_start: bool, smooth: float, threads: int,
                 backend: str, rng: np.random.Generator):
        self.plant, self.cost = plant, cost
        self.K, self.H, self.lam, self.sigma = int(samples), int(horizon), float(temperature), float(sigma)
        self.knot, self.warm_start, self.smooth = max(1, int(knot)), bool(warm_start), float(smooth)
        if self.K < 1 or self.H < 1:
            raise ValueError("MPPI needs samples ≥ 1 and horizon ≥ 1")
        if backend not in ("rollout", "python"):
            raise ValueError(f"unknown MPPI backend {backend!r}; known: rollout, python")
        self.backend, self.rng = backend, rng
        m = plant.model
        self.threads = max(1, int(threads))
        nd = self.threads if backend == "rollout" else 1
        self._datas = [mujoco.MjData(m) for _ in range(nd)]
        self._scratch = mujoco.MjData(m)
        self._sid = {n: m.site(n).id for n in cost.sites}
        self._bid = {n: m.body(n).id for n in cost.bodies}
        self._jadr = {n: m.jnt_qposadr[m.joint(n).id] for n in cost.joints}
        self._state = np.empty(mujoco.mj_stateSize(m, _FULL))
        self.plan: np.ndarray | None = None  # (H, nu) normalised

    # ----------------------------------------------------------------- rollouts
    def _features_buffers(self, lead: tuple[int, ...]):
        return (
            {n: np.empty((*lead, 3)) for n in self._sid},
            {n: np.empty((*lead, 3)) for n in self._bid},
            {n: np.empty(lead) for n in self._jadr},
        )

    def _record(self, d: mujoco.MjData, bufs, idx) -> None:
        sites, bodies, joints = bufs
        for n, i in self._sid.items():
            sites[n][idx] = d.site_xpos[i]
        for n, i in self._bid.items():
            bodies[n][idx] = d.xpos[i]
        for n, i in self._jadr.items():
            joints[n][idx] = d.qpos[i]

    def _rollout_python(self, live: mujoco.MjData, q: np.ndarray):
        """Step each sample exactly as AdroitEnv.step does (bias re-cancelled each substep)."""
        p, d = self.plant, self._datas[0]
        K, H = q.shape[:2]
        bufs = self._features_buffers((K, H))
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        s0 = np.empty(mujoco.mj_stateSize(p.model, spec))
        mujoco.mj_getState(p.model, live, s0, spec)
        for k in range(K):
            mujoco.mj_setState(p.model, d, s0, spec)
            for h in range(H):
                for sub in range(p.frame_skip):  # the first substep sees the live state's bias
                    d.ctrl[:] = p.ctrl(q[k, h], live.qfrc_bias if h == sub == 0 else d.qfrc_bias)
                    mujoco.mj_step(p.model, d)
                mujoco.mj_kinematics(p.model, d)
                self._record(d, bufs, (k, h))
        return bufs

    def _rollout_c(self, live: mujoco.MjData, q: np.ndarray):
        """mujoco.rollout over all samples; the bias compensation is frozen at the live state."""
        p = self.plant
        K, H = q.shape[:2]
        ctrl = p.ctrl(q, live.qfrc_bias)  # (K, H, nu)
        ctrl = np.repeat(ctrl, p.frame_skip, axis=1)
        mujoco.mj_getState(p.model, live, self._state, _FULL)
        data = self._datas if self.threads > 1 else self._datas[0]
        states, _ = mj_rollout.rollout(
            p.model, data, self._state[None], ctrl,
            initial_warmstart=live.qacc_warmstart[None].copy(), persistent_pool=self.threads > 1,
        )
        states = states[:, p.frame_skip - 1 :: p.frame_skip]  # state after each control step
        bufs = self._features_buffers((K, H))
        d = self._scratch
        for k in range(K):
            for h in range(H):
                mujoco.mj_setState(p.model, d, states[k, h], _FULL)
                mujoco.mj_kinematics(p.model, d)
                self._record(d, bufs, (k, h))
        return bufs

    # --------------------------------------------------------------- optimiser
    def reset(self, live: mujoco.MjData) -> None:
        self.plan = None
        self.hold(live)

    def hold(self, live: mujoco.MjData) -> np.ndarray:
        """The plan 'hold the current pose' (normalised)."""
        a = self.plant.to_a(live.qpos[self.plant.qpos_adr])
        return np.repeat(a[None], self.H, axis=0)

    def sample(self) -> np.ndarray:
        """(K, H, nu) plans: the mean plus piecewise-constant noise; sample 0 is the mean."""
        nk = -(-self.H // self.knot)
        noise = self.rng.normal(0.0, self.sigma, size=(self.K, nk, self.plant.nu))
        noise[0] = 0.0
        noise = np.repeat(noise, self.knot, axis=1)[:, : self.H]
        return np.clip(self.plan[None] + noise, -1.0, 1.0)

    def step(self, live: mujoco.MjData) -> np.ndarray:
        """Optimise once from the live state; returns the joint-position target to execute."""
        if self.plan is None or not self.warm_start:
            self.plan = self.hold(live)
        a = self.sample()
        q = self.plant.to_q(a)
        bufs = self._rollout_c(live, q) if self.backend == "rollout" else self._rollout_python(live, q)
        total = self.cost(Features(*bufs)).sum(axis=1)
        if self.smooth > 0:  # squared action changes along the plan, first step against the last executed
            total = total + self.smooth * np.sum(np.square(np.diff(a, axis=1)), axis=(1, 2))
        total = np.where(np.isfinite(total), total, np.nanmax(np.where(np.isfinite(total), total, -np.inf)))
        span = total.max() - total.min()
        z = (total - total.min()) / (span if span > 0 else 1.0)
        w = np.exp(-z / self.lam)
        w /= w.sum()
        self.plan = np.tensordot(w, a, axes=1)
        out = self.plant.to_q(self.plan[0])
        self.plan = np.concatenate([self.plan[1:], self.plan[-1:]], axis=0)  # shift (warm start)
        self.last_cost = float(total[0])
        return out


def default_cost(env) -> str:
    task = getattr(env, "task", None)
    if task is None:
        raise ValueError("MPPI cannot choose a cost: the env has no task name; set expert.params.cost")
    return task


class MPPIExpert(ParametrisedExpert):
    """MPPI with the env's own MjModel as its model; any Adroit task via its task cost."""

    name = "mppi"

    DEFAULTS = dict(
        samples=None,  # K rollouts per control step (None: per-task default below)
        horizon=None,  # H control steps per rollout (None: per-task default)
        temperature=None,  # softmax temperature λ on costs rescaled to [0, 1]
        sigma=None,  # noise std, fraction of each joint's half range
        knot=4,  # control steps per piecewise-constant noise segment
        warm_start=True,  # shift the previous plan instead of restarting from "hold"
        smooth=0.0,  # weight of squared plan differences added to the cost
        seed=0,  # combined with the episode seed
        threads=2,  # mujoco.rollout worker threads (backend rollout)
        backend="rollout",  # rollout (C, threaded) | python (exact substep compensation)
        cost=None,  # task cost name: pen, hammer, door, relocate (None: the env's task)
    )

    # Per-task values for the params left at None (tuned on training seeds).
    TASK_DEFAULTS = {
        "pen": dict(samples=16, horizon=20, temperature=0.05, sigma=0.4),
        "hammer": dict(samples=16, horizon=16, temperature=0.1, sigma=0.5),
        "door": dict(samples=32, horizon=16, temperature=0.1, sigma=0.4),
        "relocate": dict(samples=32, horizon=16, temperature=0.1, sigma=0.4),
    }
    FALLBACK = dict(samples=32, horizon=16, temperature=0.1, sigma=0.4)

    def __init__(self, params: dict | None = None, cost: Cost | None = None):
        super().__init__(params)
        self._cost_obj = cost  # a Cost instance overrides the `cost` param (tests, new tasks)
        self.mppi: MPPI | None = None

    def resolved(self, cost_name: str) -> dict:
        base = self.TASK_DEFAULTS.get(cost_name, self.FALLBACK)
        return {k: (base[k] if v is None and k in base else v) for k, v in self.p.items()}

    def reset(self, env, seed: int) -> None:
        cost = self._cost_obj or make_cost(self.p["cost"] or default_cost(env))
        p = self.resolved(cost.name)
        rng = np.random.default_rng([int(p["seed"]), int(seed) & 0xFFFFFFFF])
        self.mppi = MPPI(
            Plant(env), cost, samples=p["samples"], horizon=p["horizon"], temperature=p["temperature"],
            sigma=p["sigma"], knot=p["knot"], warm_start=p["warm_start"], smooth=p["smooth"],
            threads=p["threads"], backend=p["backend"], rng=rng,
        )
        self.mppi.reset(env.data)

    def act(self, env) -> np.ndarray:
        if self.mppi is None:
            raise RuntimeError("MPPIExpert.act before reset")
        return self.mppi.step(env.data)

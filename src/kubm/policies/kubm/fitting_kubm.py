"""Fitting K-UBM: the lift g_θ and a stable K, trained on what the planner executes.

The planner executes ``K^{k+1} z_0`` for the whole horizon from ξ_{-1}, and after a replan
for the rest of the episode from a later state. The loss therefore has two parts, both
on the lifted states (state block weight 1, lifted block ``psi_weight``):

- **trajectory**: for every demo, the full rollout from ξ_{-1} against the lifted true
  ξ_0 … ξ_{T-1} (every step of every demo, every iteration);
- **windows**: ``starts_per_demo`` later start states per demo (seeded), each rolled out
  ``window_steps`` steps: what a replan starts from.

``loss = trajectory_weight · trajectory + window_weight · windows``. The paper's
coherence loss is the special case ``trajectory_weight = 0``, ``window_steps = 20``,
``dynamics = "dense"``.

Dynamics (``config.dynamics``):

- ``"readout"`` (default): the lifted block evolves as x' = D x with D =
  blockdiag(r_i R(θ_i)), r_i < 1, and ξ is read out as C x (C re-solved in closed form
  every ``resolve_every`` iterations): stable by construction, no P⁻¹ (``ReadoutDynamics``).
- ``"modal"``: K = P · blockdiag(r_i R(θ_i)) · P⁻¹ with r_i = r_max·exp(−exp(ν_i))
  < 1, so ρ(K) = max r_i < 1 by construction, at every iteration. K^t z for every t at
  once in closed form (λ_i^t = r_i^t e^{i t θ_i}), so a 250-step rollout costs one matmul.
  P starts at the identity, r at r_init and θ spread over [0, theta_init_max], so K starts
  near the paper's K₀ = I (exactly r_init·I with theta_init_max = 0).
- ``"dense"``: a free dense K (K₀ = I), rolled out by repeated products; the paper's
  parameterisation, kept for the ablation.

Either way the saved model is a dense K with z' = K z (``KubmModel.K``), so the planner,
replanning, diagnostics and latency are the same.

Training stops at ``iterations`` (Adam, cosine-decayed learning rates, lift at ``lr_g``,
dynamics at ``lr_K``, full batch over demos): the same config, seed and thread count give
the same model bit for bit. ``time_budget_s`` is an optional extra cap (null by default).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kubm.policies.base import FitDiverged, FitInputs, check_reload_plan, provenance, write_json
from kubm.policies.features import action_limits, compute_scale, training_sequences
from kubm.policies.koopman import koopman_diagnostics, openloop_errors, set_replan_threshold
from kubm.policies.kubm.configuration_kubm import KubmConfig
from kubm.policies.kubm.modeling_kubm import KubmModel, KubmPolicy
from kubm.policies.training import plateau

__all__ = ["ReadoutDynamics", "ModalDynamics", "DenseDynamics", "fit", "fit_features", "make_dynamics", "kubm_loss", "plateau",
           "train_kubm"]


class _RotationModes(nn.Module):
    """n modal coordinates in 2-D rotation-and-decay blocks r_i R(θ_i) (a last real mode with
    eigenvalue r when n is odd), r_i = r_max·exp(−exp(ν_i)) < r_max ≤ 1: ν is unconstrained,
    so the block matrix D is stable by construction. The shared part of the modal and the
    read-out dynamics: D^t applied to many states and every t at once, and D itself."""

    def __init__(self, n: int, nu0: torch.Tensor, *, r_max: float, theta_max: float):
        super().__init__()
        self.r_max = float(r_max)
        self.n_pairs, self.odd = int(n) // 2, int(n) % 2 == 1
        self.nu = nn.Parameter(nu0)
        # rotation angles spread evenly over [0, theta_max]: identical modes at θ = 0 would
        # receive near-identical gradients and separate slowly
        self.theta = nn.Parameter(torch.linspace(0.0, float(theta_max), self.n_pairs))

    def log_radius(self) -> torch.Tensor:
        return math.log(self.r_max) - torch.exp(self.nu)

    def powers(self, w: torch.Tensor, steps: int) -> torch.Tensor:
        """(B, n) → (B, steps, n): D w, D² w, …, D^steps w in closed form (λ^t = r^t e^{i t θ})."""
        t = torch.arange(1, steps + 1, dtype=w.dtype)[:, None]  # (steps, 1)
        log_r = self.log_radius()
        mag = torch.exp(t * log_r[: self.n_pairs])  # r^t (steps, n_pairs)
        ang = t * self.theta
        c, s = (mag * torch.cos(ang)).T[None], (mag * torch.sin(ang)).T[None]  # (1, n_pairs, steps)
        x, y = w[:, 0: 2 * self.n_pairs: 2, None], w[:, 1: 2 * self.n_pairs: 2, None]  # (B, n_pairs, 1)
        out = torch.stack([x * c - y * s, x * s + y * c], dim=2).reshape(len(w), 2 * self.n_pairs, steps)
        if self.odd:
            out = torch.cat([out, w[:, -1:, None] * torch.exp(t.T * log_r[-1])[None]], dim=1)
        return out.transpose(1, 2)

    @torch.no_grad()
    def block(self) -> torch.Tensor:
        """D = blockdiag(r_i R(θ_i)) (float64)."""
        r = torch.exp(self.log_radius().double())
        n = 2 * self.n_pairs + int(self.odd)
        D = torch.zeros(n, n, dtype=torch.float64)
        for i in range(self.n_pairs):
            th = float(self.theta[i])
            D[2 * i: 2 * i + 2, 2 * i: 2 * i + 2] = float(r[i]) * torch.tensor(
                [[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=torch.float64)
        if self.odd:
            D[-1, -1] = r[-1]
        return D

    @torch.no_grad()
    def spectral_radius(self) -> float:
        return float(torch.exp(self.log_radius()).max())


def _check_radii(r_init: float, r_max: float) -> None:
    if not 0 < r_init < r_max <= 1:
        raise ValueError(f"need 0 < r_init ({r_init}) < r_max ({r_max}) <= 1")


class ModalDynamics(_RotationModes):
    """K = P · blockdiag(r_i R(θ_i)) · P⁻¹ with 0 < r_i ≤ r_max < 1 (stable by construction).

    d_z odd: the last modal coordinate is a real mode with eigenvalue r (θ fixed at 0).
    """

    def __init__(self, d_z: int, *, r_max: float, r_init: float, theta_max: float = 0.0):
        _check_radii(r_init, r_max)
        n_modes = int(d_z) // 2 + int(d_z) % 2
        nu0 = torch.full((n_modes,), math.log(-math.log(r_init / r_max)))  # K starts at r_init·I (θ aside)
        super().__init__(d_z, nu0, r_max=r_max, theta_max=theta_max)
        self.d_z = int(d_z)
        self.P = nn.Parameter(torch.eye(self.d_z))

    def predict(self, z0: torch.Tensor, steps: int) -> torch.Tensor:
        """(B, d_z) → (B, steps, d_z): K z0, K² z0, …, K^steps z0 in closed form."""
        w = torch.linalg.solve(self.P, z0.T).T  # modal coordinates P⁻¹ z0
        return self.powers(w, steps) @ self.P.T

    @torch.no_grad()
    def dense(self) -> torch.Tensor:
        """The dense K = P D P⁻¹ (float64)."""
        P = self.P.detach().double()
        return P @ self.block() @ torch.linalg.inv(P)


class DenseDynamics(nn.Module):
    """A free dense K (starts at I), rolled out by repeated products."""

    def __init__(self, K: nn.Parameter):
        super().__init__()
        self.K = K

    def predict(self, z0: torch.Tensor, steps: int) -> torch.Tensor:
        out, z = [], z0
        for _ in range(steps):
            z = z @ self.K.T
            out.append(z)
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def dense(self) -> torch.Tensor:
        return self.K.detach().double()

    @torch.no_grad()
    def spectral_radius(self) -> float:
        return float(torch.linalg.eigvals(self.dense()).abs().max())


class ReadoutDynamics(_RotationModes):
    """z = [ξ̄ ; x] with x = g(ξ̂) the lifted block: x' = D x with D = blockdiag(r_i R(θ_i)),
    r_i < r_max < 1, and the state block read out as ξ̄' = C x'. As a dense K on z::

        K = [[0, C·D],
             [0,   D ]]          ρ(K) = max r_i < 1

    The modal basis is the lift's own coordinates, so no P (and no P⁻¹) is needed: a rollout
    is an elementwise power per mode plus one read-out matmul. ``carry`` (the increment
    form) reads ξ̄' = ξ̄ + C x' instead: K gains an identity block (eigenvalue 1, no Jordan
    chain, so Kᵗ stays bounded).
    """

    def __init__(self, d_xi: int, n: int, *, r_max: float, r_init: float, theta_max: float = 0.0,
                 carry: bool = False):
        if n < 1:
            raise ValueError("the read-out dynamics need d_psi >= 1")
        _check_radii(r_init, r_max)
        n_modes = int(n) // 2 + int(n) % 2
        # moduli spread over [r_init, r_max) and angles over [0, theta_max]: a bank of decays
        # and frequencies the read-out can combine
        r0 = torch.linspace(r_init, r_max - 0.5 * (r_max - r_init) / n_modes, n_modes)
        super().__init__(n, torch.log(-torch.log(r0 / r_max)), r_max=r_max, theta_max=theta_max)
        self.carry = bool(carry)
        self.d_xi, self.n = int(d_xi), int(n)
        self.C = nn.Parameter(torch.zeros(self.d_xi, self.n))

    def latent(self, x0: torch.Tensor, steps: int) -> torch.Tensor:
        """(B, n) → (B, steps, n): D x0 … D^steps x0 in closed form."""
        return self.powers(x0, steps)

    def readout(self, z0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """State block of the rollout: C x_t, or (carry) ξ̄_0 + C Σ_{s≤t} x_s."""
        if self.carry:
            return z0[:, None, : self.d_xi] + torch.cumsum(x, dim=1) @ self.C.T
        return x @ self.C.T

    def predict(self, z0: torch.Tensor, steps: int, states_only: bool = False) -> torch.Tensor:
        x = self.latent(z0[:, self.d_xi:], steps)
        if states_only:
            return self.readout(z0, x)
        return torch.cat([self.readout(z0, x), x], dim=-1)

    @torch.no_grad()
    def dense(self) -> torch.Tensor:
        D = self.block()
        K = torch.zeros(self.d_xi + self.n, self.d_xi + self.n, dtype=torch.float64)
        K[: self.d_xi, self.d_xi:] = self.C.detach().double() @ D
        K[self.d_xi:, self.d_xi:] = D
        if self.carry:
            K[: self.d_xi, : self.d_xi] = torch.eye(self.d_xi, dtype=torch.float64)
        return K

    @torch.no_grad()
    def spectral_radius(self) -> float:
        r = super().spectral_radius()
        return max(r, 1.0) if self.carry else r


def make_dynamics(model: KubmModel) -> nn.Module:
    cfg = model.config
    if cfg.dynamics in ("readout", "increment"):
        return ReadoutDynamics(model.d_xi, model.d_psi, r_max=cfg.r_max, r_init=cfg.r_init,
                               theta_max=cfg.theta_init_max, carry=cfg.dynamics == "increment")
    if cfg.dynamics == "modal":
        return ModalDynamics(model.d_z, r_max=cfg.r_max, r_init=cfg.r_init, theta_max=cfg.theta_init_max)
    return DenseDynamics(model.K)


class _Data:
    """All training ξ rows in RAM, with the index tensors of the two loss terms."""

    def __init__(self, sequences: list[np.ndarray]):
        seqs = [np.asarray(s, dtype=np.float32) for s in sequences]
        self.lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        if (self.lengths < 2).any():
            raise ValueError("every training sequence needs at least 2 states")
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.X = torch.from_numpy(np.concatenate(seqs))
        self.n_rows = len(self.X)
        T = int(self.lengths.max()) - 1  # steps after ξ_{-1}
        steps = np.arange(1, T + 1)
        self.traj_steps = T
        self.traj_mask = torch.from_numpy(steps[None] < self.lengths[:, None])  # (E, T)
        self.traj_idx = torch.from_numpy(self.offsets[:, None] + np.minimum(steps[None], self.lengths[:, None] - 1))
        self.start_idx = torch.from_numpy(self.offsets)

    def windows(self, rng: np.random.Generator, per_demo: int, horizon: int):
        """``per_demo`` windows per demo at random later states (see ``windows_at``)."""
        return self.windows_at(rng.random((len(self.lengths), per_demo)), horizon)

    def windows_at(self, frac: np.ndarray, horizon: int):
        """Windows starting at t = 1 + ⌊frac·(L_e − 2)⌋ ∈ [1, L_e − 2] (later states, ξ_0
        onwards) for fractions ``frac`` (E, S) or (1, S): start rows (E·S,), target rows
        (E·S, horizon) and their mask."""
        L = self.lengths[:, None]
        t = 1 + np.floor(frac * np.maximum(L - 2, 1)).astype(np.int64)
        pos = t[..., None] + np.arange(1, horizon + 1)
        mask = pos < L[..., None]
        idx = self.offsets[:, None, None] + np.minimum(pos, L[..., None] - 1)
        start = self.offsets[:, None] + t
        return (torch.from_numpy(start.reshape(-1)), torch.from_numpy(idx.reshape(-1, horizon)),
                torch.from_numpy(mask.reshape(-1, horizon)))


def _masked_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, dim_w: torch.Tensor) -> torch.Tensor:
    err = ((pred - target) ** 2 * dim_w).sum(-1)
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp_min(1.0)


def kubm_loss(model: KubmModel, dynamics: nn.Module, data: _Data, windows, dim_w: torch.Tensor
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """trajectory_weight · (full rollouts from ξ_{-1}) + window_weight · (rollouts from later states).

    With ``psi_weight = 0`` only the state block is compared, so only the start rows are
    lifted (the targets are the normalised ξ, no g): an iteration costs a few hundred
    lifts instead of every training row.
    """
    cfg = model.config
    with_psi = cfg.psi_weight > 0
    if with_psi:
        Z = model.lift(data.X)
        lift_rows = lambda idx: Z[idx]  # noqa: E731
        target = lambda idx: Z[idx]  # noqa: E731
        w = dim_w
    else:
        states = model.normalise(data.X)
        lift_rows = lambda idx: model.lift(data.X[idx])  # noqa: E731
        target = lambda idx: states[idx]  # noqa: E731
        w = dim_w[: model.d_xi]
    d = len(w)
    if not with_psi and isinstance(dynamics, ReadoutDynamics):
        predict = lambda z0, n: dynamics.predict(z0, n, states_only=True)  # noqa: E731
    else:
        predict = lambda z0, n: dynamics.predict(z0, n)[..., :d]  # noqa: E731
    total, terms = data.X.new_zeros(()), {}
    if cfg.trajectory_weight > 0:
        pred = predict(lift_rows(data.start_idx), data.traj_steps)
        traj = _masked_error(pred, target(data.traj_idx), data.traj_mask, w)
        total = total + cfg.trajectory_weight * traj
        terms["trajectory"] = float(traj.detach())
    if cfg.window_weight > 0 and windows is not None:
        start, idx, mask = windows
        pred = predict(lift_rows(start), idx.shape[1])
        win = _masked_error(pred, target(idx), mask, w)
        total = total + cfg.window_weight * win
        terms["windows"] = float(win.detach())
    return total, terms


@torch.no_grad()
def init_readout(model: KubmModel, dynamics: ReadoutDynamics, data: _Data, cfg) -> dict:
    """Closed-form read-out: with the lift and D fixed, every predicted state is linear in C,
    so C is the ridge least-squares fit over the same two parts the loss has: every step of
    every demo's rollout from ξ_{-1}, and (weight ``window_weight``) rollouts of ``window_steps``
    steps from ``calib``-style evenly spaced later states of every demo. Each output
    dimension is a separate least-squares problem, so the action weight does not enter.
    Gradient descent then refines g, r, θ and C from this start."""
    d = model.d_xi
    states = model.normalise(data.X).double()

    def normal_equations(start: torch.Tensor, idx: torch.Tensor, mask: torch.Tensor):
        """Features F (latent powers, summed for carry) and targets Y of rollouts from the
        ``start`` rows to the ``idx`` rows, kept where ``mask``."""
        z0 = model.lift(data.X[start])
        F = dynamics.latent(z0[:, d:], idx.shape[1]).double()
        Y = states[idx]
        if dynamics.carry:  # ξ̄_t − ξ̄_start = C Σ_{s≤t} x_s
            F, Y = torch.cumsum(F, dim=1), Y - z0[:, None, :d].double()
        return F[mask], Y[mask]

    F, Y = normal_equations(data.start_idx, data.traj_idx, data.traj_mask)
    G, R = cfg.trajectory_weight * F.T @ F / len(F), cfg.trajectory_weight * F.T @ Y / len(F)
    if cfg.window_weight > 0:  # evenly spaced later starts, deterministic
        frac = (np.arange(cfg.starts_per_demo)[None] + 0.5) / cfg.starts_per_demo
        Fw, Yw = normal_equations(*data.windows_at(frac, cfg.window_steps))
        G = G + cfg.window_weight * Fw.T @ Fw / len(Fw)
        R = R + cfg.window_weight * Fw.T @ Yw / len(Fw)
    scale = float(torch.diagonal(G).mean()) or 1.0
    C = torch.linalg.solve(G + cfg.init_ridge * scale * torch.eye(G.shape[0], dtype=G.dtype), R).T
    dynamics.C.copy_(C.to(dynamics.C.dtype))
    resid = float(((F @ C.T - Y) ** 2).sum(-1).mean())
    return {"init_trajectory_loss": resid}


def train_kubm(model: KubmModel, sequences: list[np.ndarray], *, seed: int, progress: bool = False,
               desc: str = "fit kubm") -> dict:
    """Fit g_θ and K on ξ sequences (each (T_e + 1, d_ξ), ξ_{-1} first); writes the dense K
    into ``model.K``. Returns the curves: iteration, loss (and its terms), time_s, the
    spectral radius every ``check_every`` iterations, and the stop reason.

    Raises FitDiverged on a non-finite loss, or (dense dynamics) an exploding K.
    """
    from tqdm import tqdm

    cfg = model.config
    data = _Data(sequences)
    rng = np.random.default_rng(seed)
    dynamics = make_dynamics(model)
    dim_w = torch.ones(model.d_z)
    dim_w[: model.d_q] = cfg.action_weight
    dim_w[model.d_xi:] = cfg.psi_weight
    init = init_readout(model, dynamics, data, cfg) if isinstance(dynamics, ReadoutDynamics) else {}
    readout = isinstance(dynamics, ReadoutDynamics)
    # the read-out C is solved in closed form (init_readout) every resolve_every iterations and
    # at the end, never stepped by Adam: a first Adam step moves every entry by ~lr, which
    # wrecks a least-squares solution over a thousand latent dims
    dyn_params = [p for n, p in dynamics.named_parameters() if not (readout and n == "C")]
    groups = [{"params": dyn_params, "lr": cfg.lr_K}]
    if model.g is not None:
        lift_params = list(model.g.parameters()) + ([] if model.g_linear is None else list(model.g_linear.parameters()))
        groups.insert(0, {"params": lift_params, "lr": cfg.lr_g})
    opt = torch.optim.Adam(groups)
    base_lrs = [g["lr"] for g in groups]
    curves: dict = {"iteration": [], "loss": [], "trajectory": [], "windows": [], "time_s": [],
                    "rho_iteration": [], "rho": [], "stopped": "iterations", **init}
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(total=cfg.iterations, desc=desc, unit="it", disable=not progress, mininterval=1.0)

    def check_rho(it: int) -> None:
        rho = dynamics.spectral_radius()
        curves["rho_iteration"].append(it)
        curves["rho"].append(rho)
        if not rho <= cfg.max_rho:
            bar.close()
            raise FitDiverged(seed, it, f"spectral radius of K is {rho:.3g} > {cfg.max_rho:g}")

    check_rho(0)
    for it in range(1, cfg.iterations + 1):
        # cosine decay to lr_floor × the base rate: the loss settles instead of hovering
        frac = (it - 1) / max(cfg.iterations - 1, 1)
        scale = cfg.lr_floor + (1 - cfg.lr_floor) * 0.5 * (1 + math.cos(math.pi * frac))
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * scale
        windows = data.windows(rng, cfg.starts_per_demo, cfg.window_steps) if cfg.window_weight > 0 else None
        loss, terms = kubm_loss(model, dynamics, data, windows, dim_w)
        value = float(loss.detach())
        if not math.isfinite(value):
            bar.close()
            raise FitDiverged(seed, it, f"loss is {value}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dyn_params, cfg.clip_K)
        opt.step()
        if readout and (it % cfg.resolve_every == 0 or it == cfg.iterations):
            init_readout(model, dynamics, data, cfg)
        if cfg.dynamics == "dense":
            kmax = float(model.K.detach().abs().max())
            if not math.isfinite(kmax) or kmax > cfg.max_abs_K:
                bar.close()
                raise FitDiverged(seed, it, f"K exploded (max |K_ij| = {kmax:.3g} > {cfg.max_abs_K:g})")
        if it % cfg.check_every == 0 or it == cfg.iterations:
            check_rho(it)
        elapsed = time.perf_counter() - t0
        curves["iteration"].append(it)
        curves["loss"].append(value)
        curves["trajectory"].append(terms.get("trajectory"))
        curves["windows"].append(terms.get("windows"))
        curves["time_s"].append(round(elapsed, 4))
        bar.update(1)
        if it % 20 == 0:
            bar.set_postfix(loss=f"{value:.4g}")
        if cfg.time_budget_s is not None and elapsed >= cfg.time_budget_s and it < cfg.iterations:
            curves["stopped"] = f"time_budget_s after {it} iterations"
            check_rho(it)
            break
    bar.close()
    with torch.no_grad():
        model.K.copy_(dynamics.dense().to(model.K.dtype))
    model.eval()
    curves["plateau"] = plateau(curves["loss"])
    return curves


def fit_features(cfg: KubmConfig, features, seed: int, *, progress: bool = False, desc: str = "fit kubm"
                 ) -> tuple[KubmModel, dict, float, float]:
    """A K-UBM trained on a feature set (``kubm.policies.features.FeatureSet``): s, ξ
    sequences, normalisation and joint limits from its episodes, torch seeded with ``seed``.
    Returns (model, curves, s, training wall seconds)."""
    s = compute_scale(features)
    seqs = training_sequences(features, s)
    lo, hi = action_limits(features)
    torch.manual_seed(seed)
    model = KubmModel(cfg, features.d_q, features.d_flow, features.d_c)
    model.set_statistics(np.concatenate(seqs), s, lo, hi)
    t0 = time.perf_counter()
    curves = train_kubm(model, seqs, seed=seed, progress=progress, desc=desc)
    return model, curves, s, time.perf_counter() - t0


def _plot_loss(curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(curves["iteration"], curves["loss"], lw=0.8, label="total")
    for key in ("trajectory", "windows"):
        if any(v is not None for v in curves.get(key, [])):
            ax.semilogy(curves["iteration"], curves[key], lw=0.6, alpha=0.7, label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    fall = (curves.get("plateau") or {}).get("relative_fall")
    tail = "" if fall is None else f", last fifth −{100 * fall:.1f} %"
    ax.set_title(f"K-UBM training ({curves['time_s'][-1]:.0f} s{tail})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fit(cfg: KubmConfig, inputs: FitInputs, out: Path) -> dict:
    """Train, calibrate the replanning threshold, save into ``out`` and write the curves,
    plots and diagnostics beside the model. Returns the fit summary."""
    train, seed = inputs.train, inputs.seed
    model, curves, s, train_s = fit_features(cfg, train, seed, progress=inputs.progress,
                                             desc=f"fit kubm {inputs.task_id} seed{seed}")
    policy = KubmPolicy(model, task_id=inputs.task_id, config_hash=inputs.config_hash, feature_attrs=train.attrs,
                        seed=seed, extra={"trained": {"iterations": len(curves["loss"]), "wall_s": round(train_s, 2),
                                                      "final_loss": curves["loss"][-1], "stopped": curves["stopped"],
                                                      "plateau": curves["plateau"],
                                                      "n_train_demos": len(train.episodes)},
                                          **provenance()})
    calib = set_replan_threshold(policy, train.episodes, inputs.ae)
    policy.save(out)
    check_reload_plan(policy, out, inputs.test)
    (out / "curves.json").write_text(json.dumps(curves))
    _plot_loss(curves, out / "loss.png")
    diag = koopman_diagnostics(policy, inputs, out)
    write_json(out / "diagnostics.json", {
        **diag, "replan_calibration": calib, "scale_s": s, "final_loss": curves["loss"][-1],
        "iterations": len(curves["loss"]), "train_wall_s": round(train_s, 2), "stopped": curves["stopped"],
        "plateau": curves["plateau"], "max_rho_during_training": max(curves["rho"]),
        "openloop_train": openloop_errors(policy, train.episodes, None)})
    return {"method": "kubm", "seed": seed, "iterations": len(curves["loss"]), "final_loss": curves["loss"][-1],
            "train_wall_s": round(train_s, 2), "spectral_radius": diag["spectral_radius"], "scale_s": s,
            "replan_threshold_px": policy.replan_threshold_px,
            "openloop_action_rms_rad": diag["openloop_test"]["action_rms_rad_overall"]}

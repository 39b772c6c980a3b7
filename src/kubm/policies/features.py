"""Feature stores (the `encode` stage's output) as training episodes in RAM, and ξ.

Unified behavioural state (docs/design.md, "The method")::

    ξ_t    = [a_t    ; s·φ_t ; s·c]      a = action (joint-position target), φ = flow latent
    ξ_{-1} = [qpos_0 ; s·φ_0 ; s·c]      the auxiliary initial state prepended to every demo

``s = mean‖a‖ / mean‖φ‖`` over every training step, computed once and saved with the
model. The context ``c`` (constant per episode; the first row of ``data/context`` is
used) is scaled by ``s`` too, as in the prototype (docs/design.md, "The method").

Also here: the compatibility check between a model and a feature store / task, and the
point centroid of decoded flow latents (replanning's divergence measure).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kubm.storage.episode_store import EpisodeStore
from kubm.errors import DataError, ModelError

log = logging.getLogger(__name__)

PRODUCER = "encode"
ARRAYS = ("flow", "qpos", "action", "context")
# Feature-store attrs a model records (config.json "features") for compatibility checks.
RECORDED_ATTRS = ("suite", "task", "d_q", "d_flow", "d_c", "width", "height", "config_hash", "ae")


class FeatureError(DataError):
    """A feature store cannot be used for training (inconsistent dims, non-finite values, ...)."""


class IncompatibleError(ModelError):
    """A model does not fit the features or the task it is asked to work on."""


@dataclass
class Episode:
    action: np.ndarray  # (T, d_q) float32
    qpos: np.ndarray  # (T, d_q) float32
    flow: np.ndarray  # (T, d_flow) float32, unscaled latents
    context: np.ndarray  # (d_c,) float32
    seed: int

    def __len__(self) -> int:
        return len(self.action)


@dataclass
class FeatureSet:
    path: Path
    attrs: dict
    episodes: list[Episode] = field(default_factory=list)
    d_q: int = 0
    d_flow: int = 0
    d_c: int = 0

    @property
    def task_id(self) -> str | None:
        s, t = self.attrs.get("suite"), self.attrs.get("task")
        return f"{s}/{t}" if s and t else None

    @property
    def n_steps(self) -> int:
        return sum(len(e) for e in self.episodes)

    def dims(self) -> dict[str, int]:
        return {"d_q": self.d_q, "d_flow": self.d_flow, "d_c": self.d_c}


def load_features(path, *, producer: str = PRODUCER) -> FeatureSet:
    """Read a whole feature store into RAM, checked: dims against attrs, finite values."""
    path = Path(path)
    store = EpisodeStore.open(path, producer=producer, required=list(ARRAYS))
    arrays = {k: store.array(k).astype(np.float32, copy=False) for k in ARRAYS}
    for k, a in arrays.items():
        if a.ndim != 2:
            raise FeatureError(f"{path}: data/{k} has shape {a.shape}, expected (N, dim)")
    d_q, d_flow, d_c = arrays["qpos"].shape[1], arrays["flow"].shape[1], arrays["context"].shape[1]
    if arrays["action"].shape[1] != d_q:
        raise FeatureError(f"{path}: data/action has {arrays['action'].shape[1]} dims but data/qpos "
                           f"has {d_q}; K-UBM needs joint-position targets (a_t = q_t^target)")
    for key, have in (("d_q", d_q), ("d_flow", d_flow), ("d_c", d_c)):
        want = store.attrs.get(key)
        if want is not None and int(want) != have:
            raise FeatureError(f"{path}: attrs {key}={want} but the arrays have {have}; "
                               f"the store is inconsistent, rerun `kubm encode`")
    for k, a in arrays.items():
        bad = ~np.isfinite(a).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            eps = sorted({int(np.searchsorted(store.episode_ends, r, side="right")) for r in rows})
            raise FeatureError(f"{path}: data/{k} has non-finite values in {len(rows)} rows "
                               f"(episodes {eps[:10]}); rerun `kubm encode` or drop those demos")
    seeds = store.meta("seed") if "seed" in store.meta_keys() else np.arange(store.n_episodes)
    episodes = []
    for i in range(store.n_episodes):
        sl = store.episode_slice(i)
        ctx = arrays["context"][sl]
        if d_c and np.abs(ctx - ctx[0]).max() > 1e-4 * (1 + np.abs(ctx[0]).max()):
            log.warning("%s: episode %d: context varies over time; K-UBM uses its first row", path, i)
        episodes.append(Episode(action=arrays["action"][sl], qpos=arrays["qpos"][sl],
                                flow=arrays["flow"][sl], context=ctx[0].copy(), seed=int(seeds[i])))
    if not episodes:
        raise FeatureError(f"{path}: no episodes")
    return FeatureSet(path=path, attrs=dict(store.attrs), episodes=episodes, d_q=d_q, d_flow=d_flow, d_c=d_c)


def compute_scale(features: FeatureSet) -> float:
    """s = mean‖a‖ / mean‖φ‖ over every training step."""
    a = np.concatenate([e.action for e in features.episodes]).astype(np.float64)
    f = np.concatenate([e.flow for e in features.episodes]).astype(np.float64)
    na, nf = np.linalg.norm(a, axis=1).mean(), np.linalg.norm(f, axis=1).mean()
    if not (nf > 0 and np.isfinite(na) and np.isfinite(nf)):
        raise FeatureError(f"{features.path}: cannot compute s = mean‖a‖/mean‖φ‖ "
                           f"(mean‖a‖={na}, mean‖φ‖={nf})")
    return float(na / nf)


def make_xi(first: np.ndarray, flow: np.ndarray, context: np.ndarray | None, s: float) -> np.ndarray:
    """[first ; s·φ ; s·c] along the last axis; ``first`` is an action (or qpos_0 for ξ_{-1}).

    ``first`` (…, d_q) and ``flow`` (…, d_flow) share leading dims; ``context`` (d_c,) is
    broadcast over them.
    """
    first = np.asarray(first, dtype=np.float32)
    flow = np.asarray(flow, dtype=np.float32)
    ctx = np.zeros(0, np.float32) if context is None else np.asarray(context, dtype=np.float32).reshape(-1)
    ctx = np.broadcast_to(ctx, first.shape[:-1] + ctx.shape)
    return np.concatenate([first, np.float32(s) * flow, np.float32(s) * ctx], axis=-1)


def episode_sequence(ep: Episode, s: float) -> np.ndarray:
    """(T+1, d_ξ): ξ_{-1} = [qpos_0; s·φ_0; s·c] followed by ξ_0 … ξ_{T-1}."""
    xi_m1 = make_xi(ep.qpos[0], ep.flow[0], ep.context, s)
    return np.concatenate([xi_m1[None], make_xi(ep.action, ep.flow, ep.context, s)], axis=0)


def training_sequences(features: FeatureSet, s: float) -> list[np.ndarray]:
    return [episode_sequence(ep, s) for ep in features.episodes]


def action_limits(features: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint min/max of the training actions: the joint limits plans are clipped to."""
    a = np.concatenate([e.action for e in features.episodes])
    return a.min(axis=0), a.max(axis=0)


def decoded_centroids(ae, latents: np.ndarray) -> np.ndarray:
    """(T, 2) pixel centroid of the points ``ae.decode(latents [T, d_flow]) -> [T, P, 2]``."""
    latents = np.asarray(latents, dtype=np.float32)
    if len(latents) == 0:
        return np.zeros((0, 2), np.float64)
    pts = ae.decode(latents)
    if hasattr(pts, "detach"):  # a torch tensor
        pts = pts.detach().cpu().numpy()
    pts = np.asarray(pts, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[0] != len(latents) or pts.shape[-1] != 2:
        raise ValueError(f"flow AE decode returned shape {pts.shape}, expected ({len(latents)}, P, 2)")
    return pts.mean(axis=1)


def check_compatible(policy, feature_attrs: dict | None = None, task_id: str | None = None) -> None:
    """Raise IncompatibleError if ``policy`` was trained for other feature dims, another flow
    AE or another task. ``feature_attrs`` are a feature store's attrs (d_q, d_flow, d_c,
    suite, task, ae); ``task_id`` is "suite/task"."""
    where = getattr(policy, "source", None) or "the model"
    trained = getattr(policy, "task_id", None)
    if task_id is not None and trained is not None and task_id != trained:
        raise IncompatibleError(f"{where} was trained on task {trained}, not {task_id}; "
                                f"use models/{task_id}/... or refit (`kubm fit {task_id} ...`)")
    if feature_attrs is None:
        return
    mismatched = []
    for key in ("d_q", "d_flow", "d_c"):
        have = feature_attrs.get(key)
        if have is not None and int(have) != int(getattr(policy, key)):
            mismatched.append(f"{key}={have} (model: {getattr(policy, key)})")
    if mismatched:
        raise IncompatibleError(f"features do not match {where}: {', '.join(mismatched)}; "
                                "encode with the model's flow AE and task, or refit the model")
    s, t = feature_attrs.get("suite"), feature_attrs.get("task")
    if s and t and trained is not None and f"{s}/{t}" != trained:
        raise IncompatibleError(f"features are from task {s}/{t} but {where} was trained on {trained}")
    mine = (getattr(policy, "feature_attrs", None) or {}).get("ae") or {}
    theirs = feature_attrs.get("ae") or {}
    if mine.get("sha256") and theirs.get("sha256") and mine["sha256"] != theirs["sha256"]:
        raise IncompatibleError(f"features were encoded with flow AE {theirs['sha256'][:12]}… but {where} "
                                f"was trained on latents of AE {mine['sha256'][:12]}…; latents differ")


# ---------------------------------------------------------------------------------------
# helpers shared by the baselines (kodex, regression, diffusion, act)
# ---------------------------------------------------------------------------------------

def block_statistics(rows: np.ndarray, block_sizes) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of ``rows`` (N, Σ block_sizes), with the stds of each block
    floored to 1 % of that block's mean std, and a block constant over all rows given std 1
    (the rule ``KubmModel.set_statistics`` applies to ξ's action / flow / context blocks)."""
    x = np.asarray(rows, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != sum(block_sizes):
        raise ValueError(f"rows have shape {x.shape}, expected (N, {sum(block_sizes)})")
    mean, std = x.mean(axis=0), x.std(axis=0)
    a = 0
    for n in block_sizes:
        b = a + int(n)
        if b > a:
            ref = std[a:b].mean()
            std[a:b] = np.maximum(std[a:b], 0.01 * ref) if ref > 1e-12 else 1.0
        a = b
    return mean, std


def observation_rows(ep: Episode) -> np.ndarray:
    """(T, d_q + d_flow + d_c) per-step observation [qpos_t ; φ_t ; c] (unscaled), the input of
    the receding-horizon policies (Diffusion Policy, ACT)."""
    ctx = np.broadcast_to(ep.context.reshape(1, -1), (len(ep), ep.context.size))
    return np.concatenate([ep.qpos, ep.flow, ctx], axis=1).astype(np.float32)


def window_indices(lengths, episode: np.ndarray, t: np.ndarray, n_obs: int, horizon: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of training windows into the concatenated episodes.

    For each (episode e, time t): observation rows t−n_obs+1 … t (clamped to the episode's
    first row: the first observation repeats at the start) and action rows t … t+horizon−1
    (clamped to its last row), plus ``pad`` (B, horizon) marking action rows past the end.
    Returns (obs_idx (B, n_obs), act_idx (B, horizon), pad (B, horizon) bool)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    episode, t = np.asarray(episode, np.int64), np.asarray(t, np.int64)
    off, L = offsets[episode][:, None], lengths[episode][:, None]
    obs_t = np.maximum(t[:, None] + np.arange(-n_obs + 1, 1), 0)
    act_t = t[:, None] + np.arange(horizon)
    pad = act_t >= L
    return off + obs_t, off + np.minimum(act_t, L - 1), pad


def policy_header(method: str, fmt: int, policy, config: dict) -> dict:
    """The config.json keys every saved policy shares (what ``check_compatible`` and the
    evaluator's ``model_meta`` read)."""
    return {"method": method, "format": fmt, "task": policy.task_id, "config_hash": policy.config_hash,
            "seed": policy.seed, "config": config, "d_q": policy.d_q, "d_flow": policy.d_flow,
            "d_c": policy.d_c, "features": policy.feature_attrs}


def recorded_feature_attrs(feature_attrs: dict | None) -> dict:
    return {k: v for k, v in (feature_attrs or {}).items() if k in RECORDED_ATTRS}


def check_vector(name: str, x, d: int) -> np.ndarray:
    """``x`` as a finite float32 vector of ``d`` values (None = empty), else ValueError."""
    x = np.zeros(0, np.float32) if x is None else np.asarray(x, dtype=np.float32).reshape(-1)
    if x.shape != (d,):
        raise ValueError(f"{name} has {x.size} values, the model expects {d}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has non-finite values")
    return x


@dataclass
class ChunkData:
    """Training data of the receding-horizon policies: per-step observations [qpos; φ; c] and
    actions of every episode, concatenated, with uniform sampling of (episode, t) windows."""

    obs: np.ndarray  # (N, d_q + d_flow + d_c) float32
    action: np.ndarray  # (N, d_q) float32
    lengths: np.ndarray  # (E,) int64

    @classmethod
    def from_episodes(cls, episodes) -> ChunkData:
        if not episodes:
            raise FeatureError("no training episodes")
        return cls(obs=np.concatenate([observation_rows(e) for e in episodes]),
                   action=np.concatenate([e.action for e in episodes]).astype(np.float32),
                   lengths=np.array([len(e) for e in episodes], np.int64))

    def windows(self, rows: np.ndarray, n_obs: int, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Windows at flat step indices ``rows`` (into the concatenation): obs (B, n_obs, d_o),
        actions (B, horizon, d_q) (the last action repeats past the end), pad (B, horizon)."""
        ends = np.cumsum(self.lengths)
        ep = np.searchsorted(ends, rows, side="right")
        t = rows - (ends - self.lengths)[ep]
        oi, ai, pad = window_indices(self.lengths, ep, t, n_obs, horizon)
        return self.obs[oi], self.action[ai], pad

    def sample(self, rng: np.random.Generator, batch: int, n_obs: int, horizon: int):
        return self.windows(rng.integers(0, len(self.obs), size=batch), n_obs, horizon)

    def spread_rows(self, n: int) -> np.ndarray:
        """Up to ``n`` flat step indices spread evenly over the data (a fixed evaluation set)."""
        return np.unique(np.linspace(0, len(self.obs) - 1, n).round().astype(np.int64))


def split_validation(episodes: list, n_val: int) -> tuple[list, list]:
    """(fit, validation): the last ``n_val`` training demos are held out (they come from the
    training seeds, never the test seeds). With too few demos nothing is held out."""
    n_val = int(n_val)
    if n_val <= 0 or len(episodes) <= n_val:
        return list(episodes), []
    return list(episodes[:-n_val]), list(episodes[-n_val:])


def chunk_errors(predict, data: ChunkData, n_obs: int, horizon: int, mean_action: np.ndarray,
                 max_windows: int = 64) -> dict:
    """Action RMS (rad) of chunks predicted from the true observation history at evenly spread
    windows of ``data`` (padding past an episode's end excluded), beside the RMS of always
    predicting ``mean_action`` (the training mean) on the same windows.

    ``predict``: (B, n_obs, d_obs) raw observations → (B, horizon, d_q) actions."""
    rows = data.spread_rows(max_windows)
    obs, act, pad = data.windows(rows, n_obs, horizon)
    pred = np.asarray(predict(obs), np.float64)
    valid = ~pad
    se = ((pred - act) ** 2).mean(-1)
    se_mean = ((np.asarray(mean_action, np.float64) - act) ** 2).mean(-1)
    rms, rms_mean = float(np.sqrt(se[valid].mean())), float(np.sqrt(se_mean[valid].mean()))
    return {"n_windows": int(len(rows)), "chunk_action_rms_rad": rms, "first_action_rms_rad": float(np.sqrt(se[:, 0].mean())),
            "mean_action_rms_rad": rms_mean, "ratio_to_mean_action": rms / max(rms_mean, 1e-12)}

"""Flow autoencoder: one frame's N tracked object points -> a latent vector -> N points.

Input per frame: the N points in image-normalised coordinates (u = x/W, v = y/H) plus
their visibility, i.e. [N, 3]. The point index means the same thing across episodes only
as far as the track stage orders its queries canonically (raster order in frame 0), so the
model is a plain MLP over the flattened [N*3] vector and assumes nothing more.

Inside the model the coordinates are standardised with statistics of the training set
(per-point mean, one global scale), stored as buffers with the weights: the MLP then
learns deviations from the average point cloud, which converges much faster than raw
[0,1] coordinates. The decoder outputs standardised coordinates that are mapped back.

Loss: weighted MSE of the standardised coordinates over all N points. Points the tracker
marks invisible still carry its position estimate (occluded, not lost), so by default they
count fully (``invisible_weight = 1``); a lower weight trusts them less.

``FlowAE`` is the numpy-facing wrapper used by encode / fit / evaluate: pixels in, latents
out and back. Saved as ``model.safetensors`` + ``config.json``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from kubm.errors import ModelError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT = "kubm.flow_ae/1"
_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}
_CHUNK = 4096  # frames per forward pass in the numpy wrapper (bounds memory)


class FlowAEError(ModelError):
    """A flow AE cannot be built, loaded or trained as asked; the message says what to do."""


@dataclass
class FlowAEConfig:
    """Architecture and training recipe (the ``train_ae`` config section plus n_points)."""

    n_points: int = 256
    latent_dim: int = 128
    hidden: list[int] = field(default_factory=lambda: [512, 512])
    activation: str = "gelu"  # gelu | relu
    invisible_weight: float = 1.0  # loss weight of points the tracker marks invisible
    epochs: int = 200
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.hidden = [int(h) for h in self.hidden]
        if self.activation not in _ACTIVATIONS:
            raise FlowAEError(f"flow AE activation {self.activation!r} is not allowed; "
                              f"allowed values: {sorted(_ACTIVATIONS)}")
        for name in ("n_points", "latent_dim", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise FlowAEError(f"flow AE {name} must be >= 1, got {getattr(self, name)}")
        if not self.hidden or min(self.hidden) < 1:
            raise FlowAEError(f"flow AE hidden widths must be a non-empty list of positive ints, got {self.hidden}")
        if not 0.0 <= self.invisible_weight:
            raise FlowAEError(f"flow AE invisible_weight must be >= 0, got {self.invisible_weight}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides) -> FlowAEConfig:
        """From the ``train_ae`` config section (or a saved config); unknown keys are an error."""
        d = {**d, **overrides}
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise FlowAEError(f"unknown flow AE config key(s) {extra}; allowed keys: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mlp(widths: list[int], activation: str) -> nn.Sequential:
    """Linear layers between consecutive widths, activation between (not after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class FlowAutoencoder(nn.Module):
    """MLP autoencoder over [B, N, 2] normalised coordinates + [B, N] visibility."""

    def __init__(self, cfg: FlowAEConfig):
        super().__init__()
        self.cfg = cfg
        n = cfg.n_points
        # Standardisation of the coordinates (set from the training set by set_stats()).
        self.register_buffer("coord_mean", torch.full((n, 2), 0.5))
        self.register_buffer("coord_scale", torch.ones(1))
        self.encoder = _mlp([n * 3, *cfg.hidden, cfg.latent_dim], cfg.activation)
        self.decoder = _mlp([cfg.latent_dim, *reversed(cfg.hidden), n * 2], cfg.activation)

    @torch.no_grad()
    def set_stats(self, uv: torch.Tensor) -> None:
        """Per-point mean and one global scale of training coordinates uv [M, N, 2]."""
        mean = uv.mean(dim=0)
        scale = (uv - mean).pow(2).mean().sqrt().clamp_min(1e-3)  # floor: a static point set
        self.coord_mean.copy_(mean)
        self.coord_scale.fill_(float(scale))

    def standardise(self, uv: torch.Tensor) -> torch.Tensor:
        return (uv - self.coord_mean) / self.coord_scale

    def encode_std(self, d: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Latent from standardised coordinates d [B, N, 2] and visibility [B, N] (0/1)."""
        x = torch.cat([d, (2.0 * visible - 1.0).unsqueeze(-1)], dim=-1)
        return self.encoder(x.flatten(1))

    def decode_std(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, self.cfg.n_points, 2)

    def encode(self, uv: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        return self.encode_std(self.standardise(uv), visible)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised coordinates [B, N, 2] from latents [B, latent_dim]."""
        return self.decode_std(z) * self.coord_scale + self.coord_mean

    def loss(self, uv: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Weighted MSE of standardised coordinates (see module docstring)."""
        d = self.standardise(uv)
        err = (self.decode_std(self.encode_std(d, visible)) - d).pow(2).sum(-1)  # [B, N]
        w = torch.where(visible > 0.5, 1.0, self.cfg.invisible_weight)
        return (w * err).sum() / (2.0 * w.sum().clamp_min(1e-12))

    def forward(self, uv: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(uv, visible))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ae_mismatch(ae_dir, feature_attrs: dict, features_path) -> str | None:
    """Why the flow AE in ``ae_dir`` is not the one a feature store was encoded with (its
    weights' sha256 is recorded in the store's attrs), or None when it is or cannot be told.
    Another AE's latents mean something else to every model trained on those features."""
    recorded = ((feature_attrs or {}).get("ae") or {}).get("sha256")
    weights = Path(ae_dir) / WEIGHTS
    if not recorded or not weights.is_file():
        return None
    actual = sha256_file(weights)
    if actual == recorded:
        return None
    return (f"flow autoencoder {ae_dir} (weights sha256 {actual[:12]}…) is not the one {features_path} was encoded "
            f"with ({feature_attrs['ae'].get('dir')}, sha256 {recorded[:12]}…); pass that autoencoder, or "
            "re-encode the features and refit with this one")


class FlowAE:
    """Numpy-facing flow AE in pixel coordinates of a ``width`` x ``height`` image."""

    def __init__(self, model: FlowAutoencoder, width: int, height: int, meta: dict | None = None):
        self.model = model.eval()
        self.config = model.cfg
        self.width, self.height = int(width), int(height)
        self.meta: dict = dict(meta or {})  # training provenance (task, config hash, tracks, ...)
        self._wh = torch.tensor([self.width, self.height], dtype=torch.float32)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def n_points(self) -> int:
        return self.config.n_points

    @property
    def task_id(self) -> str | None:
        return self.meta.get("task")

    def to_normalised(self, points_px: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(points_px, dtype=np.float32)) / self._wh

    def encode(self, points_px: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """Latents [T, latent_dim] float32 of points [T, N, 2] (pixel xy) and visibility [T, N].

        A single frame ([N, 2], [N]) gives [latent_dim]."""
        pts, vis = np.asarray(points_px), np.asarray(visible)
        single = pts.ndim == 2
        if single:
            pts, vis = pts[None], vis[None]
        n = self.n_points
        if pts.ndim != 3 or pts.shape[1:] != (n, 2) or vis.shape != pts.shape[:2]:
            raise FlowAEError(f"flow AE encode expects points [T,{n},2] and visible [T,{n}], "
                              f"got {pts.shape} and {vis.shape}")
        out = []
        with torch.no_grad():
            for s in range(0, len(pts), _CHUNK):
                uv = self.to_normalised(pts[s:s + _CHUNK])
                v = torch.as_tensor(vis[s:s + _CHUNK].astype(np.float32))
                out.append(self.model.encode(uv, v).numpy())
        z = np.concatenate(out, axis=0) if out else np.zeros((0, self.latent_dim), np.float32)
        z = z.astype(np.float32, copy=False)
        return z[0] if single else z

    def decode(self, latent: np.ndarray) -> np.ndarray:
        """Pixel points [T, N, 2] float32 from latents [T, latent_dim] ([latent_dim] -> [N, 2])."""
        z = np.asarray(latent, dtype=np.float32)
        single = z.ndim == 1
        if single:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise FlowAEError(f"flow AE decode expects latents [T,{self.latent_dim}], got {z.shape}")
        out = []
        with torch.no_grad():
            for s in range(0, len(z), _CHUNK):
                out.append((self.model.decode(torch.as_tensor(z[s:s + _CHUNK])) * self._wh).numpy())
        pts = np.concatenate(out, axis=0) if out else np.zeros((0, self.n_points, 2), np.float32)
        pts = pts.astype(np.float32, copy=False)
        return pts[0] if single else pts

    # ------------------------------------------------------------------ save / load
    def config_dict(self) -> dict:
        return {"format": FORMAT, "config": self.config.to_dict(), "width": self.width,
                "height": self.height, "meta": self.meta}

    def save(self, directory) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(directory / WEIGHTS), metadata={"format": FORMAT})
        (directory / CONFIG).write_text(json.dumps(self.config_dict(), indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory) -> FlowAE:
        from safetensors.torch import load_file

        directory = Path(directory)
        how = f"rerun `kubm train-ae` to write {directory}"
        missing = [f for f in (WEIGHTS, CONFIG) if not (directory / f).is_file()]
        if missing:
            raise FlowAEError(f"{directory}: not a flow AE: missing {missing}; {how}")
        try:
            saved = json.loads((directory / CONFIG).read_text())
        except json.JSONDecodeError as e:
            raise FlowAEError(f"{directory / CONFIG}: not valid JSON ({e}); {how}") from e
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise FlowAEError(f"{directory / CONFIG}: format {saved.get('format') if isinstance(saved, dict) else None!r}, "
                              f"this code reads {FORMAT!r}; {how}")
        try:
            cfg = FlowAEConfig.from_dict(saved["config"])
            width, height = int(saved["width"]), int(saved["height"])
        except (KeyError, TypeError) as e:
            raise FlowAEError(f"{directory / CONFIG}: incomplete flow AE config ({e!r}); {how}") from e
        try:
            state = load_file(str(directory / WEIGHTS))
        except Exception as e:  # safetensors raises its own error types on corrupt files
            raise FlowAEError(f"{directory / WEIGHTS}: cannot read weights ({e}); {how}") from e
        model = FlowAutoencoder(cfg)
        want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in state.items()}
        if want != have:
            diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
            detail = ", ".join(f"{k}: config {want.get(k)} vs weights {have.get(k)}" for k in diff[:4])
            raise FlowAEError(f"{directory}: config.json does not match model.safetensors ({detail}); "
                              f"the files come from different runs; {how}")
        model.load_state_dict(state)
        return cls(model, width, height, saved.get("meta") or {})

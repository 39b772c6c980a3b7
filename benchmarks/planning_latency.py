"""K-UBM planning cost on one CPU thread. Prints JSON.

- ``step_us``: one planned step streamed: the matvec ``z ← K z`` (float64, as in
  ``KubmPolicy.rollout``) plus reading the action out of z (de-normalise the action block,
  clip it to the joint limits); median over repeats of a 2,000-step loop.
- ``matvec_us``: the bare ``K @ z`` of that loop.
- ``rollout_ms``: ``KubmPolicy.rollout(z0, T)``, the whole horizon (T = 200) with the
  actions and flow latents read out (vectorised after the loop); ``rollout_step_us`` is it
  divided by T.
- ``plan_ms``: ``KubmPolicy.plan(qpos0, flow0, context, T)``: ξ_{-1}, the lift g_θ (torch)
  and the rollout.

Models: randomly initialised K-UBMs of the configured size (``fit.kubm.hidden`` from the
config; d_q / d_flow / d_c by option, defaults those of adroit/relocate) for each d_ψ in
``--d-psi`` (default 32 and 128), with K scaled to spectral radius 1; or a saved model with
``--model DIR``.

    python benchmarks/planning_latency.py [--model models/adroit/relocate/kubm/seed0]
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from kubm.config import DEFAULT_CONFIG, load_config  # noqa: E402
from kubm.policies.kubm import KubmConfig, KubmModel, KubmPolicy  # noqa: E402


def random_policy(d_psi: int, hidden: list[int], d_q: int, d_flow: int, d_c: int, seed: int = 0) -> KubmPolicy:
    torch.manual_seed(seed)
    m = KubmModel(KubmConfig(d_psi=d_psi, hidden=hidden), d_q, d_flow, d_c)
    rng = np.random.default_rng(seed)
    m.set_statistics(rng.normal(size=(500, m.d_xi)), s=1.0, action_low=np.full(d_q, -3.0),
                     action_high=np.full(d_q, 3.0))
    K = np.eye(m.d_z) + 0.05 * rng.normal(size=(m.d_z, m.d_z)) / np.sqrt(m.d_z)
    K /= np.abs(np.linalg.eigvals(K)).max()
    with torch.no_grad():
        m.K.copy_(torch.as_tensor(K, dtype=torch.float32))
    return KubmPolicy(m)


def _median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def measure(policy: KubmPolicy, T: int, repeats: int) -> dict:
    rng = np.random.default_rng(1)
    qpos0, flow0 = rng.normal(size=policy.d_q), rng.normal(size=policy.d_flow)
    ctx = rng.normal(size=policy.d_c)
    z0 = policy.lift(qpos0, flow0, ctx)
    K, d_q = policy.K, policy.d_q
    scale, shift, lo, hi = policy._scale[:d_q], policy._shift[:d_q], policy._low, policy._high
    n = 2000

    def steps():
        z = z0
        for _ in range(n):
            z = K @ z
            np.minimum(np.maximum(z[:d_q] * scale + shift, lo), hi)

    def matvecs():
        z = z0
        for _ in range(n):
            z = K @ z

    for fn in (steps, matvecs, lambda: policy.rollout(z0, T), lambda: policy.plan(qpos0, flow0, ctx, T)):
        fn()  # warm up
    rollout = _median_time(lambda: policy.rollout(z0, T), repeats * 5)
    return {
        "d_psi": policy.model.d_psi, "d_xi": policy.d_xi, "d_z": policy.d_z,
        "step_us": round(_median_time(steps, repeats) / n * 1e6, 3),
        "matvec_us": round(_median_time(matvecs, repeats) / n * 1e6, 3),
        "rollout_ms": round(rollout * 1e3, 4), "rollout_step_us": round(rollout / T * 1e6, 3),
        "plan_ms": round(_median_time(lambda: policy.plan(qpos0, flow0, ctx, T), repeats * 5) * 1e3, 4),
        "lift_ms": round(_median_time(lambda: policy.lift(qpos0, flow0, ctx), repeats * 5) * 1e3, 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a saved K-UBM dir (default: random models of the configured size)")
    p.add_argument("--configfile", action="append", help="config file(s) (default config/config.yaml)")
    p.add_argument("--d-psi", type=int, nargs="+", default=[32, 128])
    p.add_argument("--d-q", type=int, default=30)
    p.add_argument("--d-flow", type=int, default=128)
    p.add_argument("--d-c", type=int, default=2)
    p.add_argument("--T", type=int, default=200)
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.model:
        policies, source = [KubmPolicy.load(a.model)], a.model
        hidden = policies[0].config.hidden
    else:
        hidden = load_config(a.configfile or [DEFAULT_CONFIG])["fit"]["kubm"]["hidden"]
        policies = [random_policy(d, hidden, a.d_q, a.d_flow, a.d_c) for d in a.d_psi]
        source = "random init"
    out = {
        "benchmark": "kubm planning latency", "model": source, "threads": 1, "T": a.T, "hidden": hidden,
        "cpu": platform.processor() or platform.machine(), "numpy": np.__version__, "torch": torch.__version__,
        "results": [measure(pol, a.T, a.repeats) for pol in policies],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""Simulator evaluation shared by every method: one episode (rollout), statistics (metrics),
eval.json assembly and plots (report). The stage itself is kubm.stages.evaluate."""

from kubm.evaluation.metrics import centroid_divergence, latency_stats, mean_squared_jerk, wilson_interval
from kubm.evaluation.rollout import EpisodeResult, OnlinePerception, make_runner, run_episode

__all__ = [
    "EpisodeResult",
    "OnlinePerception",
    "centroid_divergence",
    "latency_stats",
    "make_runner",
    "mean_squared_jerk",
    "run_episode",
    "wilson_interval",
]

"""ACT baseline: CVAE transformer over action chunks, temporal ensembling."""

from kubm.policies.act.configuration_act import ActConfig
from kubm.policies.act.modeling_act import ActModel, ActPolicy, train_act

__all__ = ["ActConfig", "ActModel", "ActPolicy", "train_act"]

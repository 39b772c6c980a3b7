"""ACT baseline: CVAE transformer encoder-decoder over action chunks, temporal ensembling."""

from kubm.policies.act.configuration_act import ActConfig
from kubm.policies.act.fitting_act import predicted_chunk_errors, train_act
from kubm.policies.act.modeling_act import ActModel, ActPolicy

__all__ = ["ActConfig", "ActModel", "ActPolicy", "predicted_chunk_errors", "train_act"]

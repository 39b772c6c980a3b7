"""Time-indexed regression baseline: per-timestep affine map from ξ_{-1} to a_t, open-loop."""

from kubm.policies.regression.configuration_regression import RegressionConfig
from kubm.policies.regression.modeling_regression import RegressionPolicy, ridge_affine

__all__ = ["RegressionConfig", "RegressionPolicy", "ridge_affine"]

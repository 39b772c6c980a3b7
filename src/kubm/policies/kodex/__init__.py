"""KODex baseline: EDMD with a fixed polynomial lift, K-UBM's planner and replanning."""

from kubm.policies.kodex.configuration_kodex import KodexConfig
from kubm.policies.kodex.modeling_kodex import KodexPolicy, PolynomialLift, fit_edmd

__all__ = ["KodexConfig", "KodexPolicy", "PolynomialLift", "fit_edmd"]

"""K-UBM: Koopman Unified Behavioural Models (DESIGN.md §1)."""

from kubm.policies.kubm.configuration_kubm import KubmConfig
from kubm.policies.kubm.modeling_kubm import (
    FitDiverged,
    KubmModel,
    KubmPolicy,
    Plan,
    calibrate_replan_threshold,
    openloop_errors,
    save_atomic,
)
from kubm.policies.kubm.fitting_kubm import plateau, train_kubm

__all__ = ["FitDiverged", "KubmConfig", "KubmModel", "KubmPolicy", "Plan", "calibrate_replan_threshold",
           "openloop_errors", "plateau", "save_atomic", "train_kubm"]

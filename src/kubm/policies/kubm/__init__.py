"""K-UBM: Koopman Unified Behavioural Models (docs/design.md, "The method")."""

from kubm.policies.kubm.configuration_kubm import KubmConfig
from kubm.policies.kubm.fitting_kubm import fit, plateau, train_kubm
from kubm.policies.kubm.modeling_kubm import KubmModel, KubmPolicy

__all__ = ["KubmConfig", "KubmModel", "KubmPolicy", "fit", "plateau", "train_kubm"]

"""Generic MPPI expert: the simulator is its own model (issue 6)."""

from kubm.experts.mppi.costs import COSTS, Cost, Features, make_cost
from kubm.experts.mppi.mppi import MPPI, MPPIExpert, Plant

__all__ = ["COSTS", "Cost", "Features", "MPPI", "MPPIExpert", "Plant", "make_cost"]

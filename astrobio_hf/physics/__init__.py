"""Physics: grids with explicit units, unit conversion, differential operators on the sphere, named constraints."""

from .constraints import CONSTRAINT_NAMES, PhysicsConstraints, required_variables
from .grid import LEVEL_UNITS, SphereGrid, cell_centre_latitudes, uniform_longitudes
from .operators import (
    broadcast_constant,
    d_dlat,
    d_dlon,
    derivative_along,
    sphere_divergence,
    sphere_gradient,
    vertical_derivative,
)
from .units import QUANTITY_SI_UNITS, VARIABLE_QUANTITIES, to_si

__all__ = [
    "CONSTRAINT_NAMES",
    "LEVEL_UNITS",
    "PhysicsConstraints",
    "QUANTITY_SI_UNITS",
    "SphereGrid",
    "VARIABLE_QUANTITIES",
    "broadcast_constant",
    "cell_centre_latitudes",
    "d_dlat",
    "d_dlon",
    "derivative_along",
    "required_variables",
    "sphere_divergence",
    "sphere_gradient",
    "to_si",
    "uniform_longitudes",
    "vertical_derivative",
]

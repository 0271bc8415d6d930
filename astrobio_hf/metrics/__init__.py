"""Forecast metrics: pure-torch functions and distributed-safe torchmetrics classes.

Tensors are ``(B, V, Tc, Tg, Z, Y, X)`` in physical units. Functions return ``(V,)`` tensors; classes
return ``{f"{key}/{variable}": Tensor, key: mean over variables}`` from ``compute()``.
"""

from .classes import (
    NRMSE,
    AnomalyCorrelation,
    ForecastMetrics,
    LatitudeWeightedRMSE,
    PhysicsResidualMetric,
    R2Score,
    SSIMPerLevel,
)
from .functional import (
    anomaly_correlation,
    latitude_weighted_rmse,
    latitude_weights,
    named_values,
    normalized_rmse,
    r2_score,
    ssim_per_level,
)

__all__ = [
    "NRMSE",
    "AnomalyCorrelation",
    "ForecastMetrics",
    "LatitudeWeightedRMSE",
    "PhysicsResidualMetric",
    "R2Score",
    "SSIMPerLevel",
    "anomaly_correlation",
    "latitude_weighted_rmse",
    "latitude_weights",
    "named_values",
    "normalized_rmse",
    "r2_score",
    "ssim_per_level",
]

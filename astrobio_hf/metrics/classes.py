"""torchmetrics ``Metric`` classes for forecast evaluation that reduce exactly across processes.

Every class keeps only sum states (``dist_reduce_fx="sum"``, float64) of the sufficient statistics
computed by :mod:`astrobio_hf.metrics.functional`, so ``compute()`` after a distributed sync equals the
single-process result over the union of all processes' data, not an average of per-process averages.

Return format, the same for every class: ``compute()`` returns ``dict[str, Tensor]`` of 0-d tensors with
``f"{key}/{variable}"`` per variable plus ``key`` = the unweighted mean over variables (``SSIMPerLevel``
adds ``f"ssim/{variable}/{level}"``; ``PhysicsResidualMetric`` uses constraint names as "variables").
Inputs are ``(B, V, Tc, Tg, Z, Y, X)`` in physical units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from .functional import (
    _STATS_DTYPE,
    _acc_per_field,
    _check_pair,
    _check_variable_names,
    _data_range_tensor,
    _moment_stats,
    _nrmse_from_moments,
    _r2_from_moments,
    _squared_error_stats,
    _ssim_per_image,
    _ssim_sigma,
    latitude_weights,
    named_values,
)

__all__ = [
    "AnomalyCorrelation",
    "ForecastMetrics",
    "LatitudeWeightedRMSE",
    "NRMSE",
    "PhysicsResidualMetric",
    "R2Score",
    "SSIMPerLevel",
]


class _CubeMetric(Metric):
    """Shared set-up: variable names, optional latitude weights, input validation."""

    key: str = ""
    is_differentiable = False
    full_state_update = False

    def __init__(self, variable_names: Sequence[str], lat_deg: Tensor | Sequence[float] | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.variable_names = _check_variable_names(variable_names)
        self.weighted = lat_deg is not None
        if lat_deg is not None:
            weights = latitude_weights(lat_deg)
        else:
            weights = torch.ones(0, dtype=_STATS_DTYPE)  # resolved to ones(Y) at the first update
        self.register_buffer("lat_weights", weights, persistent=False)

    @property
    def num_variables(self) -> int:
        return len(self.variable_names)

    def _zeros(self, *shape: int) -> Tensor:
        return torch.zeros(shape if shape else (), dtype=_STATS_DTYPE)

    def _validated_weights(self, preds: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        num_lat = self.lat_weights.numel() if self.weighted else None
        _check_pair(preds, target, num_variables=self.num_variables, num_lat=num_lat, valid=valid)
        if self.weighted:
            return self.lat_weights
        return torch.ones(target.shape[5], dtype=_STATS_DTYPE, device=target.device)

    def _named(self, values: Tensor) -> dict[str, Tensor]:
        return named_values(self.key, values, self.variable_names)


class LatitudeWeightedRMSE(_CubeMetric):
    """Latitude-weighted RMSE per variable (WeatherBench2 area weights), in each variable's units.

    Args:
        lat_deg: ``(Y,)`` ascending cell-centre latitudes in degrees.
        variable_names: names of the V variables, in tensor order.

    ``compute()`` -> ``{"rmse/<var>": ..., "rmse": mean over variables}``; the mean mixes units (K, Pa, ...)
    and is only comparable between runs on the same variables.
    """

    key = "rmse"
    higher_is_better = False

    def __init__(self, lat_deg: Tensor | Sequence[float], variable_names: Sequence[str], **kwargs) -> None:
        super().__init__(variable_names, lat_deg, **kwargs)
        self.add_state("sum_w_sq_err", default=self._zeros(self.num_variables), dist_reduce_fx="sum")
        self.add_state("sum_w", default=self._zeros(self.num_variables), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, valid: Tensor | None = None) -> None:
        weights = self._validated_weights(preds, target, valid)
        sum_w_sq_err, sum_w = _squared_error_stats(preds.detach(), target.detach(), weights, valid)
        self.sum_w_sq_err += sum_w_sq_err
        self.sum_w += sum_w

    def compute(self) -> dict[str, Tensor]:
        return self._named(torch.sqrt(self.sum_w_sq_err / self.sum_w))


class AnomalyCorrelation(_CubeMetric):
    """Latitude-weighted anomaly correlation coefficient (ACC) per variable, WeatherBench2 style.

    For every (Y, X) field, ``ACC = sum w f' o' / sqrt(sum w f'^2 sum w o'^2)`` with ``f' = preds - clim``,
    ``o' = target - clim`` (uncentred, as WB2); the metric is the mean of the field ACCs over batch,
    climate time, geological time and level, accumulated as (sum of ACCs, number of fields).

    Args:
        lat_deg: ``(Y,)`` ascending cell-centre latitudes in degrees.
        variable_names: names of the V variables.

    ``update(preds, target, climatology)``: ``climatology`` broadcastable to ``target`` (e.g. ``(V, 1, 1, Z, Y, X)``).
    ``compute()`` -> ``{"acc/<var>": ..., "acc": mean}``.
    """

    key = "acc"
    higher_is_better = True

    def __init__(self, lat_deg: Tensor | Sequence[float], variable_names: Sequence[str], **kwargs) -> None:
        super().__init__(variable_names, lat_deg, **kwargs)
        self.add_state("sum_acc", default=self._zeros(self.num_variables), dist_reduce_fx="sum")
        self.add_state("num_fields", default=self._zeros(self.num_variables), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, climatology: Tensor, valid: Tensor | None = None) -> None:
        weights = self._validated_weights(preds, target, valid)
        acc = _acc_per_field(preds.detach(), target.detach(), climatology.detach(), weights, valid)  # (B, V, Tc, Tg, Z)
        if valid is None:
            self.sum_acc += acc.sum(dim=(0, 2, 3, 4))
            self.num_fields += acc[:, 0].numel()  # fields per variable in this batch: B * Tc * Tg * Z
            return
        # with masks, a field without valid cells has no correlation: it is left out (not counted as 0)
        defined = torch.isfinite(acc)
        self.sum_acc += torch.where(defined, acc, 0.0).sum(dim=(0, 2, 3, 4))
        self.num_fields += defined.sum(dim=(0, 2, 3, 4)).to(self.num_fields.dtype)

    def compute(self) -> dict[str, Tensor]:
        return self._named(self.sum_acc / self.num_fields)


class _MomentMetric(_CubeMetric):
    """Pooled sums ``sum w, sum w t, sum w t^2, sum w (p - t)^2`` per variable."""

    def __init__(self, variable_names: Sequence[str], lat_deg: Tensor | Sequence[float] | None, **kwargs) -> None:
        super().__init__(variable_names, lat_deg, **kwargs)
        for name in ("sum_w", "sum_wt", "sum_wt2", "sum_w_sq_err"):
            self.add_state(name, default=self._zeros(self.num_variables), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, valid: Tensor | None = None) -> None:
        weights = self._validated_weights(preds, target, valid)
        sum_w, sum_wt, sum_wt2, sum_w_sq_err = _moment_stats(preds.detach(), target.detach(), weights, valid)
        self.sum_w += sum_w
        self.sum_wt += sum_wt
        self.sum_wt2 += sum_wt2
        self.sum_w_sq_err += sum_w_sq_err

    def _moments(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.sum_w, self.sum_wt, self.sum_wt2, self.sum_w_sq_err


class R2Score(_MomentMetric):
    """Coefficient of determination ``1 - SS_res / SS_tot`` per variable, pooled over all data.

    Args:
        variable_names: names of the V variables.
        lat_deg: optional ``(Y,)`` latitudes; when given, both sums are area-weighted (WB2 weights).

    ``compute()`` -> ``{"r2/<var>": ..., "r2": mean}``. A constant target has no defined R2.
    """

    key = "r2"
    higher_is_better = True

    def __init__(self, variable_names: Sequence[str], lat_deg: Tensor | Sequence[float] | None = None, **kwargs) -> None:
        super().__init__(variable_names, lat_deg, **kwargs)

    def compute(self) -> dict[str, Tensor]:
        return self._named(_r2_from_moments(*self._moments()))


class NRMSE(_MomentMetric):
    """RMSE divided by the population standard deviation of the target, per variable, pooled exactly.

    ``std`` comes from the sum and sum-of-squares states, so it is the std over the union of all
    processes' data. ``NRMSE = sqrt(SS_res / SS_tot) = sqrt(1 - R2)`` with the same weighting.

    Args:
        variable_names: names of the V variables.
        lat_deg: optional ``(Y,)`` latitudes; when given, RMSE and std are area-weighted (WB2 weights).

    ``compute()`` -> ``{"nrmse/<var>": ..., "nrmse": mean}``.
    """

    key = "nrmse"
    higher_is_better = False

    def __init__(self, variable_names: Sequence[str], lat_deg: Tensor | Sequence[float] | None = None, **kwargs) -> None:
        super().__init__(variable_names, lat_deg, **kwargs)

    def compute(self) -> dict[str, Tensor]:
        return self._named(_nrmse_from_moments(*self._moments()))


class SSIMPerLevel(_CubeMetric):
    """Mean 2-D SSIM over (Y, X) images for each variable and level (Gaussian window, periodic longitude).

    Args:
        variable_names: names of the V variables.
        data_range: SSIM ``L`` per variable (mapping name -> range, or V numbers), in the variable's units.
        num_levels: Z, the number of levels (the states are allocated per level).
        kernel_size: odd Gaussian window width in grid points (default 7; must be smaller than Y).
        sigma: Gaussian std in grid points; default ``(kernel_size - 1) / 7`` (torchmetrics ties the two).
        level_names: optional Z labels used in the keys (default ``"level_<k>"``).

    ``compute()`` -> ``{"ssim/<var>/<level>": ..., "ssim/<var>": mean over levels, "ssim": mean over variables}``.
    """

    key = "ssim"
    higher_is_better = True

    def __init__(
        self,
        variable_names: Sequence[str],
        data_range: Mapping[str, float] | Sequence[float] | Tensor,
        num_levels: int,
        kernel_size: int = 7,
        sigma: float | None = None,
        level_names: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(variable_names, None, **kwargs)
        if not isinstance(num_levels, int) or num_levels < 1:
            raise ValueError(f"expected num_levels as a positive int, got {num_levels!r}")
        self.num_levels = num_levels
        self.level_names = (
            tuple(f"level_{k}" for k in range(num_levels)) if level_names is None else tuple(str(n) for n in level_names)
        )
        if len(self.level_names) != num_levels or len(set(self.level_names)) != num_levels:
            raise ValueError(f"expected {num_levels} unique level names, got {self.level_names}")
        self.kernel_size = kernel_size
        self.sigma = _ssim_sigma(kernel_size, sigma)
        self.register_buffer("data_range", _data_range_tensor(data_range, self.variable_names), persistent=False)
        self.add_state("sum_ssim", default=self._zeros(self.num_variables, num_levels), dist_reduce_fx="sum")
        self.add_state("num_images", default=self._zeros(), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        self._validated_weights(preds, target)
        if target.shape[4] != self.num_levels:
            raise ValueError(
                f"expected (B, V, Tc, Tg, Z, Y, X) with Z={self.num_levels} levels, got {tuple(target.shape)}"
            )
        ssim = _ssim_per_image(preds.detach(), target.detach(), self.data_range, self.kernel_size, self.sigma)
        self.sum_ssim += ssim.sum(dim=(0, 2, 3))  # (V, Z)
        self.num_images += ssim.shape[0] * ssim.shape[2] * ssim.shape[3]

    def compute(self) -> dict[str, Tensor]:
        per_level = self.sum_ssim / self.num_images  # (V, Z)
        out: dict[str, Tensor] = {}
        for i, var in enumerate(self.variable_names):
            for k, level in enumerate(self.level_names):
                out[f"{self.key}/{var}/{level}"] = per_level[i, k]
        out.update(self._named(per_level.mean(dim=1)))
        return out


class PhysicsResidualMetric(Metric):
    """Mean of per-sample physics residuals per constraint name.

    Accumulates the ``dict[str, Tensor(B,)]`` returned by ``PhysicsConstraints.residuals`` as per-name sums
    and counts, so each name's mean is over every sample it was reported for, across processes.

    Args:
        names: the constraint names that may appear (e.g. ``physics.constraints.CONSTRAINT_NAMES``);
            an update with any other name raises ``ValueError``.

    ``compute()`` -> ``{"physics/<name>": mean, ..., "physics": mean over the reported names}``; names never
    reported are left out.
    """

    key = "physics"
    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, names: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.names = _check_variable_names(names)
        self.add_state("sum_residual", default=torch.zeros(len(self.names), dtype=_STATS_DTYPE), dist_reduce_fx="sum")
        self.add_state("num_samples", default=torch.zeros(len(self.names), dtype=_STATS_DTYPE), dist_reduce_fx="sum")

    def update(self, residuals: Mapping[str, Tensor]) -> None:
        if not isinstance(residuals, Mapping) or not residuals:
            raise ValueError(f"expected a non-empty dict[str, Tensor(B,)] of residuals, got {residuals!r}")
        unknown = [name for name in residuals if name not in self.names]
        if unknown:
            raise ValueError(f"expected residual names among {self.names}, got unknown {unknown}")
        for name, value in residuals.items():
            if not isinstance(value, Tensor) or value.ndim != 1:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"expected residual '{name}' as a per-sample Tensor of shape (B,), got {shape}")
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"expected finite values in residual '{name}', found NaN/Inf")
            i = self.names.index(name)
            self.sum_residual[i] += value.detach().to(_STATS_DTYPE).sum()
            self.num_samples[i] += value.numel()

    def compute(self) -> dict[str, Tensor]:
        seen = self.num_samples > 0
        if not bool(seen.any()):
            raise ValueError("PhysicsResidualMetric.compute() called before any residual was reported")
        means = self.sum_residual / self.num_samples.clamp_min(1)
        names = [n for n, s in zip(self.names, seen.tolist()) if s]
        return named_values(self.key, means[seen], names)


class ForecastMetrics(nn.Module):
    """All forecast metrics updated together; ``compute()`` returns one flat ``dict[str, float]``.

    Holds ``LatitudeWeightedRMSE``, ``AnomalyCorrelation``, ``R2Score`` and ``NRMSE`` (both area-weighted
    with the same latitude weights, so ``nrmse = rmse / weighted std``), ``SSIMPerLevel`` and, when
    ``physics_names`` is given, ``PhysicsResidualMetric``. Every member syncs across processes in compute().

    Args:
        lat_deg: ``(Y,)`` ascending cell-centre latitudes in degrees.
        variable_names: names of the V variables.
        data_range: SSIM range per variable (mapping or V numbers).
        num_levels: Z.
        physics_names: constraint names to accept in ``update(..., physics_residuals=...)``; None leaves
            physics residuals out (and then passing them raises).
        ssim_kernel_size: odd SSIM window width (default 7).
        level_names: optional Z labels for the SSIM keys.
        prefix: prepended to every key (e.g. ``"eval/"``).
        include_ssim: compute SSIM per level (the slowest metric by far; default True).
    """

    def __init__(
        self,
        lat_deg: Tensor | Sequence[float],
        variable_names: Sequence[str],
        data_range: Mapping[str, float] | Sequence[float] | Tensor,
        num_levels: int,
        *,
        physics_names: Sequence[str] | None = None,
        ssim_kernel_size: int = 7,
        level_names: Sequence[str] | None = None,
        prefix: str = "",
        include_ssim: bool = True,
    ) -> None:
        super().__init__()
        self.prefix = prefix
        cube_metrics = {
            "rmse": LatitudeWeightedRMSE(lat_deg, variable_names),
            "r2": R2Score(variable_names, lat_deg=lat_deg),
            "nrmse": NRMSE(variable_names, lat_deg=lat_deg),
        }
        if include_ssim:  # the costly one (float64 2-D convolutions over every map): off for frequent validation
            cube_metrics["ssim"] = SSIMPerLevel(
                variable_names, data_range, num_levels, kernel_size=ssim_kernel_size, level_names=level_names
            )
        self.cube_metrics = nn.ModuleDict(cube_metrics)
        self.acc = AnomalyCorrelation(lat_deg, variable_names)
        self.physics = PhysicsResidualMetric(physics_names) if physics_names is not None else None

    def update(
        self,
        preds: Tensor,
        target: Tensor,
        climatology: Tensor,
        physics_residuals: Mapping[str, Tensor] | None = None,
        valid: Tensor | None = None,
    ) -> None:
        """Update every metric with one batch ``(B, V, Tc, Tg, Z, Y, X)`` in physical units; ``valid`` (bool, the
        batch's shape) restricts every metric to valid target values (masked data; SSIM cannot be masked and
        refuses a mask)."""
        for name, metric in self.cube_metrics.items():
            if name == "ssim":
                if valid is not None:
                    raise ValueError("SSIM is not defined on masked maps; build ForecastMetrics with include_ssim=False")
                metric.update(preds, target)
            else:
                metric.update(preds, target, valid)
        self.acc.update(preds, target, climatology, valid)
        if self.physics is not None:
            if physics_residuals is None:
                raise ValueError(
                    f"expected physics_residuals for {self.physics.names} (ForecastMetrics built with physics_names), got None"
                )
            self.physics.update(physics_residuals)
        elif physics_residuals is not None:
            raise ValueError("got physics_residuals, but ForecastMetrics was built with physics_names=None")

    def compute(self) -> dict[str, float]:
        """Synced results of every metric as one flat ``{prefix + key: float}`` dict."""
        results: dict[str, Tensor] = {}
        for metric in self._members():
            results.update(metric.compute())
        return {f"{self.prefix}{key}": float(value) for key, value in results.items()}

    def reset(self) -> None:
        """Reset every metric (call at the start of each evaluation)."""
        for metric in self._members():
            metric.reset()

    def _members(self) -> list[Metric]:
        members: list[Metric] = [*self.cube_metrics.values(), self.acc]
        if self.physics is not None:
            members.append(self.physics)
        return members

"""Pure-torch forecast metrics on batched data cubes.

Every function takes tensors shaped ``(B, V, Tc, Tg, Z, Y, X)`` in physical units (batch, variable,
climate time, geological time, level, latitude, longitude) and returns one value per variable, shape
``(V,)`` (``ssim_per_level`` returns ``(V, Z)``).

The same private ``_*_stats`` helpers feed both these functions (one batch) and the torchmetrics
classes in :mod:`astrobio_hf.metrics.classes` (accumulated as sum states across batches and processes),
so every formula is written once. Statistics are accumulated in float64: target fields in physical units
(pressure ~1e5 Pa) make float32 sums of squares lose the variance to cancellation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "CUBE_DIMS",
    "anomaly_correlation",
    "latitude_weighted_rmse",
    "latitude_weights",
    "named_values",
    "normalized_rmse",
    "r2_score",
    "ssim_per_level",
]

CUBE_DIMS = "(B, V, Tc, Tg, Z, Y, X)"
_STATS_DTYPE = torch.float64
_REDUCE_DIMS = (0, 2, 3, 4, 5, 6)  # every axis except V


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _check_cube(
    name: str, tensor: Tensor, *, num_variables: int | None = None, num_lat: int | None = None, valid: Tensor | None = None
) -> None:
    """Raise ``ValueError`` unless ``tensor`` is a floating 7-D cube with the expected V and Y, finite wherever
    ``valid`` is True (everywhere without a mask)."""
    if not isinstance(tensor, Tensor):
        raise ValueError(f"expected {name} to be a torch.Tensor {CUBE_DIMS}, got {type(tensor).__name__}")
    if tensor.ndim != 7:
        raise ValueError(f"expected {name} with shape {CUBE_DIMS} (7 dims), got {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"expected {name} to be a floating-point tensor, got dtype {tensor.dtype}")
    if num_variables is not None and tensor.shape[1] != num_variables:
        raise ValueError(
            f"expected {name} {CUBE_DIMS} with V={num_variables}, got {tuple(tensor.shape)} (V={tensor.shape[1]})"
        )
    if num_lat is not None and tensor.shape[5] != num_lat:
        raise ValueError(
            f"expected {name} {CUBE_DIMS} with Y={num_lat} latitude rows, got {tuple(tensor.shape)} "
            f"(Y={tensor.shape[5]})"
        )
    if valid is not None and tuple(valid.shape) != tuple(tensor.shape):
        raise ValueError(f"expected a validity mask of {name}'s shape {tuple(tensor.shape)}, got {tuple(valid.shape)}")
    finite = torch.isfinite(tensor) if valid is None else torch.isfinite(tensor) | ~valid.to(device=tensor.device, dtype=torch.bool)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        where = " at valid cells" if valid is not None else ""
        raise ValueError(f"expected finite values in {name}{where}, found {bad} NaN/Inf entries")


def _check_pair(
    preds: Tensor, target: Tensor, *, num_variables: int | None = None, num_lat: int | None = None, valid: Tensor | None = None
) -> None:
    _check_cube("preds", preds, num_variables=num_variables, num_lat=num_lat, valid=valid)
    _check_cube("target", target, num_variables=num_variables, num_lat=num_lat, valid=valid)
    if preds.shape != target.shape:
        raise ValueError(f"expected preds and target of the same shape, got {tuple(preds.shape)} and {tuple(target.shape)}")


def _broadcast_climatology(climatology: Tensor, target: Tensor) -> Tensor:
    if not isinstance(climatology, Tensor):
        raise ValueError(f"expected climatology to be a torch.Tensor, got {type(climatology).__name__}")
    try:
        clim = torch.broadcast_to(climatology, target.shape)
    except RuntimeError as err:
        raise ValueError(
            f"expected climatology broadcastable to the target {CUBE_DIMS} = {tuple(target.shape)}, "
            f"got {tuple(climatology.shape)}"
        ) from err
    if not bool(torch.isfinite(climatology).all()):
        raise ValueError("expected finite values in climatology, found NaN/Inf")
    return clim


def _check_variable_names(variable_names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(variable_names, str) or len(variable_names) == 0:
        raise ValueError(f"expected a non-empty sequence of variable names, got {variable_names!r}")
    names = tuple(str(n) for n in variable_names)
    if len(set(names)) != len(names):
        raise ValueError(f"expected unique variable names, got {names}")
    return names


# --------------------------------------------------------------------------------------------------
# Latitude weights
# --------------------------------------------------------------------------------------------------


def latitude_weights(lat_deg: Tensor | Sequence[float]) -> Tensor:
    """Area weights of latitude rows, as WeatherBench2's ``get_lat_weights`` on global grids.

    WeatherBench2 (``weatherbench2/metrics.py``, ``get_lat_weights`` / ``_get_lat_weights``; Rasp et al.
    2024, "WeatherBench 2", JAMES) weights each row by the area of its cell on the unit sphere::

        phi_i           cell-centre latitudes in radians, strictly ascending
        b_0 = -pi/2,  b_i = (phi_{i-1} + phi_i) / 2  (i = 1..Y-1),  b_Y = +pi/2
        w_i = sin(b_{i+1}) - sin(b_i)          # cell area per unit longitude
        w_i <- w_i / mean(w)                   # normalised to mean 1

    Grids that include the poles get the polar caps' (small, finite) areas. On a regional grid (its outer rows
    more than one spacing from the poles) the outer edges are half a spacing beyond the outer rows instead of
    the poles (:func:`astrobio_hf.physics.grid.latitude_bounds`), so edge rows are not given the area of
    everything up to the pole.

    Args:
        lat_deg: ``(Y,)`` cell-centre latitudes in degrees, strictly ascending, within [-90, 90].

    Returns:
        ``(Y,)`` float64 tensor with mean 1.
    """
    from astrobio_hf.physics.grid import cell_area_weights

    lat = torch.as_tensor(lat_deg).detach().to(dtype=_STATS_DTYPE, device="cpu")
    if lat.ndim != 1 or lat.numel() < 1:
        raise ValueError(f"expected lat_deg as a 1-D sequence of latitudes, got shape {tuple(lat.shape)}")
    if not bool(torch.isfinite(lat).all()) or bool((lat.abs() > 90).any()):
        raise ValueError(f"expected latitudes within [-90, 90] degrees, got min {lat.min():.4g}, max {lat.max():.4g}")
    if lat.numel() > 1 and not bool((lat[1:] > lat[:-1]).all()):
        raise ValueError("expected strictly ascending latitudes (south to north), got a non-ascending lat_deg")
    return torch.from_numpy(cell_area_weights(lat.numpy()))


def _lat_weights_or_ones(lat_deg: Tensor | Sequence[float] | None, num_lat: int, device: torch.device) -> Tensor:
    if lat_deg is None:
        return torch.ones(num_lat, dtype=_STATS_DTYPE, device=device)
    weights = latitude_weights(lat_deg).to(device)
    if weights.numel() != num_lat:
        raise ValueError(f"expected {num_lat} latitudes (the Y axis of the data), got lat_deg with {weights.numel()}")
    return weights


def _expand_weights(weights: Tensor, like: Tensor) -> Tensor:
    """(Y,) -> (1, 1, 1, 1, 1, Y, 1), on the device of ``like``, float64."""
    return weights.to(device=like.device, dtype=_STATS_DTYPE).view(1, 1, 1, 1, 1, -1, 1)


# --------------------------------------------------------------------------------------------------
# Sufficient statistics (shared by the functions below and the Metric classes)
# --------------------------------------------------------------------------------------------------


def _masked_weights(w: Tensor, like: Tensor, valid: Tensor | None) -> Tensor:
    """Area weights expanded to ``like``'s shape, 0 where ``valid`` is False (float64)."""
    w = w.expand_as(like)
    if valid is None:
        return w
    return torch.where(valid.to(device=like.device, dtype=torch.bool), w, torch.zeros((), dtype=w.dtype, device=w.device))


def _masked_values(x: Tensor, valid: Tensor | None) -> Tensor:
    """``x`` in float64 with masked values set to 0 (so that NaN or garbage in masked cells never propagates)."""
    x = x.to(_STATS_DTYPE)
    if valid is None:
        return x
    return torch.where(valid.to(device=x.device, dtype=torch.bool), x, torch.zeros((), dtype=x.dtype, device=x.device))


def _squared_error_stats(preds: Tensor, target: Tensor, weights: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Return ``(sum w (p - t)^2, sum w)`` per variable, each ``(V,)`` float64, over valid values only."""
    err = _masked_values(preds, valid) - _masked_values(target, valid)  # (B, V, Tc, Tg, Z, Y, X)
    w = _masked_weights(_expand_weights(weights, target), err, valid)
    sum_w_sq = (w * err.square()).sum(dim=_REDUCE_DIMS)  # (V,)
    sum_w = w.sum(dim=_REDUCE_DIMS)  # (V,)
    return sum_w_sq, sum_w


def _moment_stats(
    preds: Tensor, target: Tensor, weights: Tensor, valid: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return ``(sum w, sum w t, sum w t^2, sum w (p - t)^2)`` per variable, each ``(V,)`` float64 (valid values only)."""
    t = _masked_values(target, valid)
    err = _masked_values(preds, valid) - t
    w = _masked_weights(_expand_weights(weights, target), t, valid)
    wt = w * t
    return (
        w.sum(dim=_REDUCE_DIMS),
        wt.sum(dim=_REDUCE_DIMS),
        (wt * t).sum(dim=_REDUCE_DIMS),
        (w * err.square()).sum(dim=_REDUCE_DIMS),
    )


def _acc_per_field(preds: Tensor, target: Tensor, climatology: Tensor, weights: Tensor, valid: Tensor | None = None) -> Tensor:
    """WeatherBench2 ACC of every (Y, X) field: returns ``(B, V, Tc, Tg, Z)`` float64.

    ``ACC = sum w f' o' / sqrt(sum w f'^2 * sum w o'^2)`` with anomalies ``f' = forecast - climatology``,
    ``o' = truth - climatology`` (uncentred, as WB2's ``ACC`` metric; the weight normalisation cancels), over
    the valid cells of the field. A field whose forecast or observed anomaly is identically zero (or that has
    no valid cell) has no defined correlation and gives NaN.
    """
    clim = _broadcast_climatology(climatology, target).to(_STATS_DTYPE)
    fa = _masked_values(preds.to(_STATS_DTYPE) - clim, valid)
    oa = _masked_values(target.to(_STATS_DTYPE) - clim, valid)
    w = _masked_weights(_expand_weights(weights, target), fa, valid)
    num = (w * fa * oa).sum(dim=(-2, -1))
    den = torch.sqrt((w * fa.square()).sum(dim=(-2, -1)) * (w * oa.square()).sum(dim=(-2, -1)))
    return num / den


def _ssim_sigma(kernel_size: int, sigma: float | None) -> float:
    """Gaussian sigma for which torchmetrics builds a kernel of exactly ``kernel_size`` taps.

    torchmetrics ignores ``kernel_size`` for Gaussian kernels and uses ``2 * int(3.5 sigma + 0.5) + 1`` taps,
    so the two are tied: ``sigma = (kernel_size - 1) / 7`` (11 taps -> 1.43, near the usual 1.5; 7 -> 0.857).
    """
    if not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"expected an odd SSIM kernel_size >= 3, got {kernel_size!r}")
    if sigma is None:
        return (kernel_size - 1) / 7.0
    implied = 2 * int(3.5 * sigma + 0.5) + 1
    if sigma <= 0 or implied != kernel_size:
        raise ValueError(
            f"expected an SSIM sigma whose Gaussian kernel has kernel_size={kernel_size} taps, got sigma={sigma} "
            f"({implied} taps); leave sigma=None to use (kernel_size - 1) / 7"
        )
    return float(sigma)


def _data_range_tensor(data_range: Mapping[str, float] | Sequence[float] | Tensor, variable_names: Sequence[str]) -> Tensor:
    names = tuple(variable_names)
    if isinstance(data_range, Mapping):
        missing = [n for n in names if n not in data_range]
        unknown = [k for k in data_range if k not in names]
        if missing or unknown:
            raise ValueError(
                f"expected an SSIM data_range for each variable {names}, missing {missing}, unknown {unknown}"
            )
        values = torch.tensor([float(data_range[n]) for n in names], dtype=_STATS_DTYPE)
    else:
        values = torch.as_tensor(data_range, dtype=_STATS_DTYPE).flatten().cpu()
        if values.numel() != len(names):
            raise ValueError(f"expected {len(names)} SSIM data ranges (one per variable), got {values.numel()}")
    if not bool(torch.isfinite(values).all()) or bool((values <= 0).any()):
        raise ValueError(f"expected positive finite SSIM data ranges, got {values.tolist()}")
    return values


def _ssim_per_image(preds: Tensor, target: Tensor, data_range: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """SSIM of every (Y, X) image with a Gaussian window, periodic in longitude: ``(B, V, Tc, Tg, Z)`` float64.

    Uses ``torchmetrics.functional.structural_similarity_index_measure`` (it works on 16 x 32 grids with a
    7-tap kernel). Two adaptations: (1) each variable is divided by its data range and SSIM is called with
    ``data_range=1`` (identical to SSIM with ``L = range``, since C1 = (k1 L)^2, C2 = (k2 L)^2 scale with the
    squared inputs); (2) longitude is periodic, so the image is first padded circularly by the kernel
    half-width in X, torchmetrics' full SSIM map is taken and cropped back to the original columns, and
    only latitude sees torchmetrics' reflection padding.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    b, v, tc, tg, z, y, x = target.shape
    pad = kernel_size // 2
    if pad >= y or pad > x:
        raise ValueError(
            f"expected an SSIM kernel_size smaller than the grid, got kernel_size={kernel_size} for (Y, X)=({y}, {x})"
        )
    scale = data_range.to(device=target.device, dtype=_STATS_DTYPE).view(1, v, 1, 1, 1, 1, 1)
    p = (preds.to(_STATS_DTYPE) / scale).reshape(-1, 1, y, x)  # (B*V*Tc*Tg*Z, 1, Y, X)
    t = (target.to(_STATS_DTYPE) / scale).reshape(-1, 1, y, x)
    p = F.pad(p, (pad, pad, 0, 0), mode="circular")  # (N, 1, Y, X + 2 pad)
    t = F.pad(t, (pad, pad, 0, 0), mode="circular")
    _, full = structural_similarity_index_measure(
        p, t, gaussian_kernel=True, sigma=sigma, kernel_size=kernel_size, data_range=1.0,
        reduction="none", return_full_image=True,
    )
    if full.shape[-2:] != (y, x + 2 * pad):
        raise RuntimeError(f"unexpected SSIM map shape {tuple(full.shape)} from torchmetrics for input {tuple(p.shape)}")
    ssim_map = full[..., pad : pad + x]  # (N, 1, Y, X)
    return ssim_map.mean(dim=(-3, -2, -1)).reshape(b, v, tc, tg, z)


# --------------------------------------------------------------------------------------------------
# Public functions (one batch)
# --------------------------------------------------------------------------------------------------


def latitude_weighted_rmse(preds: Tensor, target: Tensor, lat_deg: Tensor | Sequence[float]) -> Tensor:
    """Latitude-weighted RMSE per variable: ``sqrt(sum w (p - t)^2 / sum w)`` over all other axes.

    Like WeatherBench2's ``RMSE`` (square root after averaging the weighted squared error over time and
    space). Returns ``(V,)`` float64 in the units of each variable.
    """
    _check_pair(preds, target)
    weights = _lat_weights_or_ones(lat_deg, target.shape[5], target.device)
    sum_w_sq, sum_w = _squared_error_stats(preds, target, weights)
    return torch.sqrt(sum_w_sq / sum_w)


def anomaly_correlation(
    preds: Tensor, target: Tensor, climatology: Tensor, lat_deg: Tensor | Sequence[float]
) -> Tensor:
    """Latitude-weighted anomaly correlation coefficient per variable, WeatherBench2 style.

    ACC is computed on every (Y, X) field (see ``_acc_per_field``) and averaged over batch, climate time,
    geological time and level. ``climatology`` must broadcast to ``target``. Returns ``(V,)`` float64.
    """
    _check_pair(preds, target)
    weights = _lat_weights_or_ones(lat_deg, target.shape[5], target.device)
    return _acc_per_field(preds, target, climatology, weights).mean(dim=(0, 2, 3, 4))


def r2_score(preds: Tensor, target: Tensor, lat_deg: Tensor | Sequence[float] | None = None) -> Tensor:
    """Coefficient of determination per variable: ``1 - SS_res / SS_tot``, ``(V,)`` float64.

    With ``lat_deg`` both sums are area-weighted (``SS_tot`` around the weighted mean); without, unweighted.
    A constant target has ``SS_tot = 0`` and no defined R2 (the result is -inf or NaN).
    """
    _check_pair(preds, target)
    weights = _lat_weights_or_ones(lat_deg, target.shape[5], target.device)
    return _r2_from_moments(*_moment_stats(preds, target, weights))


def normalized_rmse(preds: Tensor, target: Tensor, lat_deg: Tensor | Sequence[float] | None = None) -> Tensor:
    """RMSE divided by the (population, ddof=0) standard deviation of the target, per variable, ``(V,)``.

    Equals ``sqrt(SS_res / SS_tot) = sqrt(1 - R2)`` with the same weighting as :func:`r2_score`.
    """
    _check_pair(preds, target)
    weights = _lat_weights_or_ones(lat_deg, target.shape[5], target.device)
    return _nrmse_from_moments(*_moment_stats(preds, target, weights))


def ssim_per_level(
    preds: Tensor,
    target: Tensor,
    data_range: Mapping[str, float] | Sequence[float] | Tensor,
    kernel_size: int = 7,
    sigma: float | None = None,
) -> Tensor:
    """Mean 2-D SSIM over (Y, X) images for each variable and level, ``(V, Z)`` float64.

    ``data_range`` is one positive number per variable (the ``L`` of SSIM, in that variable's units).
    """
    _check_pair(preds, target)
    names = [str(i) for i in range(target.shape[1])]
    if isinstance(data_range, Mapping):
        raise ValueError("expected data_range as a sequence of V numbers here; a mapping needs variable names (SSIMPerLevel)")
    ranges = _data_range_tensor(data_range, names)
    return _ssim_per_image(preds, target, ranges, kernel_size, _ssim_sigma(kernel_size, sigma)).mean(dim=(0, 2, 3))


def _sum_of_squares_about_mean(sum_w: Tensor, sum_wt: Tensor, sum_wt2: Tensor) -> Tensor:
    return sum_wt2 - sum_wt.square() / sum_w


def _r2_from_moments(sum_w: Tensor, sum_wt: Tensor, sum_wt2: Tensor, sum_w_sq_err: Tensor) -> Tensor:
    return 1.0 - sum_w_sq_err / _sum_of_squares_about_mean(sum_w, sum_wt, sum_wt2)


def _nrmse_from_moments(sum_w: Tensor, sum_wt: Tensor, sum_wt2: Tensor, sum_w_sq_err: Tensor) -> Tensor:
    return torch.sqrt(sum_w_sq_err / _sum_of_squares_about_mean(sum_w, sum_wt, sum_wt2))


def named_values(metric: str, values: Tensor, variable_names: Sequence[str]) -> dict[str, Tensor]:
    """``(V,)`` values -> ``{f"{metric}/{name}": value, ..., metric: mean over variables}``.

    The mean is the unweighted mean of the per-variable values (only meaningful across variables for
    dimensionless metrics; RMSE mixes units).
    """
    if values.ndim != 1 or values.numel() != len(variable_names):
        raise ValueError(f"expected {len(variable_names)} values for {tuple(variable_names)}, got shape {tuple(values.shape)}")
    out = {f"{metric}/{name}": values[i] for i, name in enumerate(variable_names)}
    out[metric] = values.mean()
    return out

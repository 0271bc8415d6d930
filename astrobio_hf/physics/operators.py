"""Differential operators on the sphere and along the vertical (torch, differentiable).

Conventions: the last two dimensions of a horizontal field are ``(Y, X) = (lat, lon)``; latitude and
longitude are given in **radians** (``SphereGrid.lat_rad()`` / ``lon_rad()``), latitude ascending
(non-uniform allowed; rows at the poles allowed: the zonal metric 1/cos(phi) there is the cell-area form of
:func:`astrobio_hf.physics.grid.inverse_cos_metric`, never a division by cos(90 degrees)), longitude uniform,
periodic (``periodic=True``, a global grid) or not (a regional grid: one-sided differences at its edges). ``radius`` is the planet radius in
metres, either a python float or a ``(B,)`` tensor that is broadcast over the leading batch dimension.

All operators are linear, act along one axis each, and therefore commute across axes exactly
(also in floating point up to round-off): ``d_dlon(d_dlat(f)) == d_dlat(d_dlon(f))``. The synthetic
data generator relies on this to build discretely non-divergent winds from a streamfunction.
"""

from __future__ import annotations

from typing import Union

import torch

from .grid import inverse_cos_metric

Constant = Union[float, int, torch.Tensor]

__all__ = [
    "broadcast_constant",
    "d_dlat",
    "d_dlon",
    "derivative_along",
    "sphere_divergence",
    "sphere_gradient",
    "vertical_derivative",
]


def broadcast_constant(value: Constant, like: torch.Tensor, name: str = "constant") -> torch.Tensor:
    """Return ``value`` as a tensor that broadcasts against ``like`` (batch dimension first).

    A python number or a 0-d tensor is returned as a 0-d tensor; a ``(B,)`` tensor is reshaped to
    ``(B, 1, ..., 1)`` with ``like.dim()`` dimensions. Any other shape, or a ``B`` that differs from
    ``like.shape[0]``, raises ``ValueError``.
    """
    if not torch.is_tensor(value):
        return torch.as_tensor(float(value), dtype=like.dtype, device=like.device)
    value = value.to(device=like.device, dtype=like.dtype)
    if value.dim() == 0:
        return value
    if value.dim() != 1:
        raise ValueError(f"expected {name} as a float or a (B,) tensor, got a tensor of shape {tuple(value.shape)}")
    if value.shape[0] != like.shape[0]:
        raise ValueError(
            f"expected {name} of shape (B,) with B={like.shape[0]} (the batch size of the field), "
            f"got shape {tuple(value.shape)}"
        )
    return value.reshape(value.shape[0], *([1] * (like.dim() - 1)))


def _coordinate(x: torch.Tensor, like: torch.Tensor, size: int, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    x = x.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float64)
    if x.dim() != 1 or x.shape[0] != size:
        raise ValueError(f"expected {name} of shape ({size},) matching the field, got shape {tuple(x.shape)}")
    return x


def derivative_along(f: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    """Derivative ``df/dx`` along ``dim`` for a (possibly non-uniform) 1-D coordinate ``x``.

    Second-order centred differences in the interior (the three-point non-uniform formula) and
    second-order one-sided differences at both ends; with only two points, the first-order
    difference. Exact for quadratics in ``x`` (three or more points).
    """
    dim = dim % f.dim()
    n = f.shape[dim]
    x = _coordinate(x, f, n, "coordinate")
    if n < 2:
        raise ValueError(f"expected at least 2 points along dim {dim} to differentiate, got {n}")
    shape = [1] * f.dim()
    shape[dim] = -1

    def view(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(shape)

    if n == 2:
        d = (f.narrow(dim, 1, 1) - f.narrow(dim, 0, 1)) / view(x[1:] - x[:1])
        return torch.cat([d, d], dim=dim)

    h = x[1:] - x[:-1]  # (n-1,)
    # interior: i = 1..n-2, hm = x_i - x_{i-1}, hp = x_{i+1} - x_i
    hm, hp = view(h[:-1]), view(h[1:])
    f_m, f_0, f_p = f.narrow(dim, 0, n - 2), f.narrow(dim, 1, n - 2), f.narrow(dim, 2, n - 2)
    interior = (hm**2 * f_p - hp**2 * f_m + (hp**2 - hm**2) * f_0) / (hm * hp * (hm + hp))
    # first point, one-sided with x0, x1, x2
    h1, h2 = h[0], h[1]
    g0, g1, g2 = f.narrow(dim, 0, 1), f.narrow(dim, 1, 1), f.narrow(dim, 2, 1)
    first = (-(2 * h1 + h2) / (h1 * (h1 + h2))) * g0 + ((h1 + h2) / (h1 * h2)) * g1 - (h1 / (h2 * (h1 + h2))) * g2
    # last point, one-sided with x_{n-3}, x_{n-2}, x_{n-1}
    h1, h2 = h[-1], h[-2]
    e0, e1, e2 = f.narrow(dim, n - 1, 1), f.narrow(dim, n - 2, 1), f.narrow(dim, n - 3, 1)
    last = ((2 * h1 + h2) / (h1 * (h1 + h2))) * e0 - ((h1 + h2) / (h1 * h2)) * e1 + (h1 / (h2 * (h1 + h2))) * e2
    return torch.cat([first, interior, last], dim=dim)


def d_dlon(f: torch.Tensor, lon_rad: torch.Tensor, periodic: bool = True) -> torch.Tensor:
    """``df/dlambda`` [f per radian] along the last dimension (lon); longitude must be uniform.

    ``periodic=True`` (a global grid): centred difference that wraps around, spacing ``lon_rad[1] - lon_rad[0]``.
    ``periodic=False`` (a regional grid): centred in the interior and second-order one-sided at the two edge
    columns (:func:`derivative_along`), no wrap.
    """
    lon = _coordinate(lon_rad, f, f.shape[-1], "lon_rad")
    if not periodic:
        return derivative_along(f, lon, dim=-1)
    if lon.shape[0] < 3:
        raise ValueError(f"expected at least 3 longitudes for a periodic centred difference, got {lon.shape[0]}")
    dlam = lon[1] - lon[0]
    return (torch.roll(f, shifts=-1, dims=-1) - torch.roll(f, shifts=1, dims=-1)) / (2.0 * dlam)


def d_dlat(f: torch.Tensor, lat_rad: torch.Tensor) -> torch.Tensor:
    """``df/dphi`` [f per radian] along the second-to-last dimension (lat).

    Centred second-order differences in the interior (non-uniform spacing allowed) and second-order
    one-sided differences at the first and last latitude rows.
    """
    return derivative_along(f, lat_rad, dim=-2)


def _inverse_cos_lat(lat_rad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(Y, 1)`` zonal metric factor 1/cos(phi), finite at pole rows (``grid.inverse_cos_metric``)."""
    lat = _coordinate(lat_rad, like, like.shape[-2], "lat_rad")
    return inverse_cos_metric(lat).reshape(-1, 1)


def _cos_lat(lat_rad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    lat = _coordinate(lat_rad, like, like.shape[-2], "lat_rad")
    return torch.cos(lat).reshape(-1, 1)  # (Y, 1)


def sphere_gradient(
    f: torch.Tensor, lat_rad: torch.Tensor, lon_rad: torch.Tensor, radius: Constant, periodic: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal gradient on the sphere: ``(east, north) = (1/(a cos phi) df/dlambda, 1/a df/dphi)``.

    Units: [f m-1]. ``radius`` (a) is a float or a ``(B,)`` tensor; ``periodic`` as in :func:`d_dlon`.
    """
    a = broadcast_constant(radius, f, "radius")
    east = d_dlon(f, lon_rad, periodic) * _inverse_cos_lat(lat_rad, f) / a
    north = d_dlat(f, lat_rad) / a
    return east, north


def sphere_divergence(
    u: torch.Tensor, v: torch.Tensor, lat_rad: torch.Tensor, lon_rad: torch.Tensor, radius: Constant, periodic: bool = True
) -> torch.Tensor:
    """Horizontal divergence on the sphere ``1/(a cos phi) [du/dlambda + d(v cos phi)/dphi]``.

    ``u`` is the eastward and ``v`` the northward component (same shape, last dims (Y, X)).
    Units: [u m-1]. ``radius`` (a) is a float or a ``(B,)`` tensor; ``periodic`` as in :func:`d_dlon`.
    """
    if u.shape != v.shape:
        raise ValueError(f"expected u and v of the same shape, got {tuple(u.shape)} and {tuple(v.shape)}")
    a = broadcast_constant(radius, u, "radius")
    cos_phi = _cos_lat(lat_rad, u)
    return (d_dlon(u, lon_rad, periodic) + d_dlat(v * cos_phi, lat_rad)) * _inverse_cos_lat(lat_rad, u) / a


def vertical_derivative(f: torch.Tensor, levels: torch.Tensor, dim: int) -> torch.Tensor:
    """``df/dlevel`` along ``dim`` using the real (possibly non-uniform) level values.

    ``levels`` are the level coordinates in their own unit (m for height, Pa for pressure); the result
    is per that unit. Second-order centred in the interior, second-order one-sided at the ends.
    """
    return derivative_along(f, levels, dim=dim)

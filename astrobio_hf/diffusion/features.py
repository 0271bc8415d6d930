"""Sample-quality metrics for generated climate frames, and the fixed EOF feature encoder they use.

Frames here are ``(N, C, Y, X)`` tensors in physical units, where C counts (variable, level) channels
(``C = V`` for single-level frames; ``C = V * Z'`` with the variable as the slow index otherwise).
Every statistic is accumulated in float64 (pressures of ~1e5 Pa make float32 moments lose the variance).

The encoder: :class:`EOFEncoder`
--------------------------------
Frechet distance and KID compare two sets of samples through a feature map. Image work uses Inception
features (FID, Heusel et al. 2017); an ImageNet network knows nothing of latitude-longitude climate
fields (its filters see photographs; its features are not equivariant to longitude shifts, ignore area
and mix variables it has never seen), so its distances would not mean anything here. We use instead the
leading **empirical orthogonal functions** (EOFs, the principal components of climate science, Lorenz
1956; Hannachi et al. 2007) of the *training* planets' frames:

- each frame is normalised per (variable, level) with the model's normalisation statistics, so that K,
  Pa and m/s count alike, and weighted by ``sqrt(area weight of its latitude row)`` (proportional to
  ``sqrt(cos lat)``), so the covariance the EOFs diagonalise is the area-weighted covariance on the
  sphere and polar rows do not count more than their area;
- the top-k right singular vectors of the centred, weighted training matrix are the EOFs. The leading
  ones are the physical modes of variability of these climates: the equator-pole temperature gradient
  and its dependence on the planet parameters, the seasonal cycle, the zonal jets and planetary waves.
  A frame's feature vector is its k principal-component coefficients.

The encoder is fitted once, on training data only (never on the held-out planets that are evaluated,
and never on generated samples), it is deterministic (an SVD in float64 with a fixed sign convention),
and it is saved next to the run (``eof_encoder.safetensors``) and reloaded, so numbers stay comparable
across samplers, checkpoints and evaluations. FD and KID are invariant to the sign of each EOF (an
orthogonal change of feature basis).

Coefficients are divided by one global constant, ``sqrt(mean eigenvalue of the k EOFs)``, so features
have unit mean variance: the relative weight of the modes (their explained variance) is kept, and the
cubic polynomial kernel of KID, ``(x.y / k + 1)^3``, works on O(1) features as it does on Inception's.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from astrobio_hf.metrics.functional import latitude_weighted_rmse, latitude_weights

logger = logging.getLogger(__name__)

__all__ = [
    "EOFEncoder",
    "channel_moments",
    "conditional_error",
    "frechet_distance",
    "frechet_distance_from_moments",
    "kernel_inception_distance",
    "mean_std_error",
    "power_spectrum_error",
    "radial_power_spectrum",
]

_F64 = torch.float64
FRAME_DIMS = "(N, C, Y, X)"


def _check_frames(name: str, x: Tensor, *, channels: int | None = None, min_n: int = 1) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"expected {name} as a torch.Tensor {FRAME_DIMS}, got {type(x).__name__}")
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"expected {name} as a floating tensor {FRAME_DIMS}, got shape {tuple(x.shape)} dtype {x.dtype}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"expected {name} {FRAME_DIMS} with C={channels}, got {tuple(x.shape)}")
    if x.shape[0] < min_n:
        raise ValueError(f"expected at least {min_n} frames in {name}, got {x.shape[0]}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"expected finite values in {name}, found {int((~torch.isfinite(x)).sum())} NaN/Inf entries")
    return x


def _check_features(name: str, x: Tensor, min_n: int = 2) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2:
        raise ValueError(f"expected {name} as a (N, D) feature tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if x.shape[0] < min_n:
        raise ValueError(f"expected at least {min_n} feature vectors in {name}, got {x.shape[0]}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"expected finite values in {name}, found NaN/Inf")
    return x.to(_F64)


def _area_weights(lat_deg: Sequence[float] | Tensor, num_lat: int) -> Tensor:
    w = latitude_weights(lat_deg)  # (Y,), mean 1, proportional to the cell area ~ cos(lat)
    if w.numel() != num_lat:
        raise ValueError(f"expected {num_lat} latitudes (the Y axis of the frames), got {w.numel()}")
    return w


# --------------------------------------------------------------------------------------------------
# Moments: per-channel mean and standard deviation
# --------------------------------------------------------------------------------------------------


def channel_moments(frames: Tensor, lat_deg: Sequence[float] | Tensor) -> tuple[Tensor, Tensor]:
    """Area-weighted mean and standard deviation of every channel over all frames and grid points.

    ``mean_c = sum w x / sum w``, ``std_c = sqrt(sum w (x - mean_c)^2 / sum w)`` over (N, Y, X) with the
    cell-area weight ``w`` of each latitude row. Returns two ``(C,)`` float64 tensors (physical units).
    """
    _check_frames("frames", frames)
    w = _area_weights(lat_deg, frames.shape[2]).to(frames.device).view(1, 1, -1, 1)
    x = frames.to(_F64)
    sw = w.expand_as(x).sum(dim=(0, 2, 3))
    mean = (w * x).sum(dim=(0, 2, 3)) / sw
    var = (w * (x - mean.view(1, -1, 1, 1)).square()).sum(dim=(0, 2, 3)) / sw
    return mean, var.sqrt()


def mean_std_error(generated: Tensor, real: Tensor, lat_deg: Sequence[float] | Tensor) -> dict[str, Tensor]:
    """``|mean(gen) - mean(real)|`` and ``|std(gen) - std(real)|`` per channel (physical units, area-weighted).

    Returns ``{"mean_error", "std_error", "mean_generated", "mean_real", "std_generated", "std_real"}``,
    each ``(C,)`` float64.
    """
    _check_frames("real", real)
    _check_frames("generated", generated, channels=real.shape[1])
    mg, sg = channel_moments(generated, lat_deg)
    mr, sr = channel_moments(real, lat_deg)
    return {
        "mean_error": (mg - mr).abs(),
        "std_error": (sg - sr).abs(),
        "mean_generated": mg,
        "mean_real": mr,
        "std_generated": sg,
        "std_real": sr,
    }


# --------------------------------------------------------------------------------------------------
# Radially averaged power spectrum
# --------------------------------------------------------------------------------------------------


def radial_power_spectrum(frames: Tensor) -> tuple[Tensor, Tensor]:
    """Radially averaged 2-D power spectrum of every (Y, X) map, averaged over the N frames.

    Each map is Fourier transformed over (Y, X) with ``torch.fft.fft2``: longitude is periodic, so the
    zonal wavenumbers are exact; latitude is not periodic and is treated as a plane (the jump between
    the southern and northern rows leaks some power to high meridional wavenumbers, identically for
    generated and real frames, so their comparison is fair). With integer wavenumbers
    ``kx in fftfreq(X) * X`` and ``ky in fftfreq(Y) * Y``, the mode ``(ky, kx)`` falls in the radial bin
    ``round(sqrt(kx^2 + ky^2))``; bins ``1 .. min(Y, X) // 2`` are kept (bin 0, the map mean, is what
    :func:`mean_std_error` measures; beyond ``min(Y, X) // 2`` the bins are only partly filled).
    The power ``|F|^2 / (Y X)^2`` is averaged over the modes of a bin (and over frames).

    Returns ``(wavenumbers (K,) float64, power (C, K) float64)``.
    """
    _check_frames("frames", frames)
    _, _, ny, nx = frames.shape
    x = frames.to(_F64)
    power = torch.fft.fft2(x).abs().square().mean(dim=0) / float(ny * nx) ** 2  # (C, Y, X)
    ky = torch.fft.fftfreq(ny, d=1.0 / ny, dtype=_F64, device=x.device)
    kx = torch.fft.fftfreq(nx, d=1.0 / nx, dtype=_F64, device=x.device)
    k = torch.sqrt(ky.view(-1, 1).square() + kx.view(1, -1).square())  # (Y, X)
    kbin = torch.round(k).long().reshape(-1)
    k_max = min(ny, nx) // 2
    if k_max < 1:
        raise ValueError(f"expected maps of at least 2 x 2 points for a power spectrum, got {ny} x {nx}")
    flat = power.reshape(power.shape[0], -1)  # (C, Y*X)
    keep = kbin <= k_max
    sums = torch.zeros(power.shape[0], k_max + 1, dtype=_F64, device=x.device).index_add_(1, kbin[keep], flat[:, keep])
    counts = torch.bincount(kbin[keep], minlength=k_max + 1).to(_F64)
    spectrum = sums[:, 1:] / counts[1:]
    return torch.arange(1, k_max + 1, dtype=_F64), spectrum.cpu()


def power_spectrum_error(generated: Tensor, real: Tensor) -> dict[str, Tensor]:
    """Mean over radial wavenumber bins of ``|log10 P_gen(k) - log10 P_real(k)|`` per channel.

    A value of 0.3 means the generated spectrum is off by a factor of 2 on average over scales. Powers
    are floored at ``1e-12`` times the real channel's largest bin power before the logarithm, so an empty
    bin gives a large finite error instead of inf. Returns ``{"spectrum_error" (C,), "wavenumbers" (K,),
    "power_generated" (C, K), "power_real" (C, K)}``.
    """
    _check_frames("real", real)
    _check_frames("generated", generated, channels=real.shape[1])
    if generated.shape[2:] != real.shape[2:]:
        raise ValueError(f"expected generated and real maps on the same grid, got {tuple(generated.shape)} and {tuple(real.shape)}")
    k, pg = radial_power_spectrum(generated)
    _, pr = radial_power_spectrum(real)
    floor = (1e-12 * pr.amax(dim=1, keepdim=True)).clamp_min(torch.finfo(_F64).tiny)
    err = (torch.log10(pg.clamp_min(floor)) - torch.log10(pr.clamp_min(floor))).abs().mean(dim=1)
    return {"spectrum_error": err, "wavenumbers": k, "power_generated": pg, "power_real": pr}


# --------------------------------------------------------------------------------------------------
# Conditional error
# --------------------------------------------------------------------------------------------------


def conditional_error(
    generated_mean: Tensor, real_mean: Tensor, lat_deg: Sequence[float] | Tensor, scale: Tensor | Sequence[float]
) -> Tensor:
    """Latitude-weighted RMSE between the mean generated and the mean real field of each condition.

    ``generated_mean`` and ``real_mean`` are ``(K, C, Y, X)``: row ``i`` is condition ``i`` (one planet in one
    geological epoch), averaged over its generated samples and over its real frames (climate steps).
    The RMSE (:func:`astrobio_hf.metrics.functional.latitude_weighted_rmse`, pooled over the K conditions)
    is divided by ``scale`` (C,) (the model's normalisation std), so channels in different units can be
    averaged. Returns ``(C,)`` float64.
    """
    _check_frames("real_mean", real_mean)
    _check_frames("generated_mean", generated_mean, channels=real_mean.shape[1])
    if generated_mean.shape != real_mean.shape:
        raise ValueError(f"expected one generated and one real mean field per condition, got {tuple(generated_mean.shape)} and {tuple(real_mean.shape)}")
    scale = torch.as_tensor(scale, dtype=_F64).reshape(-1)
    if scale.numel() != real_mean.shape[1] or not bool((scale > 0).all()):
        raise ValueError(f"expected {real_mean.shape[1]} positive scales, got {scale.tolist()}")
    k, c, y, x = real_mean.shape
    cube = lambda t: t.to(_F64).reshape(k, c, 1, 1, 1, y, x)  # noqa: E731  (B, V, Tc, Tg, Z, Y, X)
    rmse = latitude_weighted_rmse(cube(generated_mean), cube(real_mean), lat_deg)
    return rmse.cpu() / scale


# --------------------------------------------------------------------------------------------------
# Frechet distance and KID on feature vectors
# --------------------------------------------------------------------------------------------------


def _sqrtm_psd(m: Tensor) -> Tensor:
    evals, evecs = torch.linalg.eigh((m + m.T) / 2)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def frechet_distance_from_moments(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``, the squared 2-Wasserstein distance of two Gaussians.

    The trace of the matrix square root is computed stably from symmetric eigendecompositions:
    ``tr (S1 S2)^(1/2) = tr (S1^(1/2) S2 S1^(1/2))^(1/2) = sum_i sqrt(max(lambda_i, 0))``, with
    ``S1^(1/2) S2 S1^(1/2)`` symmetric positive semi-definite (no complex parts to discard, as with a
    general ``sqrtm``).
    """
    mu1, mu2 = mu1.to(_F64).reshape(-1), mu2.to(_F64).reshape(-1)
    s1, s2 = sigma1.to(_F64), sigma2.to(_F64)
    d = mu1.numel()
    if mu2.numel() != d or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"expected means (D,) and covariances (D, D) with one D, got {tuple(mu1.shape)}, {tuple(mu2.shape)}, {tuple(s1.shape)}, {tuple(s2.shape)}")
    r1 = _sqrtm_psd(s1)
    inner = r1 @ s2 @ r1
    tr_covmean = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    fd = (mu1 - mu2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2.0 * tr_covmean
    return float(fd.clamp_min(0.0))


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two sets of feature vectors ``(N, D)`` and ``(M, D)``.

    Means and unbiased covariances (``N - 1``), then :func:`frechet_distance_from_moments`. Like FID,
    the estimate is biased upward for small sets: compare values computed with the same set sizes.
    """
    a, b = _check_features("features_a", features_a), _check_features("features_b", features_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"expected features of one dimension, got {a.shape[1]} and {b.shape[1]}")
    return frechet_distance_from_moments(a.mean(0), torch.cov(a.T).reshape(a.shape[1], -1), b.mean(0), torch.cov(b.T).reshape(b.shape[1], -1))


def kernel_inception_distance(
    features_a: Tensor,
    features_b: Tensor,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel ``k(x, y) = (x.y / d + 1)^3``.

    Averaged over ``num_subsets`` random subsets of ``m = min(subset_size, N, M)`` vectors of each set,
    drawn without replacement by a ``torch.Generator`` seeded with ``seed`` (so the value is
    reproducible). Per subset (as in the reference implementation)::

        MMD^2_u = (sum_{i!=j} k(a_i,a_j) + sum_{i!=j} k(b_i,b_j)) / (m (m-1)) - 2 sum_{i,j} k(a_i,b_j) / m^2

    Unbiased, so it can be slightly negative when the sets come from one distribution. Returns
    ``(mean, std)`` over the subsets.
    """
    a, b = _check_features("features_a", features_a), _check_features("features_b", features_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"expected features of one dimension, got {a.shape[1]} and {b.shape[1]}")
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"expected num_subsets >= 1 and subset_size >= 2, got {num_subsets} and {subset_size}")
    d = a.shape[1]
    m = min(subset_size, a.shape[0], b.shape[0])
    g = torch.Generator().manual_seed(int(seed))
    values = []
    for _ in range(num_subsets):
        x = a[torch.randperm(a.shape[0], generator=g)[:m].to(a.device)]
        y = b[torch.randperm(b.shape[0], generator=g)[:m].to(b.device)]
        kxx = (x @ x.T / d + 1.0) ** 3
        kyy = (y @ y.T / d + 1.0) ** 3
        kxy = (x @ y.T / d + 1.0) ** 3
        off = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        values.append(off - 2.0 * kxy.sum() / (m * m))
    v = torch.stack(values)
    return float(v.mean()), float(v.std(unbiased=False))


# --------------------------------------------------------------------------------------------------
# The fixed EOF encoder
# --------------------------------------------------------------------------------------------------


@dataclass
class EOFEncoder:
    """Projection of ``(N, C, Y, X)`` physical frames on the leading EOFs of the training frames.

    See the module docstring for why these features are meaningful. Attributes (all float64 tensors):
    ``channel_mean``/``channel_std`` (C,) the normalisation; ``row_weights`` (Y,) ``sqrt(area weight)``;
    ``mean`` (C*Y*X,) the training mean of the weighted, normalised frames; ``components`` (k, C*Y*X)
    the EOFs (orthonormal rows); ``explained_variance`` (k,) the variance of each coefficient on the
    training frames; ``feature_scale`` the global divisor of the coefficients;
    ``total_variance`` the training variance summed over all modes; ``channel_names`` and
    ``lat_deg`` for checks; ``num_fit_frames`` the number of training frames.
    """

    channel_mean: Tensor
    channel_std: Tensor
    row_weights: Tensor
    mean: Tensor
    components: Tensor
    explained_variance: Tensor
    feature_scale: float
    total_variance: float
    channel_names: list[str]
    lat_deg: list[float]
    num_fit_frames: int

    @property
    def num_components(self) -> int:
        return int(self.components.shape[0])

    @property
    def explained_variance_ratio(self) -> Tensor:
        return self.explained_variance / self.total_variance

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        c, y = self.channel_mean.numel(), self.row_weights.numel()
        return c, y, self.components.shape[1] // (c * y)

    @classmethod
    def fit(
        cls,
        frames: Tensor,
        *,
        channel_mean: Tensor | Sequence[float],
        channel_std: Tensor | Sequence[float],
        lat_deg: Sequence[float] | Tensor,
        num_components: int = 32,
        channel_names: Sequence[str] | None = None,
    ) -> "EOFEncoder":
        """Fit the top ``num_components`` EOFs of ``frames`` (N, C, Y, X), training frames in physical units.

        ``channel_mean``/``channel_std`` (C,) are the model's normalisation statistics. The SVD runs in
        float64 on CPU; each EOF's sign is fixed so that its largest-magnitude loading is positive, so the
        result is a deterministic function of the frames. ``num_components`` is capped at
        ``min(N - 1, C*Y*X)`` (with a log message).
        """
        _check_frames("frames", frames, min_n=2)
        n, c, y, x = frames.shape
        cm = torch.as_tensor(channel_mean, dtype=_F64).reshape(-1)
        cs = torch.as_tensor(channel_std, dtype=_F64).reshape(-1)
        if cm.numel() != c or cs.numel() != c or not bool((cs > 0).all()):
            raise ValueError(f"expected {c} channel means and {c} positive channel stds, got {cm.numel()} and {cs.tolist()}")
        names = [str(s) for s in channel_names] if channel_names is not None else [f"c{i}" for i in range(c)]
        if len(names) != c:
            raise ValueError(f"expected {c} channel names, got {len(names)}")
        row_w = _area_weights(lat_deg, y).sqrt()
        k = int(num_components)
        if k < 1:
            raise ValueError(f"expected num_components >= 1, got {num_components}")
        k_cap = min(n - 1, c * y * x)
        if k > k_cap:
            logger.info("EOF encoder: %d training frames allow at most %d components, not %d", n, k_cap, k)
            k = k_cap
        z = cls._weighted(frames.detach().cpu(), cm, cs, row_w)  # (N, D)
        mean = z.mean(dim=0)
        zc = z - mean
        _, s, vh = torch.linalg.svd(zc, full_matrices=False)
        comps = vh[:k].contiguous().clone()
        sign = torch.sign(comps.gather(1, comps.abs().argmax(dim=1, keepdim=True)))
        comps = (comps * torch.where(sign == 0, torch.ones_like(sign), sign)).contiguous()
        var = s.square() / (n - 1)
        explained = var[:k].clone()
        scale = float(explained.mean().sqrt()) or 1.0
        enc = cls(
            channel_mean=cm,
            channel_std=cs,
            row_weights=row_w,
            mean=mean,
            components=comps,
            explained_variance=explained,
            feature_scale=scale,
            total_variance=float(var.sum()),
            channel_names=names,
            lat_deg=[float(v) for v in torch.as_tensor(lat_deg, dtype=_F64).tolist()],
            num_fit_frames=n,
        )
        logger.info(
            "EOF encoder fitted on %d frames (C=%d, %dx%d): %d EOFs explain %.1f%% of the variance",
            n, c, y, x, k, 100 * float(explained.sum()) / max(enc.total_variance, 1e-300),
        )
        return enc

    @staticmethod
    def _weighted(frames: Tensor, cm: Tensor, cs: Tensor, row_w: Tensor) -> Tensor:
        z = (frames.to(_F64) - cm.view(1, -1, 1, 1)) / cs.view(1, -1, 1, 1)
        return (z * row_w.view(1, 1, -1, 1)).reshape(frames.shape[0], -1)

    def encode(self, frames: Tensor) -> Tensor:
        """``(N, C, Y, X)`` physical frames -> ``(N, k)`` float64 EOF coefficients / ``feature_scale``."""
        c, y, x = self.frame_shape
        _check_frames("frames", frames, channels=c)
        if tuple(frames.shape[2:]) != (y, x):
            raise ValueError(f"expected frames on the encoder's {y} x {x} grid, got {tuple(frames.shape)}")
        z = self._weighted(frames.detach().cpu(), self.channel_mean, self.channel_std, self.row_weights)
        return (z - self.mean) @ self.components.T / self.feature_scale

    # ---- persistence
    _TENSORS = ("channel_mean", "channel_std", "row_weights", "mean", "components", "explained_variance")

    def save(self, path: str | os.PathLike) -> None:
        """Write a safetensors file (tensors + the scalars and names as JSON metadata), atomically."""
        from safetensors.torch import save_file

        meta = {
            "format": "astrobio-hf-eof-encoder",
            "feature_scale": repr(self.feature_scale),
            "total_variance": repr(self.total_variance),
            "channel_names": json.dumps(self.channel_names),
            "lat_deg": json.dumps(self.lat_deg),
            "num_fit_frames": str(self.num_fit_frames),
        }
        path = os.fspath(path)
        tmp = path + ".tmp"
        save_file({n: getattr(self, n).contiguous() for n in self._TENSORS}, tmp, metadata=meta)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EOFEncoder":
        """Read a file written by :meth:`save`; a file that is not one raises ``ValueError``."""
        from safetensors import safe_open

        try:
            with safe_open(os.fspath(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {n: f.get_tensor(n) for n in f.keys()}
        except Exception as err:  # safetensors raises its own error types for truncated/corrupted files
            raise ValueError(f"could not read the EOF encoder {os.fspath(path)!r}: {err}") from err
        missing = [n for n in cls._TENSORS if n not in tensors]
        if meta.get("format") != "astrobio-hf-eof-encoder" or missing:
            raise ValueError(f"{os.fspath(path)!r} is not an EOF encoder file (format {meta.get('format')!r}, missing tensors {missing})")
        return cls(
            **{n: tensors[n] for n in cls._TENSORS},
            feature_scale=float(meta["feature_scale"]),
            total_variance=float(meta["total_variance"]),
            channel_names=json.loads(meta["channel_names"]),
            lat_deg=json.loads(meta["lat_deg"]),
            num_fit_frames=int(meta["num_fit_frames"]),
        )

    def check_compatible(self, channel_names: Sequence[str], lat_deg: Sequence[float], frame_shape: tuple[int, int, int]) -> None:
        """Raise ``ValueError`` unless the encoder was fitted on frames with these channels and grid."""
        if list(channel_names) != self.channel_names or tuple(frame_shape) != self.frame_shape or not all(
            math.isclose(a, b, abs_tol=1e-6) for a, b in zip(lat_deg, self.lat_deg)
        ):
            raise ValueError(
                f"the EOF encoder was fitted on channels {self.channel_names} with (C, Y, X) = {self.frame_shape}; "
                f"the frames have channels {list(channel_names)} with {tuple(frame_shape)} (delete the encoder file to refit)"
            )

"""Metrics against hand-computed values, WeatherBench2 weights, perfect predictions and a 2-process sync."""

from __future__ import annotations

import math
import os
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from astrobio_hf.metrics import (
    NRMSE,
    AnomalyCorrelation,
    ForecastMetrics,
    LatitudeWeightedRMSE,
    PhysicsResidualMetric,
    R2Score,
    SSIMPerLevel,
    anomaly_correlation,
    latitude_weighted_rmse,
    latitude_weights,
    normalized_rmse,
    r2_score,
    ssim_per_level,
)


def _cube(values, *, y_axis=True) -> torch.Tensor:
    """Put a 1-D list along Y (or X) of a (1, 1, 1, 1, 1, Y, X) cube."""
    t = torch.tensor(values, dtype=torch.float64)
    return t.view(1, 1, 1, 1, 1, -1, 1) if y_axis else t.view(1, 1, 1, 1, 1, 1, -1)


def _wb2_weights_numpy(lat_deg: np.ndarray) -> np.ndarray:
    # WeatherBench2 get_lat_weights, written out in numpy
    lat = np.deg2rad(lat_deg)
    bounds = np.concatenate([[-np.pi / 2], (lat[:-1] + lat[1:]) / 2, [np.pi / 2]])
    w = np.sin(bounds[1:]) - np.sin(bounds[:-1])
    return w / w.mean()


# ------------------------------------------------------------------ latitude weights


def test_latitude_weights_hand_computed():
    # bounds -90, -30, 30, 90 -> sin: -1, -0.5, 0.5, 1 -> widths 0.5, 1, 0.5 -> / mean (2/3)
    np.testing.assert_allclose(latitude_weights([-60.0, 0.0, 60.0]).numpy(), [0.75, 1.5, 0.75], rtol=1e-12)
    np.testing.assert_allclose(latitude_weights([-45.0, 45.0]).numpy(), [1.0, 1.0], rtol=1e-12)


@pytest.mark.parametrize(
    "lat", [np.linspace(-84.375, 84.375, 16), np.linspace(-88.75, 88.75, 72), np.array([-70.0, -20.0, 5.0, 33.0, 80.0])]
)
def test_latitude_weights_match_weatherbench2_numpy(lat):
    got = latitude_weights(torch.tensor(lat)).numpy()
    np.testing.assert_allclose(got, _wb2_weights_numpy(lat), rtol=1e-12)
    assert got.mean() == pytest.approx(1.0, abs=1e-12)
    # proportional to cos(lat) to O(dlat^2) on a regular grid
    if len(lat) == 72:
        cos = np.cos(np.deg2rad(lat))
        np.testing.assert_allclose(got, cos / cos.mean(), rtol=2e-3)


@pytest.mark.parametrize("bad", [[10.0, 0.0], [-95.0, 0.0], [[0.0, 1.0]]])
def test_latitude_weights_reject_bad_latitudes(bad):
    with pytest.raises(ValueError, match="lat"):
        latitude_weights(bad)


# ------------------------------------------------------------------ hand-computed values


def test_rmse_hand_computed():
    # one variable, Y=3 rows at -60, 0, 60 (weights .75, 1.5, .75), errors 1, 2, 3
    target = torch.zeros(1, 2, 1, 1, 1, 3, 1, dtype=torch.float64)
    preds = target.clone()
    preds[0, 0, ..., :, 0] = torch.tensor([1.0, 2.0, 3.0])
    preds[0, 1] = 2.0
    # (0.75 * 1 + 1.5 * 4 + 0.75 * 9) / 3 = 4.5
    expected = [math.sqrt(4.5), 2.0]
    lat = [-60.0, 0.0, 60.0]
    np.testing.assert_allclose(latitude_weighted_rmse(preds, target, lat).numpy(), expected, rtol=1e-12)
    metric = LatitudeWeightedRMSE(lat, ["T", "u"])
    metric.update(preds, target)
    out = metric.compute()
    assert set(out) == {"rmse/T", "rmse/u", "rmse"}
    assert float(out["rmse/T"]) == pytest.approx(math.sqrt(4.5))
    assert float(out["rmse/u"]) == pytest.approx(2.0)
    assert float(out["rmse"]) == pytest.approx((math.sqrt(4.5) + 2.0) / 2)


def test_acc_hand_computed():
    lat = [-60.0, 0.0, 60.0]  # weights .75, 1.5, .75
    target = _cube([1.0, 1.0, 1.0]).repeat(2, 1, 1, 1, 1, 1, 1)  # two samples
    preds = torch.cat([_cube([1.0, 2.0, 0.0]), -_cube([1.0, 1.0, 1.0])])
    clim = torch.zeros(1)
    # sample 0: num = .75*1 + 1.5*2 + 0 = 3.75; sum w f^2 = .75 + 6 = 6.75; sum w o^2 = 3 -> 3.75 / 4.5
    # sample 1: f' = -o' -> -1
    expected = (3.75 / 4.5 - 1.0) / 2
    assert float(anomaly_correlation(preds, target, clim, lat)[0]) == pytest.approx(expected, rel=1e-12)
    metric = AnomalyCorrelation(lat, ["T"])
    metric.update(preds[:1], target[:1], clim)
    metric.update(preds[1:], target[1:], clim)
    assert float(metric.compute()["acc/T"]) == pytest.approx(expected, rel=1e-12)
    # anomalies are taken against the climatology: shifting all three by c changes nothing
    c = torch.full((1, 1, 1, 1, 1, 3, 1), 7.0, dtype=torch.float64)
    assert float(anomaly_correlation(preds + c, target + c, clim + c, lat)[0]) == pytest.approx(expected, rel=1e-12)


def test_r2_and_nrmse_hand_computed():
    target = _cube([1.0, 2.0, 3.0, 4.0], y_axis=False)
    preds = _cube([1.0, 2.0, 3.0, 5.0], y_axis=False)
    # SS_res = 1, mean 2.5, SS_tot = 2.25 + .25 + .25 + 2.25 = 5 -> R2 = 0.8
    # RMSE = sqrt(1/4) = 0.5, std = sqrt(5/4) -> NRMSE = 0.5 / sqrt(1.25) = sqrt(0.2)
    assert float(r2_score(preds, target)[0]) == pytest.approx(0.8, rel=1e-12)
    assert float(normalized_rmse(preds, target)[0]) == pytest.approx(math.sqrt(0.2), rel=1e-12)
    r2, nrmse = R2Score(["T"]), NRMSE(["T"])
    for i in range(4):  # one element per update: only pooled sums can give the right answer
        r2.update(preds[..., i : i + 1], target[..., i : i + 1])
        nrmse.update(preds[..., i : i + 1], target[..., i : i + 1])
    assert float(r2.compute()["r2/T"]) == pytest.approx(0.8, rel=1e-12)
    assert float(nrmse.compute()["nrmse/T"]) == pytest.approx(math.sqrt(0.2), rel=1e-12)


def test_weighted_r2_nrmse_match_numpy():
    g = torch.Generator().manual_seed(1)
    lat = np.array([-70.0, -20.0, 5.0, 33.0, 80.0])
    target = torch.randn(3, 2, 2, 1, 2, 5, 4, generator=g, dtype=torch.float64) * 3 + 250
    preds = target + torch.randn(target.shape, generator=g, dtype=torch.float64)
    w = np.broadcast_to(_wb2_weights_numpy(lat)[:, None], (5, 4))
    for v in range(2):
        t = target[:, v].numpy()
        p = preds[:, v].numpy()
        ww = np.broadcast_to(w, t.shape)
        mean = (ww * t).sum() / ww.sum()
        ss_tot = (ww * (t - mean) ** 2).sum()
        ss_res = (ww * (p - t) ** 2).sum()
        assert float(r2_score(preds, target, lat)[v]) == pytest.approx(1 - ss_res / ss_tot, rel=1e-10)
        assert float(normalized_rmse(preds, target, lat)[v]) == pytest.approx(
            math.sqrt(ss_res / ww.sum()) / math.sqrt(ss_tot / ww.sum()), rel=1e-10
        )
        assert float(latitude_weighted_rmse(preds, target, lat)[v]) == pytest.approx(
            math.sqrt(ss_res / ww.sum()), rel=1e-10
        )


def test_nrmse_pools_std_across_batches():
    # two batches with different target means: the pooled std includes the between-batch spread,
    # so the result differs from the mean of per-batch NRMSEs
    t1 = _cube([0.0, 2.0], y_axis=False)
    t2 = _cube([10.0, 12.0], y_axis=False)
    p1, p2 = t1 + 1.0, t2 - 1.0
    metric = NRMSE(["T"])
    metric.update(p1, t1)
    metric.update(p2, t2)
    union_t = torch.cat([t1, t2], dim=-1)
    union_p = torch.cat([p1, p2], dim=-1)
    # RMSE = 1, pooled std = sqrt(mean((t - 6)^2)) = sqrt((36 + 16 + 16 + 36) / 4) = sqrt(26)
    assert float(metric.compute()["nrmse/T"]) == pytest.approx(1 / math.sqrt(26), rel=1e-12)
    assert float(normalized_rmse(union_p, union_t)[0]) == pytest.approx(1 / math.sqrt(26), rel=1e-12)
    per_batch = (float(normalized_rmse(p1, t1)[0]) + float(normalized_rmse(p2, t2)[0])) / 2
    assert per_batch == pytest.approx(1.0)


def test_float32_pressure_does_not_lose_variance():
    # p ~ 1e5 Pa with 10 Pa spread: float32 sums of squares would cancel; the states are float64
    g = torch.Generator().manual_seed(2)
    target = (1e5 + 10 * torch.randn(4, 1, 1, 1, 2, 16, 32, generator=g)).float()
    preds = target + 1.0
    r2 = R2Score(["p"])
    r2.update(preds, target)
    t = target.double().numpy()
    expected = 1 - (((preds.double() - target.double()).numpy()) ** 2).sum() / ((t - t.mean()) ** 2).sum()
    assert float(r2.compute()["r2/p"]) == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------ SSIM


def test_ssim_constant_fields_hand_computed():
    # constant images: sigma = 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 L)^2
    preds = torch.full((1, 1, 1, 1, 2, 8, 12), 1.0, dtype=torch.float64)
    target = torch.full_like(preds, 0.5)
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 1.0 * 0.5 + c1) / (1.0 + 0.25 + c1)
    np.testing.assert_allclose(ssim_per_level(preds, target, [1.0], kernel_size=5).numpy(), [[expected, expected]], rtol=1e-12)
    # in physical units with data_range L: a = 200 K, b = 100 K, L = 200 K -> same numbers scaled
    got = ssim_per_level(preds * 200, target * 200, [200.0], kernel_size=5)
    np.testing.assert_allclose(got.numpy(), [[expected, expected]], rtol=1e-12)


def _ssim_numpy(p: np.ndarray, t: np.ndarray, data_range: float, kernel_size: int, sigma: float) -> float:
    """Direct per-pixel SSIM: Gaussian window, reflect padding in Y, periodic in X."""
    half = kernel_size // 2
    d = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-((d / sigma) ** 2) / 2)
    g /= g.sum()
    win = np.outer(g, g)
    pp = np.pad(np.pad(p, ((half, half), (0, 0)), mode="reflect"), ((0, 0), (half, half)), mode="wrap")
    tp = np.pad(np.pad(t, ((half, half), (0, 0)), mode="reflect"), ((0, 0), (half, half)), mode="wrap")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for i in range(p.shape[0]):
        for j in range(p.shape[1]):
            a = pp[i : i + kernel_size, j : j + kernel_size]
            b = tp[i : i + kernel_size, j : j + kernel_size]
            ma, mb = (win * a).sum(), (win * b).sum()
            va, vb = (win * (a - ma) ** 2).sum(), (win * (b - mb) ** 2).sum()
            cov = (win * (a - ma) * (b - mb)).sum()
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_direct_numpy_and_is_periodic_in_longitude():
    g = torch.Generator().manual_seed(3)
    target = 250 + 20 * torch.rand(2, 1, 1, 1, 2, 8, 12, generator=g, dtype=torch.float64)
    preds = target + 5 * torch.randn(target.shape, generator=g, dtype=torch.float64)
    got = ssim_per_level(preds, target, [80.0], kernel_size=5)  # (V=1, Z=2)
    sigma = 4 / 7
    for z in range(2):
        ref = np.mean([_ssim_numpy(preds[b, 0, 0, 0, z].numpy(), target[b, 0, 0, 0, z].numpy(), 80.0, 5, sigma) for b in range(2)])
        assert float(got[0, z]) == pytest.approx(ref, rel=1e-10)
    rolled = ssim_per_level(preds.roll(5, dims=-1), target.roll(5, dims=-1), [80.0], kernel_size=5)
    torch.testing.assert_close(rolled, got)


def test_ssim_metric_keys_and_kernel_checks():
    metric = SSIMPerLevel(["T", "p"], {"T": 100.0, "p": 5e4}, num_levels=2, level_names=["surface", "top"])
    x = torch.rand(1, 2, 1, 1, 2, 16, 32, dtype=torch.float64)
    metric.update(x, x)
    out = metric.compute()
    assert set(out) == {"ssim/T/surface", "ssim/T/top", "ssim/p/surface", "ssim/p/top", "ssim/T", "ssim/p", "ssim"}
    with pytest.raises(ValueError, match="kernel_size"):
        SSIMPerLevel(["T"], [1.0], num_levels=1, kernel_size=6)
    with pytest.raises(ValueError, match="sigma"):
        SSIMPerLevel(["T"], [1.0], num_levels=1, kernel_size=7, sigma=1.5)
    with pytest.raises(ValueError, match="data_range"):
        SSIMPerLevel(["T", "p"], {"T": 1.0}, num_levels=1)
    with pytest.raises(ValueError, match="Z=2"):
        metric.update(x[:, :, :, :, :1], x[:, :, :, :, :1])


# ------------------------------------------------------------------ perfect predictions


def test_perfect_prediction():
    g = torch.Generator().manual_seed(4)
    lat = torch.linspace(-84.375, 84.375, 16)
    names = ["T", "p", "u"]
    target = torch.randn(2, 3, 2, 1, 3, 16, 32, generator=g) * torch.tensor([10.0, 500.0, 5.0]).view(1, 3, 1, 1, 1, 1, 1)
    target = target + torch.tensor([250.0, 1e5, 0.0]).view(1, 3, 1, 1, 1, 1, 1)
    clim = target.mean(dim=0, keepdim=True) + 0.1 * torch.randn(1, 3, 2, 1, 3, 16, 32, generator=g)
    metrics = ForecastMetrics(lat, names, [100.0, 5e4, 50.0], num_levels=3)
    metrics.update(target.clone(), target, clim)
    out = metrics.compute()
    for v in names:
        assert out[f"rmse/{v}"] == pytest.approx(0.0, abs=1e-12)
        assert out[f"nrmse/{v}"] == pytest.approx(0.0, abs=1e-12)
        assert out[f"r2/{v}"] == pytest.approx(1.0, abs=1e-12)
        assert out[f"acc/{v}"] == pytest.approx(1.0, abs=1e-12)
        assert out[f"ssim/{v}"] == pytest.approx(1.0, abs=1e-12)
        for k in range(3):
            assert out[f"ssim/{v}/level_{k}"] == pytest.approx(1.0, abs=1e-12)
    assert all(isinstance(value, float) for value in out.values())
    light = ForecastMetrics(lat, names, [100.0, 5e4, 50.0], num_levels=3, include_ssim=False)
    light.update(target.clone(), target, clim)
    light_out = light.compute()
    assert not any(k.startswith("ssim") for k in light_out)
    assert light_out == {k: v for k, v in out.items() if not k.startswith("ssim")}


# ------------------------------------------------------------------ physics residuals and errors


def test_physics_residual_metric_per_name_means():
    metric = PhysicsResidualMetric(["hydrostatic", "ideal_gas", "lapse_rate"])
    metric.update({"hydrostatic": torch.tensor([1.0, 3.0]), "ideal_gas": torch.tensor([0.5, 0.5])})
    metric.update({"hydrostatic": torch.tensor([5.0])})
    out = metric.compute()
    assert set(out) == {"physics/hydrostatic", "physics/ideal_gas", "physics"}  # lapse_rate never reported
    assert float(out["physics/hydrostatic"]) == pytest.approx(3.0)  # (1 + 3 + 5) / 3
    assert float(out["physics/ideal_gas"]) == pytest.approx(0.5)
    assert float(out["physics"]) == pytest.approx(1.75)
    with pytest.raises(ValueError, match="unknown"):
        metric.update({"energy": torch.ones(2)})
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        metric.update({"hydrostatic": torch.ones(2, 2)})


def test_bad_inputs_raise_clear_errors():
    lat = torch.linspace(-84.375, 84.375, 16)
    metric = LatitudeWeightedRMSE(lat, ["T", "p"])
    good = torch.zeros(1, 2, 1, 1, 1, 16, 32)
    with pytest.raises(ValueError, match="V=2"):
        metric.update(torch.zeros(1, 3, 1, 1, 1, 16, 32), torch.zeros(1, 3, 1, 1, 1, 16, 32))
    with pytest.raises(ValueError, match="Y=16"):
        metric.update(torch.zeros(1, 2, 1, 1, 1, 8, 32), torch.zeros(1, 2, 1, 1, 1, 8, 32))
    with pytest.raises(ValueError, match="7 dims"):
        metric.update(good[0], good[0])
    bad = good.clone()
    bad[0, 0, 0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        metric.update(bad, good)
    with pytest.raises(ValueError, match="climatology"):
        AnomalyCorrelation(lat, ["T", "p"]).update(good, good, torch.zeros(3, 16, 32))
    with pytest.raises(ValueError, match="physics_residuals"):
        ForecastMetrics(lat, ["T", "p"], [1.0, 1.0], 1, physics_names=["hydrostatic"]).update(good, good, good)


# ------------------------------------------------------------------ 2-process sync

_LAT = torch.linspace(-78.75, 78.75, 8)
_NAMES = ["T", "p"]
_PHYSICS = ["hydrostatic", "ideal_gas"]
_SPLIT = 3  # rank 0 gets samples [0, 3), rank 1 gets [3, 5): unequal halves


def _dist_data():
    g = torch.Generator().manual_seed(5)
    scale = torch.tensor([10.0, 400.0]).view(1, 2, 1, 1, 1, 1, 1)
    offset = torch.tensor([250.0, 9e4]).view(1, 2, 1, 1, 1, 1, 1)
    target = torch.randn(5, 2, 2, 1, 3, 8, 12, generator=g) * scale + offset
    target[_SPLIT:] += 3 * scale[0]  # the second half has another mean: pooled std != per-rank std
    noise = torch.randn(target.shape, generator=g) * scale * 0.3
    noise[_SPLIT:] *= 3  # and larger errors
    preds = target + noise
    clim = target.mean(dim=0, keepdim=True) + 0.2 * scale * torch.randn(1, 2, 2, 1, 3, 8, 12, generator=g)
    residuals = {"hydrostatic": torch.rand(5, generator=g), "ideal_gas": torch.rand(5, generator=g)}
    return preds, target, clim, residuals


def _build_metrics():
    data_range = {"T": 100.0, "p": 4000.0}
    return {
        "rmse": LatitudeWeightedRMSE(_LAT, _NAMES),
        "acc": AnomalyCorrelation(_LAT, _NAMES),
        "r2": R2Score(_NAMES),
        "r2_weighted": R2Score(_NAMES, lat_deg=_LAT),
        "nrmse": NRMSE(_NAMES, lat_deg=_LAT),
        "ssim": SSIMPerLevel(_NAMES, data_range, num_levels=3, kernel_size=5),
        "physics": PhysicsResidualMetric(_PHYSICS),
        "forecast": ForecastMetrics(_LAT, _NAMES, data_range, 3, physics_names=_PHYSICS, ssim_kernel_size=5),
    }


def _evaluate(samples: slice) -> dict[str, dict[str, float]]:
    """Update every metric with the given samples, one sample per update, and compute."""
    preds, target, clim, residuals = _dist_data()
    metrics = _build_metrics()
    for b in range(*samples.indices(preds.shape[0])):
        p, t, r = preds[b : b + 1], target[b : b + 1], {k: v[b : b + 1] for k, v in residuals.items()}
        for name, metric in metrics.items():
            if name == "acc":
                metric.update(p, t, clim)
            elif name == "physics":
                metric.update(r)
            elif name == "forecast":
                metric.update(p, t, clim, physics_residuals=r)
            else:
                metric.update(p, t)
    return {name: {k: float(v) for k, v in metric.compute().items()} for name, metric in metrics.items()}


def _dist_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size, timeout=timedelta(seconds=60)
    )
    try:
        samples = slice(0, _SPLIT) if rank == 0 else slice(_SPLIT, None)
        torch.save(_evaluate(samples), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_sync_equals_single_process(tmp_path):
    mp.spawn(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = _evaluate(slice(None))
    # the same per-rank computations without the sync, to show that averaging them would be wrong
    local = [_evaluate(slice(0, _SPLIT)), _evaluate(slice(_SPLIT, None))]
    for rank in range(2):
        synced = torch.load(tmp_path / f"rank{rank}.pt")
        assert synced.keys() == single.keys()
        for name in single:
            assert synced[name].keys() == single[name].keys(), name
            for key, value in single[name].items():
                assert synced[name][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, key)
    for key in ("nrmse/T", "r2/p"):
        metric = key.split("/")[0]
        averaged = (local[0][metric][key] + local[1][metric][key]) / 2
        assert abs(averaged - single[metric][key]) > 1e-3 * abs(single[metric][key]), key


def test_masked_metrics_use_valid_values_only():
    """Garbage (even NaN) in masked cells changes no metric; RMSE equals the hand-computed weighted RMSE of
    the valid values."""
    from astrobio_hf.metrics import ForecastMetrics, latitude_weights

    torch.manual_seed(0)
    lat = [-90.0 + 15.0 * i for i in range(13)]  # poles included
    shape = (2, 2, 3, 1, 2, 13, 24)
    target = torch.randn(shape, dtype=torch.float64)
    preds = target + 0.3 * torch.randn(shape, dtype=torch.float64)
    clim = torch.zeros(2, 1, 1, 2, 13, 24, dtype=torch.float64)
    valid = torch.rand(shape) > 0.3
    valid[:, :, :, :, 0] = False  # a whole level masked at once: its maps have no ACC and are left out
    results = []
    for fill in (0.0, float("nan"), 1e6):
        m = ForecastMetrics(lat, ["a", "b"], [1.0, 1.0], 2, include_ssim=False)
        m.update(preds.masked_fill(~valid, fill), target.masked_fill(~valid, fill), clim, valid=valid)
        results.append(m.compute())
    assert results[0] == results[1] == results[2]
    w = latitude_weights(lat).view(1, 1, 1, 1, 1, -1, 1).expand(shape)
    wv = torch.where(valid, w, 0.0)[:, 0]
    expected = torch.sqrt((wv * (preds - target)[:, 0] ** 2).sum() / wv.sum())
    assert results[0]["rmse/a"] == pytest.approx(float(expected), rel=1e-12)
    assert all(math.isfinite(v) for v in results[0].values())
    with pytest.raises(ValueError, match="SSIM is not defined on masked maps"):
        ForecastMetrics(lat, ["a", "b"], [1.0, 1.0], 2).update(preds, target, clim, valid=valid)

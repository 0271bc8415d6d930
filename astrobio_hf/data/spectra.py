"""WASP-43b (cube, phase-resolved emission spectrum) pairs from ``nemesispy``'s real GCM and forward model.

Source (all shipped inside the ``nemesispy`` 0.0.10 wheel, read offline):

* the SPARC/MITgcm 3-D model of WASP-43b (Parmentier et al. 2016 set-up, used in Irwin et al. 2020):
  temperature and the volume mixing ratios (VMR) of H2O, CO2, CO, CH4, He and H2 on 64 longitudes x
  32 latitudes x 53 pressure levels (``nemesispy.data.gcm.process_gcm``);
* the correlated-k opacity tables of H2O, CO2, CO and CH4 at the HST/WFC3 + Spitzer wavelengths and the
  H2-H2 / H2-He collision-induced absorption table (``nemesispy.data.helper``);
* the forward model ``nemesispy.radtran.forward_model.ForwardModel.calc_disc_spectrum`` (disc integration
  of the emission over the visible hemisphere at an orbital phase, Gauss-Lobatto quadrature with nmu = 5,
  20 hydrostatic layers from 20 bar to 1 mbar), divided by the WASP-43 stellar spectrum -> Fp/Fs;
* the observed HST/WFC3 + Spitzer phase curve of WASP-43b (Stevenson et al. 2017, Table 5: 15 orbital
  phases x 17 wavelengths, with 1-sigma errors) and the Fortran NEMESIS spectra of the same GCM
  (Irwin et al. 2020, Fig. 12), which the Python forward model reproduces.

numpy 2 compatibility: nemesispy's k-table reader (``radtran.read.read_kta``) calls ``int()`` on a
1-element array, which numpy >= 2 refuses; :func:`read_kta` below is the same reader written for numpy 2
(same byte layout, vectorised reshape) and fills the ``ForwardModel`` attributes that
``set_opacity_data`` would. Everything else is nemesispy's code. The climate-spectra recipe imports the
helpers at the end (``GCM_CUBE_FILE``, ``write_gcm_cube``, ``load_wasp43b_reference``); nemesispy is imported
only inside the functions that need it.

Perturbations (one draw per sample, the ``planet_params`` of the dataset):

* ``T_scale`` (x 0.85-1.15): the whole temperature field is multiplied by it;
* ``day_night_contrast`` (x 0.6-1.4): the deviation of T from its horizontal (cos-lat weighted) mean on
  each level is multiplied by it (less or more efficient heat redistribution);
* ``dT_20bar``, ``dT_1bar``, ``dT_50mbar``, ``dT_1mbar`` (+-150 K): offsets per layer, piecewise linear in
  log pressure through these four nodes (constant beyond the end nodes);
* ``log10_f_H2O``, ``log10_f_CO2``, ``log10_f_CO``, ``log10_f_CH4`` (+-1 dex): abundance scalings; H2 and He
  are rescaled (keeping their ratio) so that the VMRs still sum to 1.

T is clipped to the k-table range [100, 2950] K. The cube holds T [K] and the log10 VMR of the six gases,
on the GCM levels that bracket the forward model's 20 bar - 1 mbar grid (30 of the 53; the others do not
enter the spectrum: the forward model interpolates linearly between the bracketing GCM levels, so the
spectra are identical with or without them). The GCM's longitudes (-177.1875 ... 177.1875, 5.625 deg
steps, substellar point at 0; nemesispy lists them rounded to 5 digits) are global and evenly spaced:
they are only rotated into [0, 360) (substellar point at 0, antistellar at 180), no regridding. Spectra are eclipse depths Fp/Fs in ppm at the 15 observed phases and 17 observed wavelengths.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

GAS_NAMES = ("H2O", "CO2", "CO", "CH4", "He", "H2")
#: HITRAN-style gas ids in the order of ``GAS_NAMES`` (nemesispy's ``gas_id``).
GAS_IDS = (1, 2, 5, 6, 40, 39)
#: indices of the trace gases whose abundance is perturbed (H2O, CO2, CO, CH4); He and H2 fill the rest.
TRACE_GASES = (0, 1, 2, 3)
VARIABLE_NAMES = ("T", *(f"log10_vmr_{g}" for g in GAS_NAMES))
VARIABLE_UNITS = {"T": "K", **{f"log10_vmr_{g}": "1" for g in GAS_NAMES}}
OFFSET_NODES_PA = (20e5, 1e5, 5e3, 1e2)  # 20 bar, 1 bar, 50 mbar, 1 mbar
PLANET_PARAM_NAMES = (
    "T_scale",
    "day_night_contrast",
    "dT_20bar",
    "dT_1bar",
    "dT_50mbar",
    "dT_1mbar",
    *(f"log10_f_{GAS_NAMES[i]}" for i in TRACE_GASES),
)
PLANET_PARAM_UNITS = ("1", "1", "K", "K", "K", "K", "dex", "dex", "dex", "dex")
#: uniform ranges of the perturbation parameters
PARAM_RANGES = {
    "T_scale": (0.85, 1.15),
    "day_night_contrast": (0.6, 1.4),
    "dT": (-150.0, 150.0),
    "log10_f": (-1.0, 1.0),
}
UNPERTURBED = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
T_CLIP = (100.0, 2950.0)
NLAYER = 20
NMU = 5
P_TOP_PA, P_BOTTOM_PA = 1e2, 20e5
SPECTRUM_UNITS = "ppm"
SPECTRUM_MODEL = (
    "nemesispy 0.0.10 correlated-k forward model (ForwardModel.calc_disc_spectrum: H2O/CO2/CO/CH4 k-tables "
    "+ H2-H2/H2-He CIA, 20 hydrostatic layers 20 bar-1 mbar, Gauss-Lobatto disc integration nmu=5) of the "
    "perturbed WASP-43b SPARC/MITgcm GCM, divided by the WASP-43 stellar spectrum: eclipse depth Fp/Fs in ppm "
    "at the Stevenson et al. (2017) HST/WFC3 + Spitzer phases and wavelengths."
)
GRAV_CONST = 6.67430e-11
R_UNIVERSAL = 8.314462618


# ----------------------------------------------------------------------------------------------------
# nemesispy access (imported lazily: numba compiles on first use)


def _require_nemesispy():
    try:
        import nemesispy  # noqa: F401
    except ImportError as err:  # pragma: no cover - dependency declared in pyproject
        raise ImportError("the WASP-43b spectra need nemesispy: pip install nemesispy==0.0.10") from err


def enable_numba_cache() -> None:
    """Let numba cache nemesispy's jitted kernels on disk (nemesispy's ``@jit`` has no ``cache=True``);
    the second process then skips the ~30 s compile. Harmless where the cache cannot be written."""
    _require_nemesispy()
    import importlib

    from numba.core.registry import CPUDispatcher

    for mod_name in (
        "nemesispy.common.calc_trig",
        "nemesispy.common.interpolate_gcm",
        "nemesispy.common.calc_hydrostat",
        "nemesispy.radtran.calc_planck",
        "nemesispy.radtran.calc_tau_cia",
        "nemesispy.radtran.calc_tau_gas",
        "nemesispy.radtran.calc_tau_rayleigh",
        "nemesispy.radtran.calc_layer",
        "nemesispy.radtran.calc_radiance",
    ):
        mod = importlib.import_module(mod_name)
        for obj in vars(mod).values():
            if isinstance(obj, CPUDispatcher) and obj._cache.__class__.__name__ == "NullCache":
                try:
                    obj.enable_caching()
                except (OSError, RuntimeError):  # pragma: no cover - read-only install: compile every time
                    return


def read_kta(filepath: str | Path):
    """nemesispy's ``read_kta`` for numpy >= 2: (gas_id, iso_id, wave_grid, g_ord, del_g, P_grid [Pa],
    T_grid [K], k (NWAVE, NG, NPRESS, NTEMP) float32)."""
    from nemesispy.common.constants import ATM

    with open(filepath, "rb") as f:
        head_i = np.fromfile(f, dtype="int32", count=2)
        head_f = np.fromfile(f, dtype="float32", count=3)
        head_i2 = np.fromfile(f, dtype="int32", count=5)
        irec0, nwave = int(head_i[0]), int(head_i[1])
        vmin, delv = float(head_f[0]), float(head_f[1])
        npress, ntemp, ng, gas_id, iso_id = (int(x) for x in head_i2)
        g_ord = np.fromfile(f, dtype="float32", count=ng)
        del_g = np.fromfile(f, dtype="float32", count=ng)
        np.fromfile(f, dtype="float32", count=2)
        p_grid = np.fromfile(f, dtype="float32", count=npress) * np.float32(ATM)
        t_grid = np.fromfile(f, dtype="float32", count=ntemp)
        if delv > 0.0:
            wave = np.linspace(vmin, delv * (nwave - 1) + vmin, nwave)
        else:
            wave = np.fromfile(f, dtype="float32", count=nwave)
        f.seek((irec0 - 1) * 4, 0)
        k = np.fromfile(f, dtype="float32", count=ntemp * npress * ng * nwave)
    if k.size != ntemp * npress * ng * nwave:
        raise ValueError(f"expected {ntemp * npress * ng * nwave} k-coefficients in {filepath}, got {k.size}")
    k = k.reshape(nwave, npress, ntemp, ng).transpose(0, 3, 1, 2)
    return gas_id, iso_id, np.float64(wave), g_ord, del_g, p_grid, t_grid, np.ascontiguousarray(k, dtype=np.float32)


class Wasp43bModel:
    """The WASP-43b GCM, the observations and a ready ``ForwardModel`` (opacities loaded)."""

    def __init__(self) -> None:
        _require_nemesispy()
        enable_numba_cache()
        from nemesispy.data.gcm import process_gcm as g
        from nemesispy.data.helper import cia_file_path, lowres_file_paths
        from nemesispy.radtran.forward_model import ForwardModel
        from nemesispy.radtran.read import read_cia

        self.gcm_lon = np.asarray(g.xlon, dtype=np.float64)  # (64,) -177.19 .. 177.19, substellar at 0
        self.gcm_lat = np.asarray(g.xlat, dtype=np.float64)  # (32,)
        self.gcm_p = np.asarray(g.pv, dtype=np.float64)  # (53,) Pa, descending
        self.tmap = np.asarray(g.tmap, dtype=np.float64)  # (lon, lat, p)
        self.vmrmap = np.asarray(g.vmrmap, dtype=np.float64)  # (lon, lat, p, 6) in GAS_NAMES order
        self.tmap_mod = np.asarray(g.tmap_mod, dtype=np.float64)
        self.vmrmap_mod = np.asarray(g.vmrmap_mod, dtype=np.float64)  # global-average VMRs (Irwin 2020)
        self.phases = np.asarray(g.phase_grid, dtype=np.float64)  # (15,) degrees, 180 = secondary eclipse
        self.wavelengths = np.asarray(g.wave_grid, dtype=np.float64)  # (17,) micron
        self.obs = np.asarray(g.kevin_phase_by_wave[..., 0], dtype=np.float64)  # (15, 17) Fp/Fs
        self.err = np.asarray(g.kevin_phase_by_wave[..., 1], dtype=np.float64)
        self.irwin2020 = np.asarray(g.pat_phase_by_wave, dtype=np.float64)  # Fortran NEMESIS, (15, 17)
        self.stellar = np.asarray(g.wasp43_spec, dtype=np.float64)
        self.M_plt = float(g.M_plt)
        self.R_plt = float(g.R_plt)
        if list(g.gas_id) != list(GAS_IDS):
            raise ValueError(f"expected nemesispy gas ids {list(GAS_IDS)}, got {list(g.gas_id)}")
        # nemesispy stores the grid rounded to 5 digits (-177.19, ..., 87.188); the GCM grid is exactly
        # evenly spaced (5.625 deg, cell centres): the dataset carries the exact values, no regridding.
        nlon, nlat = len(self.gcm_lon), len(self.gcm_lat)
        self.lon_exact = -180.0 + 360.0 / nlon * (np.arange(nlon) + 0.5)
        self.lat_exact = -90.0 + 180.0 / nlat * (np.arange(nlat) + 0.5)
        if np.abs(self.lon_exact - self.gcm_lon).max() > 0.01 or np.abs(self.lat_exact - self.gcm_lat).max() > 0.01:
            raise ValueError(
                f"expected a global, evenly spaced GCM grid, got lon {self.gcm_lon.tolist()} lat {self.gcm_lat.tolist()}"
            )

        fm = ForwardModel()
        fm.set_planet_model(
            M_plt=self.M_plt, R_plt=self.R_plt, gas_id_list=np.array(GAS_IDS), iso_id_list=np.zeros(6, dtype=int), NLAYER=NLAYER
        )
        tables = [read_kta(p) for p in lowres_file_paths]
        fm.k_gas_id_list = np.float32([t[0] for t in tables])
        fm.k_iso_id_list = np.float32([t[1] for t in tables])
        fm.wave_grid, fm.g_ord, fm.del_g, fm.k_table_P_grid, fm.k_table_T_grid = tables[0][2:7]
        fm.k_gas_w_g_p_t = np.float32([t[7] for t in tables])
        fm.cia_nu_grid, fm.cia_T_grid, fm.k_cia_pair_t_w = read_cia(cia_file_path)
        fm.is_opacity_data_set = True
        if not np.allclose(fm.wave_grid, self.wavelengths, rtol=1e-5):
            raise ValueError(f"expected k-table wavelengths {self.wavelengths.tolist()}, got {fm.wave_grid.tolist()}")
        self.fm = fm
        self.P_model = np.geomspace(P_BOTTOM_PA, P_TOP_PA, NLAYER)
        # GCM levels that bracket the forward model's pressure range (the only ones entering the spectrum)
        lo = int(np.nonzero(self.gcm_p >= P_BOTTOM_PA)[0][-1])
        hi = int(np.nonzero(self.gcm_p <= P_TOP_PA)[0][0])
        self.level_slice = slice(lo, hi + 1)

    def spectra(self, tmap: np.ndarray, vmrmap: np.ndarray, phase_index: np.ndarray | None = None) -> np.ndarray:
        """Fp/Fs (P, W) [ppm] of a GCM-shaped T (lon, lat, p) and VMR (lon, lat, p, 6) at the observed
        phases (or the ``phase_index`` subset of them)."""
        phases = self.phases if phase_index is None else self.phases[np.asarray(phase_index)]
        t = np.ascontiguousarray(tmap, dtype=np.float64)
        v = np.ascontiguousarray(vmrmap, dtype=np.float64)
        out = np.stack(
            [
                self.fm.calc_disc_spectrum(
                    phase=float(ph), nmu=NMU, P_model=self.P_model, global_model_P_grid=self.gcm_p,
                    global_T_model=t, global_VMR_model=v, mod_lon=self.gcm_lon, mod_lat=self.gcm_lat,
                    solspec=self.stellar,
                )
                for ph in phases
            ]
        )
        return out * 1e6


# ----------------------------------------------------------------------------------------------------
# perturbations


def sample_params(rng: np.random.Generator) -> np.ndarray:
    """One draw of the 10 perturbation parameters (``PLANET_PARAM_NAMES`` order)."""
    return np.concatenate(
        [
            [rng.uniform(*PARAM_RANGES["T_scale"]), rng.uniform(*PARAM_RANGES["day_night_contrast"])],
            rng.uniform(*PARAM_RANGES["dT"], size=len(OFFSET_NODES_PA)),
            rng.uniform(*PARAM_RANGES["log10_f"], size=len(TRACE_GASES)),
        ]
    )


def perturb(tmap: np.ndarray, vmrmap: np.ndarray, lat_deg: np.ndarray, p_pa: np.ndarray, params) -> tuple[np.ndarray, np.ndarray]:
    """Apply the perturbation ``params`` (``PLANET_PARAM_NAMES`` order) to T (lon, lat, p) and VMR
    (lon, lat, p, 6); returns new arrays (T clipped to the k-table range, VMRs summing to 1)."""
    params = np.asarray(params, dtype=np.float64)
    if params.shape != (len(PLANET_PARAM_NAMES),):
        raise ValueError(f"expected {len(PLANET_PARAM_NAMES)} perturbation parameters, got shape {params.shape}")
    t_scale, contrast = params[0], params[1]
    offsets, log_f = params[2:6], params[6:10]
    w = np.cos(np.deg2rad(lat_deg))[None, :, None]
    t_mean = (tmap * w).sum(axis=(0, 1), keepdims=True) / (w.sum() * tmap.shape[0])
    t = t_mean + contrast * (tmap - t_mean)
    nodes = np.log10(np.asarray(OFFSET_NODES_PA))  # descending in pressure
    dT = np.interp(np.log10(p_pa), nodes[::-1], offsets[::-1])  # np.interp clamps beyond the end nodes
    t = np.clip(t * t_scale + dT[None, None, :], *T_CLIP)

    vmr = vmrmap.copy()
    for j, g in enumerate(TRACE_GASES):
        vmr[..., g] = vmrmap[..., g] * 10.0 ** log_f[j]
    trace = vmr[..., list(TRACE_GASES)].sum(axis=-1)
    fill_old = vmrmap[..., 4] + vmrmap[..., 5]
    scale = (1.0 - trace) / fill_old
    if np.any(scale <= 0):
        raise ValueError(f"expected trace-gas VMRs below 1 after scaling, got max {trace.max():.3g}")
    vmr[..., 4] = vmrmap[..., 4] * scale
    vmr[..., 5] = vmrmap[..., 5] * scale
    return t, vmr


def chi_squared(pred, obs, err) -> float:
    """sum(((pred - obs) / err)^2) over all phases and wavelengths (same units for all three)."""
    pred, obs, err = (np.asarray(a, dtype=np.float64) for a in (pred, obs, err))
    if pred.shape != obs.shape or err.shape != obs.shape:
        raise ValueError(f"expected pred, obs and err of one shape, got {pred.shape}, {obs.shape}, {err.shape}")
    if np.any(err <= 0):
        raise ValueError("expected positive errors, got some <= 0")
    return float((((pred - obs) / err) ** 2).sum())


def load_observations(data_dir: str | Path) -> dict[str, Any]:
    """``observations.json`` of a WASP-43b dataset as numpy arrays: ``phases`` (P,) [deg], ``wavelengths``
    (W,) [micron], ``spectrum`` / ``error`` (P, W) observed Fp/Fs and 1-sigma error, ``gcm_spectrum`` (P, W)
    forward model of the unperturbed GCM, ``gcm_chi_squared``, ``units`` and the rest of the metadata."""
    path = Path(data_dir) / "observations.json"
    if not path.exists():
        raise FileNotFoundError(f"expected {path} (written by `astrobio-hf data spectra`)")
    d = json.loads(path.read_text())
    for key in ("phases", "wavelengths", "spectrum", "error", "gcm_spectrum", "irwin2020_spectrum"):
        if key in d and d[key] is not None:
            d[key] = np.asarray(d[key], dtype=np.float64)
    return d


def load_pairs(data_dir: str | Path, split: str) -> dict[str, Any]:
    """All (cube, spectrum) pairs of ``split`` as numpy arrays, read straight from the shards (no torch,
    no nemesispy): ``fields`` (N, V, Z, Y, X) float32 (the single time step), ``spectrum`` (N, P, W)
    float32 [``schema.spectrum_units``], ``planet_params`` (N, 10) float32, ``planet_id`` (N,) and the
    ``schema``. The forecasting windows of ``build_window_dataset`` need n_time >= 2, these rows have 1."""
    import pyarrow.parquet as pq

    from .schema import DatasetSchema

    schema = DatasetSchema.from_dir(data_dir)
    if not schema.has_spectra:
        raise ValueError(f"expected a dataset with spectra in {data_dir}, got spectrum_wavelengths = None")
    V, Z, Y, X = schema.cube_shape
    P, W = schema.spectrum_shape
    fields, spectra, params, ids = [], [], [], []
    for name in schema.shard_files(split):
        table = pq.read_table(Path(data_dir) / name, columns=["planet_id", "n_time", "fields", "planet_params", "spectrum"])
        for row in table.to_pylist():
            if row["n_time"] != 1:
                raise ValueError(f"expected n_time = 1 rows, got {row['n_time']} for {row['planet_id']}")
            fields.append(np.asarray(row["fields"], dtype=np.float32).reshape(V, Z, Y, X))
            spectra.append(np.asarray(row["spectrum"], dtype=np.float32).reshape(P, W))
            params.append(np.asarray(row["planet_params"], dtype=np.float32))
            ids.append(row["planet_id"])
    return {
        "fields": np.stack(fields),
        "spectrum": np.stack(spectra),
        "planet_params": np.stack(params),
        "planet_id": ids,
        "schema": schema,
    }


# ----------------------------------------------------------------------------------------------------
# dataset


def _cube(model: Wasp43bModel, t: np.ndarray, vmr: np.ndarray, lon_order: np.ndarray) -> np.ndarray:
    """(V, 1, 1, Z, Y, X) float32 cube from GCM-shaped (lon, lat, p) arrays."""
    sl = model.level_slice
    fields = [t[..., sl]] + [np.log10(np.maximum(vmr[..., sl, g], 1e-30)) for g in range(len(GAS_NAMES))]
    cube = np.stack(fields)[:, lon_order]  # (V, X, Y, Z)
    return np.ascontiguousarray(cube.transpose(0, 3, 2, 1)[:, None, None], dtype=np.float32)


def _constants(model: Wasp43bModel, vmr: np.ndarray) -> dict[str, float]:
    from nemesispy.radtran.calc_mmw import calc_mmw

    mean_vmr = vmr[..., model.level_slice, :].reshape(-1, len(GAS_NAMES)).mean(axis=0)
    mmw = float(calc_mmw(np.array(GAS_IDS), mean_vmr))  # kg per molecule
    r_specific = R_UNIVERSAL / (mmw * 6.02214076e23)
    return {
        "gravity": GRAV_CONST * model.M_plt / model.R_plt**2,
        "gas_constant": r_specific,
        "heat_capacity": 3.5 * r_specific,  # ideal diatomic (H2-dominated) gas
        "planet_radius": model.R_plt,
    }


def build_spectra_dataset(
    output_dir: str | Path = "data/wasp43b",
    *,
    n_samples: int = 40,
    seed: int = 0,
    phase_index: list[int] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    series_per_shard: int = 4,
    model: Wasp43bModel | None = None,
):
    """Build ``n_samples`` (cube, spectrum) pairs of perturbed WASP-43b into ``output_dir`` and return the
    schema. ``phase_index`` restricts the spectra to a subset of the 15 observed phases (tests); splits
    are by sample (``split_by="planet"``, one perturbed planet per sample). Writes ``observations.json``
    with the observations, the unperturbed GCM's spectrum and its chi-squared."""
    from .schema import Series, write_dataset

    if n_samples < 3:
        raise ValueError(f"expected n_samples >= 3 (one per split), got {n_samples}")
    t0 = time.perf_counter()
    model = model or Wasp43bModel()
    pidx = np.arange(len(model.phases)) if phase_index is None else np.asarray(phase_index, dtype=int)
    if pidx.size == 0 or pidx.min() < 0 or pidx.max() >= len(model.phases):
        raise ValueError(f"expected phase indices in [0, {len(model.phases)}), got {pidx.tolist()}")
    phases = model.phases[pidx]
    obs, err = model.obs[pidx] * 1e6, model.err[pidx] * 1e6

    gcm_spec = model.spectra(model.tmap, model.vmrmap, pidx)
    gcm_chi2 = chi_squared(gcm_spec, obs, err)
    irwin = model.irwin2020[pidx] * 1e6
    logger.info("unperturbed GCM: chi2 %.1f over %d points (%.1fs incl. numba compile)", gcm_chi2, obs.size, time.perf_counter() - t0)

    lon360 = np.mod(model.lon_exact, 360.0)
    lon_order = np.argsort(lon360)
    rng = np.random.default_rng(seed)
    series = []
    for i in range(n_samples):
        params = sample_params(rng)
        t, vmr = perturb(model.tmap, model.vmrmap, model.gcm_lat, model.gcm_p, params)
        spec = model.spectra(t, vmr, pidx)
        if not np.all(np.isfinite(spec)):
            raise ValueError(f"expected finite spectra, got non-finite values for sample {i} (params {params.tolist()})")
        series.append(
            Series(
                planet_id=f"wasp43b-{i:04d}",
                segment=0,
                fields=_cube(model, t, vmr, lon_order),
                planet_params=params.astype(np.float32),
                constants=_constants(model, vmr),
                spectrum=spec[None].astype(np.float32),  # (T=1, P, W)
            )
        )
        if (i + 1) % 10 == 0:
            logger.info("%d/%d samples (%.1fs)", i + 1, n_samples, time.perf_counter() - t0)

    n_test = max(1, round(test_fraction * n_samples))
    n_val = max(1, round(val_fraction * n_samples))
    order = np.random.default_rng(seed + 1).permutation(n_samples)
    split_index = {
        "train": sorted(order[n_val + n_test :].tolist()),
        "val": sorted(order[:n_val].tolist()),
        "test": sorted(order[n_val : n_val + n_test].tolist()),
    }
    levels = model.gcm_p[model.level_slice]
    schema = write_dataset(
        output_dir,
        {k: [series[i] for i in v] for k, v in split_index.items()},
        variable_names=list(VARIABLE_NAMES),
        units=dict(VARIABLE_UNITS),
        level_values=levels.tolist(),
        level_unit="Pa",
        lat_values=model.lat_exact.tolist(),
        lon_values=lon360[lon_order].tolist(),
        climate_time_step=1.0,
        climate_time_unit="day",
        geological_time_values=[0.0],
        geological_time_unit="Myr",
        planet_param_names=list(PLANET_PARAM_NAMES),
        planet_param_units=list(PLANET_PARAM_UNITS),
        split_by="planet",
        source=f"astrobio_hf.data.spectra.build_spectra_dataset(n_samples={n_samples}, seed={seed}): "
        "nemesispy 0.0.10 WASP-43b SPARC/MITgcm GCM, perturbed",
        series_per_shard=series_per_shard,
        extra={
            "wasp43b": {
                "seed": int(seed),
                "param_ranges": {k: list(v) for k, v in PARAM_RANGES.items()},
                "offset_nodes_pa": list(OFFSET_NODES_PA),
                "t_clip_k": list(T_CLIP),
                "gcm_levels_kept": [model.level_slice.start, model.level_slice.stop],
                "forward_model": {"nlayer": NLAYER, "nmu": NMU, "p_bottom_pa": P_BOTTOM_PA, "p_top_pa": P_TOP_PA},
                "splits": {k: [f"wasp43b-{i:04d}" for i in v] for k, v in split_index.items()},
            }
        },
        spectrum_wavelengths=model.wavelengths.tolist(),
        spectrum_phases=phases.tolist(),
        spectrum_units=SPECTRUM_UNITS,
        spectrum_model=SPECTRUM_MODEL,
    )
    build_s = time.perf_counter() - t0
    observations = {
        "planet": "WASP-43b",
        "units": SPECTRUM_UNITS,
        "quantity": "eclipse depth Fp/Fs",
        "phases": phases.tolist(),
        "wavelengths": model.wavelengths.tolist(),
        "spectrum": obs.tolist(),
        "error": err.tolist(),
        "observations_source": "Stevenson et al. (2017) Table 5, HST/WFC3 + Spitzer phase curve (nemesispy kevin_phase_by_wave)",
        "gcm_spectrum": gcm_spec.tolist(),
        "gcm_chi_squared": gcm_chi2,
        "gcm_reduced_chi_squared": gcm_chi2 / obs.size,
        "gcm_source": "unperturbed SPARC/MITgcm GCM (full 3-D chemistry) through the same forward model",
        "irwin2020_spectrum": irwin.tolist(),
        "irwin2020_chi_squared": chi_squared(irwin, obs, err),
        "irwin2020_source": "Fortran NEMESIS spectra of the GCM with global-average VMRs (Irwin et al. 2020 Fig. 12, nemesispy pat_phase_by_wave)",
        "n_points": int(obs.size),
        "build_seconds": build_s,
    }
    Path(output_dir, "observations.json").write_text(json.dumps(observations, indent=1))
    logger.info(
        "wrote %s: %d samples, chi2(GCM)=%.1f (reduced %.2f), %.1fs", output_dir, n_samples, gcm_chi2, gcm_chi2 / obs.size, build_s
    )
    return schema


# ------------------------------------------------------------------------------------------------------
# Reference data of the climate-spectra recipe's WASP-43b evaluation (numpy + json; torch inside)
# ------------------------------------------------------------------------------------------------------
GCM_CUBE_FILE = "gcm_cube.npy"


def write_gcm_cube(data_dir) -> None:
    """The unperturbed WASP-43b GCM as one cube (V, 1, 1, Z, Y, X) in the dataset's layout, from nemesispy's GCM
    arrays (no opacities, no forward model): the input of the chi-squared of the model's phase spectra."""
    from nemesispy.data.gcm import process_gcm as g

    from astrobio_hf.data.schema import DatasetSchema

    schema = DatasetSchema.from_dir(data_dir)
    p = np.asarray(g.pv, dtype=np.float64)
    lo = int(np.nonzero(p >= P_BOTTOM_PA)[0][-1])
    hi = int(np.nonzero(p <= P_TOP_PA)[0][0])
    level_slice = slice(lo, hi + 1)  # as Wasp43bModel
    lon = -180.0 + 360.0 / len(g.xlon) * (np.arange(len(g.xlon)) + 0.5)
    lon_order = np.argsort(np.mod(lon, 360.0))
    if not np.allclose(p[level_slice], schema.level_values, rtol=1e-6) or not np.allclose(np.mod(lon, 360.0)[lon_order], schema.lon_values):
        raise ValueError(f"expected the GCM grid of {data_dir}/schema.json, got other levels or longitudes from nemesispy")

    class _Grid:
        pass

    grid = _Grid()
    grid.level_slice = level_slice
    cube = _cube(grid, np.asarray(g.tmap, dtype=np.float64), np.asarray(g.vmrmap, dtype=np.float64), lon_order)
    np.save(Path(data_dir) / GCM_CUBE_FILE, cube)


def load_wasp43b_reference(data_dir, schema) -> dict:
    """observations.json (observed Fp/Fs, errors, the unperturbed GCM's forward-model spectrum and chi-squared) and
    the GCM's cube as tensors. Numpy + json only: the training stack does not import nemesispy."""
    import torch

    path = Path(data_dir) / "observations.json"
    if not path.is_file():
        raise ValueError(f"expected {path} (written by `astrobio-hf data spectra`), got no such file")
    obs = json.loads(path.read_text())
    P, W = schema.spectrum_shape
    ref = {k: torch.tensor(obs[k], dtype=torch.float64) for k in ("spectrum", "error", "gcm_spectrum")}
    for k, v in ref.items():
        if tuple(v.shape) != (P, W):
            raise ValueError(f"expected observations.json {k} of shape (P, W) = {(P, W)}, got {tuple(v.shape)}")
    cube = torch.from_numpy(np.load(Path(data_dir) / GCM_CUBE_FILE)).float()
    return {**ref, "gcm_cube": cube, "gcm_chi_squared": float(obs["gcm_chi_squared"]), "n_points": int(obs["n_points"]),
            "phases": obs["phases"], "wavelengths": obs["wavelengths"], "units": obs["units"]}

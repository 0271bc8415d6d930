"""Text about planets of a datacube dataset, for the pipeline's integration and LLM-guided phases (issue 16).

Two kinds of rows, one per training window (a window is what the planet encoder reads):

* **descriptions** (the integration phase, LLaVA's first stage: the frozen encoder's cube tokens are projected
  into the language model, which learns to say what the planet is): the planet's stated parameters (schema
  `planet_param_names` / `planet_param_units`) and its regime (`planet_regime_names`), as one sentence;
* **questions** answered from the cube (the LLM-guided phase): its regime; whether it is above freezing (the
  window's own global-mean surface temperature, the schema's rule: lowest level's T, mean over time and longitude,
  cos(latitude)-weighted; 273.15 K); its stellar-flux range (terciles of the *training* planets' stellar flux,
  stated in the question's answer with their bounds).

Every row keeps the planet id, the window's position (segment, start) and the split, so a model can pair it with
the window's cube; a test split's answers come from its own cubes and the training split's tercile bounds. A
dataset without regime labels or without a stellar-flux parameter has no such questions: the row builder says
which question types it can make and refuses an asked-for type it cannot (one line).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

QUESTION_TYPES = ("regime", "above_freezing", "stellar_flux_range")
FREEZING_K = 273.15
FLUX_RANGES = ("low", "medium", "high")


@dataclass(frozen=True)
class WindowFacts:
    """What the text says about one window: stated parameters and regime, and what its cube shows."""

    planet_id: str
    segment: int
    start: int
    params: dict[str, float]
    regime: str | None
    surface_temperature_k: float


def window_facts(data_dir, split: str, *, context_steps: int, stride: int = 1, schema=None) -> Iterator[WindowFacts]:
    """The facts of every window of `split` (the same windows as the encoder's recipe reads with this
    context and stride), streamed from the shards."""
    from .schema import DatasetSchema
    from .streaming import build_window_dataset

    schema = schema or DatasetSchema.from_dir(data_dir)
    windows = build_window_dataset(data_dir, split, context_steps=context_steps, stride=stride, shuffle_buffer=0, seed=0, rank=0,
                                   world_size=1, schema=schema)
    for w in windows:
        yield facts_of_window(w, schema)


def facts_of_window(w: dict, schema) -> WindowFacts:
    """The facts of one streamed window (a row of `build_window_dataset`)."""
    from .synth import global_mean_surface_temperature

    names = list(schema.variable_names)
    if "T" not in names:
        raise ValueError(f"expected a temperature variable 'T' for the surface temperature, got variables {names}")
    regimes = list(schema.planet_regime_names or [])
    cube = np.asarray(w["inputs"], dtype=np.float64).reshape([int(s) for s in w["window_shape"]])  # (V, Tc, Tg, Z, Y, X)
    T = cube[names.index("T"), :, -1]  # the present geological epoch: (Tc, Z, Y, X)
    regime = regimes[int(w["planet_regime"])] if regimes and "planet_regime" in w and int(w["planet_regime"]) >= 0 else None
    return WindowFacts(
        planet_id=str(w["planet_id"]), segment=int(w["segment"]), start=int(w["start"]),
        params={n: float(v) for n, v in zip(schema.planet_param_names, np.asarray(w["planet_params"], dtype=np.float64))},
        regime=regime, surface_temperature_k=float(global_mean_surface_temperature(T, np.asarray(schema.lat_values, dtype=np.float64))),
    )


def encode_windows(encoder, data_dir, split: str, schema, device) -> list[dict]:
    """Every window of `split` as the frozen CNN-ViT `encoder` sees it, in the stream's order: its [CLS] embedding
    `(hidden_size,)`, its facts (`WindowFacts`) and the encoder's own answers (the regime head's class, None without
    one; the parameter head's means in physical units), for the pipeline's soft-token phases and their baselines."""
    import torch

    from astrobio_hf.evaluation.cnn_vit import model_inputs

    from .streaming import build_window_dataset, collate_windows

    regimes = list(encoder.config.regime_names or [])
    out = []
    windows = build_window_dataset(data_dir, split, context_steps=encoder.config.context_steps, stride=1, shuffle_buffer=0, seed=0,
                                   rank=0, world_size=1, schema=schema)
    with torch.no_grad():
        for w in windows:
            inputs = model_inputs(collate_windows([w]), device)["inputs"]
            prediction = encoder(inputs=inputs)  # the heads' answers and the [CLS] embedding they read, in one pass
            logits = prediction.regime_logits
            out.append({
                "embedding": prediction.embedding[0].float().cpu(), "facts": facts_of_window(w, schema),
                "predicted_regime": regimes[int(logits[0].argmax())] if logits is not None and regimes else None,
                "predicted_params": dict(zip(encoder.config.planet_param_names, prediction.mean[0].double().cpu().tolist())),
            })
    if not out:
        raise ValueError(f"expected windows of {encoder.config.context_steps} steps in split {split!r} of {data_dir}, got none")
    return out


def flux_range(flux: float, terciles: tuple[float, float]) -> str:
    """low / medium / high by the training planets' stellar-flux terciles."""
    return FLUX_RANGES[int(flux >= terciles[0]) + int(flux >= terciles[1])]


def flux_terciles(train_facts: Sequence[WindowFacts]) -> tuple[float, float]:
    """The stellar-flux bounds between low / medium / high: terciles over the training planets (one value each)."""
    per_planet = {f.planet_id: f.params["stellar_flux"] for f in train_facts if "stellar_flux" in f.params}
    if len(per_planet) < 3:
        raise ValueError(f"expected at least 3 training planets with a stellar_flux parameter for its ranges, got {len(per_planet)}")
    low, high = np.quantile(np.fromiter(per_planet.values(), dtype=np.float64), [1 / 3, 2 / 3])
    return float(low), float(high)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def describe(facts: WindowFacts, units: dict[str, str]) -> str:
    """One sentence: every stated parameter with its unit, then the regime."""
    parts = [f"{name.replace('_', ' ')} {_fmt(v)} {units.get(name, '')}".rstrip() for name, v in facts.params.items()]
    text = "A planet with " + ", ".join(parts) + "."
    if facts.regime is not None:
        text += f" Its climate is {facts.regime}."
    return text


def question_types(schema) -> list[str]:
    """The question types this dataset can answer (regime labels, stellar flux, a temperature variable)."""
    types = []
    if schema.planet_regime_names:
        types.append("regime")
    if "T" in schema.variable_names:
        types.append("above_freezing")
    if "stellar_flux" in schema.planet_param_names:
        types.append("stellar_flux_range")
    return types


def question_text(kind: str, regime_names: Sequence[str], terciles: tuple[float, float] | None) -> str:
    """The question of type `kind` (the same for every planet of a dataset)."""
    if kind == "regime":
        return f"Which climate regime is this planet in: {', '.join(regime_names)}?"
    if kind == "above_freezing":
        return "Is this planet's global-mean surface temperature above freezing (273.15 K)?"
    if kind == "stellar_flux_range":
        low, high = terciles
        return f"Is this planet's stellar flux low (below {_fmt(low)} W m-2), medium or high (above {_fmt(high)} W m-2)?"
    raise ValueError(f"expected question types among {list(QUESTION_TYPES)}, got {kind!r}")


def answer_choices(kind: str, regime_names: Sequence[str]) -> list[str]:
    """The answers a question of type `kind` allows."""
    return list(regime_names) if kind == "regime" else ["yes", "no"] if kind == "above_freezing" else list(FLUX_RANGES)


def questions(facts: WindowFacts, terciles: tuple[float, float] | None, types: Sequence[str], regime_names: Sequence[str]) -> list[dict]:
    """(type, question, answer) of each asked type for one window."""
    answers = {"regime": lambda: facts.regime, "above_freezing": lambda: "yes" if facts.surface_temperature_k >= FREEZING_K else "no",
               "stellar_flux_range": lambda: flux_range(facts.params["stellar_flux"], terciles)}
    return [{"type": kind, "question": question_text(kind, regime_names, terciles), "answer": answers[kind]()} for kind in types]


def planet_text_rows(data_dir, split: str, *, context_steps: int, stride: int = 1, types: Sequence[str] | None = None) -> dict:
    """Descriptions and questions of every window of `split`:
    `{"descriptions": [...], "questions": [...], "terciles": (low, high), "types": [...]}`, each row with the planet id,
    segment, start and split. The stellar-flux terciles always come from the training split."""
    from .schema import DatasetSchema

    schema = DatasetSchema.from_dir(data_dir)
    available = question_types(schema)
    types = list(available if types is None else types)
    missing = [t for t in types if t not in available]
    if missing:
        raise ValueError(f"expected question types this dataset can answer ({available}), got also {missing}")
    facts = list(window_facts(data_dir, split, context_steps=context_steps, stride=stride, schema=schema))
    train = facts if split == "train" else list(window_facts(data_dir, "train", context_steps=context_steps, stride=stride, schema=schema))
    terciles = flux_terciles(train) if "stellar_flux_range" in types else None
    units = dict(zip(schema.planet_param_names, schema.planet_param_units or []))
    key = lambda f: {"planet_id": f.planet_id, "segment": f.segment, "start": f.start, "split": split}  # noqa: E731
    descriptions = [{**key(f), "text": describe(f, units)} for f in facts]
    rows = [{**key(f), **q} for f in facts for q in questions(f, terciles, types, schema.planet_regime_names or [])]
    counts = {t: {} for t in types}
    for r in rows:
        counts[r["type"]][r["answer"]] = counts[r["type"]].get(r["answer"], 0) + 1
    logger.info("planet text (%s): %d windows, %d questions; answers %s", split, len(facts), len(rows), counts)
    return {"descriptions": descriptions, "questions": rows, "terciles": terciles, "types": types}


__all__ = ["QUESTION_TYPES", "WindowFacts", "answer_choices", "describe", "encode_windows", "facts_of_window", "flux_range", "flux_terciles", "planet_text_rows", "question_types", "question_text", "questions", "window_facts"]

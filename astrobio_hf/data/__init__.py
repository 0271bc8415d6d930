"""Data: on-disk schema, synthesis, NetCDF ingestion, streaming windows and inspection.

Submodules are imported on first use so that ``import astrobio_hf.data.schema`` stays light
(``streaming`` pulls in ``datasets`` and ``torch``, ``ingest`` pulls in ``xarray``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "DatasetSchema": "schema",
    "Series": "schema",
    "ShardInfo": "schema",
    "write_dataset": "schema",
    "build_window_dataset": "streaming",
    "collate_windows": "streaming",
    "count_windows": "streaming",
    "ingest_netcdf": "ingest",
    "describe_dataset": "inspect",
    "dataset_statistics": "inspect",
    "synthesize_planets": "synth",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .ingest import ingest_netcdf
    from .inspect import dataset_statistics, describe_dataset
    from .schema import DatasetSchema, Series, ShardInfo, write_dataset
    from .streaming import build_window_dataset, collate_windows, count_windows
    from .synth import synthesize_planets


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Reading a dataset folder's ``schema.json``: the checks every table-like dataset (metabolic graphs, instructions,
numeric tables) makes before its own, with the same one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_schema_json(data_dir: str | os.PathLike, filename: str, *, kind: str, what: str, hint: str, version_key: str,
                     version: int) -> tuple[Path, dict[str, Any]]:
    """``(path, schema)`` of ``data_dir/filename``: ``FileNotFoundError`` naming the file, `what` was expected and
    `hint` (how to build it); ``ValueError`` for unreadable JSON, another ``kind`` or another ``version_key``."""
    path = Path(data_dir) / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: expected {what} in {data_dir}; {hint}")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(schema, dict) or schema.get("kind") != kind:
        got = schema.get("kind") if isinstance(schema, dict) else type(schema).__name__
        raise ValueError(f"{path}: expected kind {kind!r}, got {got!r}")
    if schema.get(version_key) != version:
        raise ValueError(f"{path}: expected {version_key} {version}, got {schema.get(version_key)!r}")
    return path, schema

"""Model cards and releases."""

from .model_card import build_model_card, markdown_table

__all__ = ["build_model_card", "markdown_table"]

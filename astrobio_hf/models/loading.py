"""What every family's `PreTrainedModel` shares on top of transformers' loading."""

from __future__ import annotations

import os

from safetensors import SafetensorError


class ClearLoadingErrorsMixin:
    """`from_pretrained` that names the file when the weights cannot be read.

    safetensors reports a truncated or corrupted file as "Error while deserializing header: incomplete
    metadata, file not fully covered", without the path; this re-raises it as a ValueError that names the
    checkpoint and what to do about it.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as err:
            where = os.fspath(pretrained_model_name_or_path)
            raise ValueError(
                f"could not read the weights of {where!r} ({err}): expected a complete safetensors file; this one "
                "is truncated or corrupted. Save or download the model again."
            ) from err

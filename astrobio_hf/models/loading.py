"""What every family's `PreTrainedModel` shares on top of transformers' loading."""

from __future__ import annotations

import os

from safetensors import SafetensorError


CONFIG_NAME = "config.json"


class ClearLoadingErrorsMixin:
    """`from_pretrained` that names the file when the config is missing or the weights cannot be read.

    A local folder without `config.json` (and no `config=` given) would otherwise be loaded into a default
    config and fail later on mismatched sizes; this raises a FileNotFoundError naming the folder, the missing
    file and what the folder holds.

    safetensors reports a truncated or corrupted file as "Error while deserializing header: incomplete
    metadata, file not fully covered", without the path; this re-raises it as a ValueError that names the
    checkpoint and what to do about it.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        if pretrained_model_name_or_path is not None and kwargs.get("config") is None:
            folder = os.fspath(pretrained_model_name_or_path)
            if kwargs.get("subfolder"):
                folder = os.path.join(folder, kwargs["subfolder"])
            if os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, CONFIG_NAME)):
                found = sorted(os.listdir(folder))
                raise FileNotFoundError(
                    f"expected {CONFIG_NAME} in {folder!r} (a save_pretrained output), found {found}; save the model "
                    "again with save_pretrained, or pass config= to from_pretrained"
                )
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as err:
            where = os.fspath(pretrained_model_name_or_path)
            raise ValueError(
                f"could not read the weights of {where!r} ({err}): expected a complete safetensors file; this one "
                "is truncated or corrupted. Save or download the model again."
            ) from err

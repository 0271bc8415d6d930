"""astrobio-hf: a Hugging Face-ecosystem training stack for astrobiology models.

Importing the package imports the model families and registers them with the transformers Auto classes; nothing
else happens at import. Other sub-packages (`astrobio_hf.physics`, `.data`, `.training`, `.metrics`, `.diffusion`,
`.hub`) are imported by path.
"""

import importlib.util as _importlib_util
import logging as _logging
import os as _os
import sys as _sys


def _import_bitsandbytes_without_hub_kernels() -> None:
    """bitsandbytes >= 0.49 (imported by diffusers and peft) calls the Hub at import on a CPU with AVX512-BF16, to
    fetch an optional CPU kernel (`kernels.get_kernel("kernels-community/...")`), and logs a warning when that
    fails: an import that makes network requests breaks offline machines, the loopback Hub of the tests, and the
    one-line error contract. Import it once here with `kernels` unavailable, so it keeps its own built-in CPU
    kernels, and without that warning; `kernels` stays importable for everything else afterwards. Set
    ASTROBIO_HF_HUB_KERNELS=1 to let bitsandbytes fetch the Hub kernel."""
    if _os.environ.get("ASTROBIO_HF_HUB_KERNELS") == "1" or "bitsandbytes" in _sys.modules:
        return
    if _importlib_util.find_spec("bitsandbytes") is None:
        return
    logger = _logging.getLogger("bitsandbytes.backends.cpu.ops")
    level, had_kernels, kernels = logger.level, "kernels" in _sys.modules, _sys.modules.get("kernels")
    _sys.modules["kernels"] = None  # `from kernels import get_kernel` raises ImportError, which bitsandbytes handles
    logger.setLevel(_logging.ERROR)
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # a broken bitsandbytes install is reported where it is used (QLoRA), not here
        pass
    finally:
        logger.setLevel(level)
        if had_kernels:
            _sys.modules["kernels"] = kernels
        else:
            del _sys.modules["kernels"]


_import_bitsandbytes_without_hub_kernels()

from transformers import AutoConfig, AutoModel  # noqa: E402

from .models.causal_world_model import CausalWorldModel, CausalWorldModelConfig, CausalWorldModelOutput
from .models.climate_diffusion import ClimateDiffusionConfig, ClimateDiffusionModel, ClimateDiffusionOutput
from .models.climate_spectra import ClimateSpectraConfig, ClimateSpectraForMultiTask, ClimateSpectraOutput
from .models.cnn_vit import CnnVitConfig, CnnVitForParameterRegression
from .models.datacube_unet import (
    DatacubeForecastOutput,
    DatacubeUNetConfig,
    DatacubeUNetForForecast,
    DatacubeUNetModel,
)
from .models.legacy_pathway_vae import LegacyPathwayVAEConfig, LegacyPathwayVAEModel, LegacyPathwayVAEOutput
from .models.pathway_vae import PathwayVAEConfig, PathwayVAEModel, PathwayVAEOutput
from .models.planet_assistant import PlanetAssistant, PlanetAssistantConfig
from .models.planet_projector import PlanetProjector, PlanetProjectorConfig


__version__ = "0.1.0"

AutoConfig.register("causal_world_model", CausalWorldModelConfig, exist_ok=True)
AutoModel.register(CausalWorldModelConfig, CausalWorldModel, exist_ok=True)
AutoConfig.register("datacube_unet", DatacubeUNetConfig, exist_ok=True)
AutoModel.register(DatacubeUNetConfig, DatacubeUNetForForecast, exist_ok=True)
AutoConfig.register("climate_diffusion", ClimateDiffusionConfig, exist_ok=True)
AutoModel.register(ClimateDiffusionConfig, ClimateDiffusionModel, exist_ok=True)
AutoConfig.register("climate_spectra", ClimateSpectraConfig, exist_ok=True)
AutoModel.register(ClimateSpectraConfig, ClimateSpectraForMultiTask, exist_ok=True)
AutoConfig.register("cnn_vit", CnnVitConfig, exist_ok=True)
AutoModel.register(CnnVitConfig, CnnVitForParameterRegression, exist_ok=True)
AutoConfig.register("legacy_pathway_vae", LegacyPathwayVAEConfig, exist_ok=True)
AutoModel.register(LegacyPathwayVAEConfig, LegacyPathwayVAEModel, exist_ok=True)
AutoConfig.register("pathway_vae", PathwayVAEConfig, exist_ok=True)
AutoModel.register(PathwayVAEConfig, PathwayVAEModel, exist_ok=True)
AutoConfig.register("planet_assistant", PlanetAssistantConfig, exist_ok=True)
AutoModel.register(PlanetAssistantConfig, PlanetAssistant, exist_ok=True)
AutoConfig.register("planet_projector", PlanetProjectorConfig, exist_ok=True)
AutoModel.register(PlanetProjectorConfig, PlanetProjector, exist_ok=True)

__all__ = [
    "CausalWorldModel",
    "CausalWorldModelConfig",
    "CausalWorldModelOutput",
    "ClimateDiffusionConfig",
    "ClimateDiffusionModel",
    "ClimateDiffusionOutput",
    "ClimateSpectraConfig",
    "ClimateSpectraForMultiTask",
    "ClimateSpectraOutput",
    "CnnVitConfig",
    "CnnVitForParameterRegression",
    "DatacubeForecastOutput",
    "DatacubeUNetConfig",
    "DatacubeUNetForForecast",
    "DatacubeUNetModel",
    "LegacyPathwayVAEConfig",
    "LegacyPathwayVAEModel",
    "LegacyPathwayVAEOutput",
    "PathwayVAEConfig",
    "PathwayVAEModel",
    "PathwayVAEOutput",
    "PlanetAssistant",
    "PlanetAssistantConfig",
    "PlanetProjector",
    "PlanetProjectorConfig",
    "__version__",
]

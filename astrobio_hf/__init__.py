"""astrobio-hf: a Hugging Face-ecosystem training stack for astrobiology models.

Importing the package imports the model families and registers them with the transformers Auto classes; nothing
else happens at import. Other sub-packages (`astrobio_hf.physics`, `.data`, `.training`, `.metrics`, `.diffusion`,
`.hub`) are imported by path.
"""

from transformers import AutoConfig, AutoModel

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
    "__version__",
]

"""EVEv2 as a library on transformers 5: configuration, modeling, processing, loading, training and evaluation.

    from model import load_pretrained
    model, processor = load_pretrained("BAAI/EVE-7B-HD-v2.0", device="cuda")
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_eve import EveConfig
from .image_processing_eve import EveImageProcessor
from .loading import load_pretrained
from .modeling_eve import EveForCausalLM, EveModel
from .processing_eve import EveProcessor

AutoConfig.register(EveConfig.model_type, EveConfig)
AutoModel.register(EveConfig, EveModel)
AutoModelForCausalLM.register(EveConfig, EveForCausalLM)

__all__ = ["EveConfig", "EveForCausalLM", "EveImageProcessor", "EveModel", "EveProcessor", "load_pretrained"]

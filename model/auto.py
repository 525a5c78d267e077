"""Registers EVEv2 (`model_type "eve-qwen2"`) with transformers' Auto classes.

Imported by `model` as soon as any of its classes or `load_pretrained` is used; import it yourself to use only the
Auto classes:

    import model.auto  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoProcessor
    model = AutoModelForCausalLM.from_pretrained("assets/eve-tiny")
    processor = AutoProcessor.from_pretrained("assets/eve-tiny")
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoProcessor

from .configuration_eve import EveConfig
from .image_processing_eve import EveImageProcessor
from .modeling_eve import EveForCausalLM, EveModel
from .processing_eve import EveProcessor

AutoConfig.register(EveConfig.model_type, EveConfig, exist_ok=True)
AutoModel.register(EveConfig, EveModel, exist_ok=True)
AutoModelForCausalLM.register(EveConfig, EveForCausalLM, exist_ok=True)
AutoImageProcessor.register(EveConfig, image_processor_classes={"pil": EveImageProcessor}, exist_ok=True)
AutoProcessor.register(EveConfig, EveProcessor, exist_ok=True)

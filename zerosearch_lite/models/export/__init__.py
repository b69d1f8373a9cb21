"""Export: from a base model and a trained LoRA adapter to a GGUF that llama.cpp runs offline — merge (peft),
convert (`gguf_convert`, `gguf_vocab`), quantize (`quantize`, llama.cpp's own quantizer), verify
(`gguf_verify`), all driven by `pipeline`. The runtime never imports this package; only `zsl export` does.
"""

from .pipeline import ExportConfig, ExportResult, export_loaded, export_model

__all__ = ["ExportConfig", "ExportResult", "export_loaded", "export_model"]

"""One-time export of a torch sentence-embedding model to ONNX, checked against torch before it is kept.

Needs the `train` extra (torch, transformers) plus `onnx` and `onnxscript` for torch's exporter; runs once
per model, never at query time. Must not be imported by code that only encodes (see `embeddings.py`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import inspect
import json
import logging
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ZslError
from .embeddings import SETTINGS_FILE, EmbeddingSettings, pool

MIN_CHECK_COSINE = 0.999
# Mixed lengths on purpose: padding and truncation are where a wrong export shows (torch's legacy
# TorchScript exporter baked the example's attention mask into the graph: cosine 0.92-0.97 on this kind
# of batch; the torch.export-based exporter gives 1.0).
CHECK_TEXTS = (
    "Paris",
    "What is the capital of France?",
    "query: who directed the film Ed Wood",
    "Scott Derrickson is an American director, screenwriter and producer. " * 3,
    "The Laleli Mosque is an 18th-century Ottoman imperial mosque located in Laleli, Istanbul, Turkey.",
    "x",
    "Mean pooling averages the token vectors of a sentence; padded positions must not count. " * 40,
)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Hide a library's info/warning log lines (e.g. "torchvision is not installed") for a block."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _load_torch_model(folder: Path):
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return AutoModel.from_pretrained(str(folder)).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZslError(f"transformers cannot load the embedding model {folder}: {first}") from None


def _batch(folder: Path, texts: Sequence[str], max_length: int) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=0)
    encodings = tokenizer.encode_batch(list(texts))
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    return {
        "input_ids": ids,
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.zeros_like(ids),
    }


def torch_embeddings(model, batch: dict[str, np.ndarray], pooling: str) -> np.ndarray:
    """The reference: the torch model's token states pooled the same way the ONNX path pools them."""
    import torch

    names = _input_names(model)
    with torch.inference_mode():
        hidden = model(**{n: torch.from_numpy(batch[n]) for n in names}).last_hidden_state
    return pool(hidden.float().numpy(), batch["attention_mask"], pooling)  # type: ignore[arg-type]


def _input_names(model) -> list[str]:
    accepted = inspect.signature(model.forward).parameters
    return [name for name in INPUT_NAMES if name in accepted]


def export_checked(folder: Path, target: Path, settings: EmbeddingSettings) -> None:
    """Write `model.onnx`, `tokenizer.json` and the settings with the check's result into `target`.

    Raises `ZslError` (and keeps nothing) when ONNX Runtime's vectors disagree with torch's."""
    try:
        import torch
    except ImportError:
        raise ZslError(
            f"converting {folder} to ONNX needs torch and transformers (pip install 'zerosearch-lite[train]') "
            "once; or give an .onnx file"
        ) from None
    if not (folder / "tokenizer.json").is_file():
        raise ZslError(f"no tokenizer.json in {folder}: only fast (tokenizers) tokenizers are supported")
    model = _load_torch_model(folder)
    names = _input_names(model)

    class WithTokenTypes(torch.nn.Module):  # torch.export needs named inputs, not *args
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    class WithoutTokenTypes(WithTokenTypes):
        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    wrapper = (WithTokenTypes if "token_type_ids" in names else WithoutTokenTypes)(model)
    example = _batch(folder, CHECK_TEXTS[:3], settings.max_length)
    batch_dim, seq_dim = torch.export.Dim("batch"), torch.export.Dim("sequence", max=settings.max_length)
    onnx_path = target / "model.onnx"
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > 1_500_000_000
    # The exporter prints its progress on stdout, which may be a `--json` stream: send it to stderr.
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings(), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                wrapper,
                tuple(torch.from_numpy(example[n]) for n in names),
                str(onnx_path),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_shapes={n: {0: batch_dim, 1: seq_dim} for n in names},
                dynamo=True,
                external_data=large,  # protobuf caps a single file at 2 GB
            )
        except ImportError as exc:
            raise ZslError(f"torch's ONNX exporter needs onnx and onnxscript: pip install onnx onnxscript ({exc})"
                           ) from None
    shutil.copy(folder / "tokenizer.json", target / "tokenizer.json")
    check = check_against_torch(model, onnx_path, folder, settings)
    if check["min_cosine"] <= MIN_CHECK_COSINE:
        raise ZslError(
            f"the ONNX export of {folder} disagrees with torch (min cosine {check['min_cosine']:.4f} "
            f"<= {MIN_CHECK_COSINE}); nothing was cached"
        )
    record = {
        "model_id": settings.model_id,
        "source": str(folder),
        "pooling": settings.pooling,
        "max_length": settings.max_length,
        "query_prefix": settings.query_prefix,
        "passage_prefix": settings.passage_prefix,
        "check": check,
    }
    (target / SETTINGS_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")


def check_against_torch(model, onnx_path: Path, folder: Path, settings: EmbeddingSettings) -> dict:
    """Cosine between torch's and ONNX Runtime's vectors for `CHECK_TEXTS` (one padded batch)."""
    import onnxruntime
    import torch

    batch = _batch(folder, CHECK_TEXTS, settings.max_length)
    reference = torch_embeddings(model, batch, settings.pooling)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = {i.name: batch[i.name] for i in session.get_inputs()}
    exported = pool(session.run(None, feed)[0], batch["attention_mask"], settings.pooling)
    cosines = (reference * exported).sum(axis=1)
    return {
        "min_cosine": float(cosines.min()),
        "texts": len(CHECK_TEXTS),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "checked_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }

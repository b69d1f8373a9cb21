"""Export: from a base model and a trained LoRA adapter to a file that llama.cpp runs offline.

Two routes. `merged` (the default): load the base with transformers, merge the adapter (peft), write one
float GGUF, quantize it with llama.cpp's quantizer, verify it in llama.cpp against the merged model.
`adapter`: convert only the adapter into a llama.cpp LoRA GGUF that loads beside an existing GGUF base (a
small file; the base keeps its own quantization).

Every input is checked before a model loads (base architecture, adapter readable and fitting, output
path), so bad input fails in about a second. Every file is written under a hidden `.partial` name and
renamed at the very end, so an interrupted or failed export never leaves a file that looks valid. Beside
each export goes a model card, `NAME.card.json`: base, adapter, training run, quantization, verification,
timings and sha256.

    zsl export embedded --adapter runs/sim-sft/adapter --to sim.q8_0.gguf --quant q8_0
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, Field

from ...config_cli import flag
from ...errors import ZslError
from ..spec import ResolvedModel, resolve_model
from .gguf_convert import (
    Hyperparameters,
    Progress,
    adapter_weights_file,
    check_adapter_fits,
    check_architecture,
    gguf_tensor_shapes,
    read_adapter,
    write_lora,
    write_model,
)
from .quantize import FLOAT_QUANTS, QUANT_TYPES, check_quant, quantize_gguf

CARD_VERSION = 1


class ExportConfig(BaseModel):
    model: str = Field("embedded", description="Base model: embedded, a .gguf, a model folder or a hub id.",
                       json_schema_extra=flag(argument=True))
    adapter: str | None = Field(None, description="peft LoRA adapter folder to merge or convert.")
    out: str = Field(..., description="Output .gguf file; its model card goes beside it as NAME.card.json.",
                     json_schema_extra=flag("--to"))
    quant: str = Field("q8_0", description=f"One of {', '.join(QUANT_TYPES)}; the adapter route: f16 or f32.",
                       json_schema_extra=flag("--quant", "-q"))
    route: Literal["merged", "adapter"] = Field(
        "merged", description="merged: one standalone GGUF; adapter: a LoRA GGUF loaded beside a GGUF base."
    )
    verify: bool = Field(True, description="Check the result in llama.cpp against the source model.",
                         json_schema_extra=flag("--verify/--no-verify"))
    force: bool = Field(False, description="Replace an existing output file.")
    threads: int | None = Field(None, ge=1, description="Threads to quantize and verify with (default: ≤ 8).")
    dtype: Literal["float32", "auto"] = Field(
        "float32", description="Dtype to load and merge in (auto: the checkpoint's own; less memory)."
    )


@dataclass
class ExportResult:
    path: Path
    card_path: Path
    card: dict


def _silent(stage: str, done: int, total: int) -> None:
    pass


def card_path_for(out: Path) -> Path:
    return out.with_suffix(".card.json")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Staging:
    """Hidden temporary paths beside the output; whatever was not renamed into place is removed on exit
    (also on Ctrl-C). A hard kill leaves only `.NAME.gguf.*.partial` files, which nothing loads."""

    def __init__(self, out: Path):
        self.out, self.token, self.paths = out, secrets.token_hex(4), []

    def path(self, label: str) -> Path:
        path = self.out.parent / f".{self.out.name}.{self.token}.{label}.partial"
        self.paths.append(path)
        return path

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for path in self.paths:
            path.unlink(missing_ok=True)

    def publish(self, written: Path, card: dict) -> ExportResult:
        """Hash, write the card, then rename the file and its card into place."""
        card = {"card_version": CARD_VERSION, "file": self.out.name, "sha256": sha256_file(written),
                "size_bytes": written.stat().st_size, **card,
                "created": datetime.now(UTC).isoformat(timespec="seconds"), "runtime": _runtime()}
        card_tmp = self.path("card")
        card_tmp.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(written, self.out)
        os.replace(card_tmp, card_path_for(self.out))
        return ExportResult(self.out, card_path_for(self.out), card)


def _check_output(out: Path, force: bool) -> Path:
    if out.suffix != ".gguf":
        raise ZslError(f"the output must be a .gguf file: {out}")
    if not out.parent.is_dir():
        raise ZslError(f"output folder does not exist: {out.parent}")
    if out.is_dir():
        raise ZslError(f"the output is a folder: {out}")
    if out.exists() and not force:
        raise ZslError(f"{out} exists: pass --force to replace it")
    return out


def read_gguf(path: Path) -> Any:
    """A parsed GGUF header, reused while the file is unchanged: parsing a 49k-token vocabulary takes
    seconds, and one export reads the base's header up to three times."""
    stat = path.stat()
    return _read_gguf(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=2)
def _read_gguf(path: str, mtime_ns: int, size: int) -> Any:
    from gguf import GGUFReader

    return GGUFReader(path)


def _gguf_file(base: ResolvedModel) -> Path | None:
    if base.format == "gguf":
        return Path(base.path)
    return Path(base.path) / base.gguf_file if base.gguf_file else None


def base_architecture(base: ResolvedModel) -> str:
    """The base's architecture, read from its GGUF header or config.json (no weights loaded)."""
    if base.format == "http":
        raise ZslError(f"cannot export a model served over HTTP: {base.path}")
    gguf_file = _gguf_file(base)
    if gguf_file is not None:
        try:
            field = read_gguf(gguf_file).fields.get("general.architecture")
        except (ValueError, OSError) as exc:
            raise ZslError(f"unreadable GGUF {gguf_file}: {exc}") from None
        return check_architecture(field.contents() if field else None, str(gguf_file))
    config_file = Path(base.path) / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZslError(f"unreadable model config {config_file}: {exc}") from None
    return check_architecture(config.get("model_type"), str(base.path))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def training_run(adapter_dir: Path) -> dict | None:
    """The run folder a trained adapter sits in (RUN/adapter or RUN/checkpoint/adapter): config and step."""
    if adapter_dir.name != "adapter":
        return None
    for run in (adapter_dir.parent, adapter_dir.parent.parent):
        if (run / "config.json").is_file():
            state = _read_json(run / "checkpoint" / "state.json")
            step = state.get("step") if isinstance(state, dict) else None
            return {"path": str(run.resolve()), "config": _read_json(run / "config.json"), "step": step}
    return None


def describe_adapter(adapter_dir: Path, base: ResolvedModel) -> dict:
    """Check the adapter before any model loads (config and weights readable; shapes fit a GGUF base,
    whose tensor table is cheap to read); returns its entry in the card."""
    if not adapter_dir.is_dir():
        raise ZslError(f"adapter folder not found: {adapter_dir}")
    config, tensors = read_adapter(adapter_dir)
    gguf_file = _gguf_file(base)
    if gguf_file is not None:
        reader = read_gguf(gguf_file)
        hp = Hyperparameters.from_gguf(reader, str(gguf_file))
        check_adapter_fits(tensors, hp, gguf_tensor_shapes(reader))
    return {
        "path": str(adapter_dir.resolve()),
        "sha256": sha256_file(adapter_weights_file(adapter_dir)),
        "r": config.get("r"),
        "lora_alpha": config.get("lora_alpha"),
        "target_modules": config.get("target_modules"),
        "base_model_name_or_path": config.get("base_model_name_or_path"),
        "tensors": len(tensors),
    }


def _base_card(base: ResolvedModel) -> dict:
    gguf_file = _gguf_file(base)
    local = base.source in ("embedded", "local")
    return {
        "name": base.name,
        "format": base.format,
        "path": str(Path(base.path).resolve()) if local else base.path,
        "sha256": sha256_file(gguf_file) if gguf_file is not None else None,
    }


def _runtime() -> dict:
    versions: dict[str, str | None] = {}
    for package in ("zerosearch-lite", "gguf", "llama_cpp_python", "transformers", "peft", "torch"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def _vocab_writer(base: ResolvedModel, vocab_size: int) -> Callable[[Any], None]:
    from .gguf_vocab import add_from_hf_folder, copy_from_gguf

    gguf_file = _gguf_file(base)
    if gguf_file is not None:
        return lambda writer: copy_from_gguf(writer, read_gguf(gguf_file), gguf_file)
    return lambda writer: add_from_hf_folder(writer, Path(base.path), vocab_size)


# --- the merged route -----------------------------------------------------------------------------------

def export_loaded(
    model: Any,
    base: ResolvedModel,
    out: str | Path,
    *,
    quant: str = "q8_0",
    verify: bool = True,
    force: bool = False,
    threads: int | None = None,
    progress: Progress = _silent,
    card: dict | None = None,
) -> ExportResult:
    """Export a transformers model already in memory (a peft model is merged first), e.g. right after
    training. `base` says where the tokenizer comes from; `card` adds entries (adapter, run, seconds)."""
    from .gguf_verify import reference, verify_model

    started = time.perf_counter()
    out = _check_output(Path(out), force)
    quant = check_quant(quant)
    entries = dict(card or {})
    seconds: dict[str, float] = dict(entries.pop("seconds", {}))
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        raise ZslError("a 4-bit or 8-bit (bitsandbytes) model cannot be exported: export the full-precision "
                       "base with --adapter instead")
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.eval()
    with _Staging(out) as staging:
        ref = None
        if verify:
            progress("reference", 0, 1)
            ref = reference(model, gguf_file=_gguf_file(base), folder=Path(base.path))
            progress("reference", 1, 1)
        float_type = quant if quant in FLOAT_QUANTS else "f16"
        written = staging.path(float_type)
        mark = time.perf_counter()
        hp = write_model(written, model, _vocab_writer(base, model.config.vocab_size), float_type=float_type,
                         name=out.stem, progress=progress)
        seconds["write"] = time.perf_counter() - mark
        intermediate = None
        if ref is not None and quant not in FLOAT_QUANTS:
            # A quantized file's logits can only be judged loosely; its f16 source is judged strictly first,
            # so a conversion that scrambles a tensor fails here whatever the final quantization.
            progress("verify f16", 0, 1)
            mark = time.perf_counter()
            intermediate = verify_model(written, ref, float_type, threads=threads)
            seconds["verify_f16"] = time.perf_counter() - mark
            progress("verify f16", 1, 1)
        if quant not in FLOAT_QUANTS:
            progress(f"quantize {quant}", 0, 1)
            mark = time.perf_counter()
            quantized = staging.path(quant)
            quantize_gguf(written, quantized, quant, threads=threads)
            written.unlink()
            written = quantized
            seconds["quantize"] = time.perf_counter() - mark
            progress(f"quantize {quant}", 1, 1)
        verification = None
        if ref is not None:
            progress("verify", 0, 1)
            mark = time.perf_counter()
            verification = verify_model(written, ref, quant, threads=threads)
            if intermediate is not None:
                verification["f16_source"] = intermediate
            seconds["verify"] = time.perf_counter() - mark
            progress("verify", 1, 1)
        before = seconds.get("load", 0.0) + seconds.get("merge", 0.0)
        seconds["total"] = time.perf_counter() - started + before
        return staging.publish(written, {
            "route": "merged", "quant": quant, "architecture": hp.arch, "base": _base_card(base),
            "adapter": None, "training_run": None, **entries, "verification": verification,
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
        })


@contextmanager
def _no_transformers_bars() -> Iterator[None]:
    """The export draws one progress display; transformers' own bars would interleave with it. Its GGUF
    dequantizing bar is a plain tqdm, so it is switched off where that module looks it up."""
    from functools import partial
    from unittest import mock

    from tqdm.auto import tqdm
    from transformers import modeling_gguf_pytorch_utils
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        if hasattr(modeling_gguf_pytorch_utils, "tqdm"):
            with mock.patch.object(modeling_gguf_pytorch_utils, "tqdm", partial(tqdm, disable=True)):
                yield
        else:
            yield
    finally:
        hf_logging.enable_progress_bar()


def _peft_reason(exc: BaseException) -> str:
    """The informative line of a peft loading error (its first line is often only a heading)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if "mismatch" in line.lower() or "missing" in line.lower()]
    return (useful or lines or [type(exc).__name__])[0]


def _export_merged(cfg: ExportConfig, base: ResolvedModel, adapter: dict | None,
                   progress: Progress) -> ExportResult:
    from ..hf import load_causal_lm

    seconds: dict[str, float] = {}
    mark = time.perf_counter()
    progress("load base", 0, 1)
    with _no_transformers_bars():
        model = load_causal_lm(base, device="cpu", dtype=cfg.dtype)
    progress("load base", 1, 1)
    seconds["load"] = time.perf_counter() - mark
    if cfg.adapter:
        from peft import PeftModel

        mark = time.perf_counter()
        progress("merge adapter", 0, 1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model = PeftModel.from_pretrained(model, cfg.adapter).merge_and_unload()
        except Exception as exc:  # noqa: BLE001 - peft raises many types for a mismatched adapter
            reason = _peft_reason(exc)
            raise ZslError(f"the adapter {cfg.adapter} does not fit {base.name}: {reason}") from None
        progress("merge adapter", 1, 1)
        seconds["merge"] = time.perf_counter() - mark
    run = training_run(Path(cfg.adapter)) if cfg.adapter else None
    return export_loaded(
        model, base, cfg.out, quant=cfg.quant, verify=cfg.verify, force=cfg.force, threads=cfg.threads,
        progress=progress, card={"adapter": adapter, "training_run": run, "seconds": seconds},
    )


# --- the adapter route ----------------------------------------------------------------------------------

def _export_adapter(cfg: ExportConfig, base: ResolvedModel, adapter: dict | None,
                    progress: Progress) -> ExportResult:
    from .gguf_verify import verify_lora

    started = time.perf_counter()
    if adapter is None or not cfg.adapter:
        raise ZslError("the adapter route converts an adapter: pass --adapter")
    if base.format != "gguf":
        raise ZslError(
            f"the adapter route needs a GGUF base for the LoRA to load beside, and {base.name} is a "
            f"{base.format} model: export the base first, or use the merged route"
        )
    if cfg.quant not in FLOAT_QUANTS:
        raise ZslError("the adapter route writes f16 or f32 LoRA tensors (the base keeps its own "
                       "quantization): pass --quant f16")
    out = _check_output(Path(cfg.out), cfg.force)
    hp = Hyperparameters.from_gguf(read_gguf(Path(base.path)), base.path)
    with _Staging(out) as staging:
        written = staging.path(cfg.quant)
        write_lora(written, Path(cfg.adapter), hp, float_type=cfg.quant, progress=progress)
        verification = None
        if cfg.verify:
            progress("verify", 0, 1)
            verification = verify_lora(Path(base.path), written, threads=cfg.threads)
            progress("verify", 1, 1)
        return staging.publish(written, {
            "route": "adapter", "quant": cfg.quant, "architecture": hp.arch, "base": _base_card(base),
            "adapter": adapter, "training_run": training_run(Path(cfg.adapter)), "verification": verification,
            "seconds": {"total": round(time.perf_counter() - started, 2)},
        })


def export_model(cfg: ExportConfig, progress: Progress = _silent) -> ExportResult:
    """Run an export. `progress(stage, done, total)` is called as stages start and advance."""
    check_quant(cfg.quant)
    _check_output(Path(cfg.out), cfg.force)
    base = resolve_model(cfg.model)
    base_architecture(base)
    adapter = describe_adapter(Path(cfg.adapter), base) if cfg.adapter else None
    if cfg.route == "adapter":
        return _export_adapter(cfg, base, adapter, progress)
    return _export_merged(cfg, base, adapter, progress)

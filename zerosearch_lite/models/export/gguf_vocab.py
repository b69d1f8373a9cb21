"""Tokenizer metadata for an exported GGUF: copied from a GGUF base file, or built from a Hugging Face
tokenizer folder (byte-level BPE: Llama 3, SmolLM, Qwen2) with gguf's `SpecialVocab` for merges, special
tokens and the chat template.

Hand-written here: naming llama.cpp's pre-tokenizer (`tokenizer.ggml.pre`) from the one tokenizer.json
declares, because gguf has no helper for it. The export then checks llama.cpp's tokenization of the written
file against the source tokenizer, so a wrong name fails the export instead of shipping a subtly different
tokenizer. Knows nothing about tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import ZslError

# Fields of a base GGUF that an export recomputes instead of copying.
RECOMPUTED = ("general.architecture", "general.file_type", "general.quantization_version", "general.name",
              "general.type")

# The split regexes of the byte-level BPE families llama.cpp implements, as they appear in tokenizer.json.
_DIGIT_GROUPS = r"\p{N}{1,3}"  # Llama 3: numbers split in groups of up to three digits
_SINGLE_DIGITS = r"\p{N}|"  # Qwen2: every digit alone


def gguf_fields(reader: Any, prefix: str) -> list[tuple[str, Any, Any, Any]]:
    """(key, value, type, sub-type) of every field under `prefix`, strings kept as raw bytes (lossless)."""
    from gguf import GGUFValueType

    fields = []
    for key, field in reader.fields.items():
        if not key.startswith(prefix) or key in RECOMPUTED:
            continue
        main = field.types[0]
        sub = field.types[-1] if main == GGUFValueType.ARRAY else None
        if main == GGUFValueType.ARRAY:
            if sub == GGUFValueType.STRING:
                value: Any = [bytes(field.parts[i]) for i in field.data]
            else:
                value = [field.parts[i].tolist()[0] for i in field.data]
        elif main == GGUFValueType.STRING:
            value = bytes(field.parts[field.data[0]])
        else:
            value = field.parts[field.data[0]].tolist()[0]
        fields.append((key, value, main, sub))
    return fields


def copy_from_gguf(writer: Any, reader: Any, base_gguf: Path) -> None:
    """Copy the tokenizer (vocab, merges, special ids, chat template) and descriptive `general.*` fields
    from a base GGUF (`reader`: its parsed header)."""
    fields = gguf_fields(reader, "tokenizer.") + gguf_fields(reader, "general.")
    if not any(key == "tokenizer.ggml.tokens" for key, *_ in fields):
        raise ZslError(f"the base GGUF holds no tokenizer to copy: {base_gguf}")
    for key, value, vtype, sub in fields:
        writer.add_key_value(key, value, vtype, sub_type=sub)


def llama_pre_tokenizer(tokenizer_json: dict) -> str:
    """llama.cpp's name for the pre-tokenizer a byte-level BPE tokenizer.json declares."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm" if steps[1].get("use_regex", True) else _unrecognized(kinds)
    if kinds == ["Split", "ByteLevel"]:
        pattern = (steps[0].get("pattern") or {}).get("Regex", "")
        if pattern.startswith("(?i:'s|'t|'re|'ve|'m|'ll|'d)"):
            if _DIGIT_GROUPS in pattern:
                return "llama-bpe"
            if _SINGLE_DIGITS in pattern:
                return "qwen2"
    return _unrecognized(kinds)


def _unrecognized(kinds: list) -> str:
    described = "+".join(str(k) for k in kinds) or "none"
    raise ZslError(f"unrecognized pre-tokenizer in tokenizer.json ({described}): export from a GGUF base")


def _looks_special(text: str) -> bool:
    return (text.startswith("<|") and text.endswith("|>")) or text in ("<s>", "</s>", "<unk>", "<pad>")


def add_from_hf_folder(writer: Any, folder: Path, vocab_size: int) -> None:
    """Token list and types from the tokenizer, merges/special ids/chat template from gguf's SpecialVocab."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ZslError(f"no tokenizer.json in {folder}: only byte-level BPE tokenizers export from a folder")
    spec = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    model = spec.get("model") or {}
    byte_level = (spec.get("decoder") or {}).get("type") == "ByteLevel"
    if model.get("type") != "BPE" or model.get("byte_fallback") or not byte_level:
        raise ZslError(
            f"the tokenizer in {folder} is not byte-level BPE: export from a GGUF of this base instead"
        )
    pre = llama_pre_tokenizer(spec)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise ZslError(f"the tokenizer in {folder} has ids beyond the model's vocab_size {vocab_size}")
    by_id = {i: text for text, i in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            special = added[i].special or _looks_special(by_id[i])
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    if not special.merges:
        raise ZslError(f"the tokenizer in {folder} has no BPE merges")
    special.add_to_gguf(writer, quiet=True)

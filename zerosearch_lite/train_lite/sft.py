"""Stage 1b of ZeroSearch: LoRA SFT of the simulator on collected (prompt → documents) chat examples.

Loss on the response only: prompt tokens carry label -100. The loss comes from the decoder's hidden states
through `grpo_loss.hidden_logprobs`: only response positions reach the vocabulary projection, `loss_chunk`
of them at a time, recomputed in the backward, so the logits of a whole micro-batch never exist (for a 3B
model with a 152k vocabulary they were most of the peak memory). It averages over the response tokens of
the whole optimizer step, so accumulated micro-batches give the gradient of one big batch. On CUDA the
base is 4-bit NF4 with gradient checkpointing and a paged 8-bit AdamW (bitsandbytes); on CPU the same
loop runs full-precision LoRA.
A compact own loop rather than TRL's SFTTrainer: it shares checkpoint/resume code with GRPO, checkpoints
data order and RNG exactly, and needs no `datasets`. Writes `adapter/` and `merged/` in the run folder (a 4-bit
run merges into a full-precision copy of the base).

    zsl sim sft --data runs/collect/sft.jsonl --out runs/sim-sft --max-steps 40
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from ..config_cli import flag
from ..errors import ZslError
from ..saved_settings import check_rerun
from ..saved_settings import save as save_settings
from .checkpoint import find_checkpoint, load_checkpoint, save_checkpoint, swap_in
from .grpo_loss import decoder_and_head, hidden_logprobs
from .jsonl import read_records
from .modeling import LoraSettings, add_lora, load_base, load_tokenizer

IGNORE = -100
# Settings a continued run may change, because the adapter it ends with does not depend on them: where the run
# is written, how often it checkpoints (resume is exact), whether a merged copy is also written, and two memory
# knobs that compute the same thing (gradient checkpointing recomputes the same activations; loss_chunk splits
# the same sum). `max_steps` may change too, so a finished run can be continued for longer (as GRPO's --steps on
# --resume): the cosine schedule then follows the new length from the resumed step on. Every other setting (data,
# model, LoRA shape, optimizer, batch, seed, 4-bit base, ...) changes what the saved steps would have been.
RESUMABLE_SETTINGS = frozenset({"out", "max_steps", "save_every", "merge", "gradient_checkpointing", "loss_chunk"})


class SFTConfig(BaseModel):
    model: str = Field("embedded", description="Base simulator model (name, .gguf, folder or hub id).")
    data: str = Field(..., description="SFT JSONL made by `zsl sim collect` (rows with `messages`).")
    out: str = Field(..., description="Run folder: config, checkpoint, adapter/, merged/.")
    max_steps: int = Field(40, ge=1, description="Optimizer steps.")
    batch_size: int = Field(4, ge=1, description="Examples per step (before accumulation).")
    grad_accum: int = Field(1, ge=1, description="Micro-batches accumulated per optimizer step.")
    max_length: int = Field(512, ge=32, description="Tokens per example; longer ones are cut from the right.")
    loss_chunk: int = Field(512, ge=1, description="Response tokens whose vocabulary logits exist at once in the "
                            "loss (lower: less memory, more steps of the projection).")
    lr: float = Field(2e-4, gt=0, description="Peak learning rate (linear warmup, cosine decay).")
    warmup_steps: int = Field(2, ge=0, description="Steps of linear learning-rate warmup.")
    lora_r: int = Field(16, ge=1, description="LoRA rank (all linear layers).")
    lora_alpha: int | None = Field(None, ge=1, description="LoRA alpha (default: 2 × r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA branch.")
    load_in_4bit: bool | None = Field(None, json_schema_extra=flag("--load-in-4bit/--no-4bit"),
                                      description="NF4 base (bitsandbytes, CUDA; default: on with CUDA).")
    gradient_checkpointing: bool | None = Field(
        None, json_schema_extra=flag("--gradient-checkpointing/--no-gradient-checkpointing"),
        description="Recompute activations in the backward pass (default: on with CUDA).",
    )
    balance: bool = Field(True, json_schema_extra=flag("--balance/--no-balance"),
                          description="Downsample the larger of the useful/noisy classes.")
    save_every: int = Field(10, ge=1, description="Checkpoint every N steps (and on Ctrl-C).")
    merge: bool = Field(True, json_schema_extra=flag("--merge/--no-merge"),
                        description="Also write a merged full model to merged/.")
    seed: int = Field(0, description="Seed of the data order and of the LoRA initialization.")

    @property
    def alpha(self) -> int:
        return self.lora_alpha or 2 * self.lora_r


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


def build_example(tokenizer, messages: list[dict], max_length: int) -> Example | None:
    """Prompt (chat template, generation prompt) + response + end-of-turn; prompt labels are -100."""
    if len(messages) < 2 or messages[-1].get("role") != "assistant" or not messages[-1].get("content"):
        return None
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ZslError("the chat template does not render the prompt as a prefix of the conversation")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    input_ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE] * len(prompt_ids) + response_ids)[:max_length]
    if all(label == IGNORE for label in labels):
        return None
    return Example(input_ids, labels)


def load_examples(tokenizer, path: Path, max_length: int, balance: bool, seed: int) -> tuple[list[Example], dict]:
    if not path.is_file():
        raise ZslError(f"SFT data not found: {path}")
    rows = list(read_records(path))
    by_mode: dict[str, list[dict]] = {}
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("messages"), list):
            by_mode.setdefault(row.get("mode", "any"), []).append(row)
    if balance and len(by_mode) == 2 and min(map(len, by_mode.values())) > 0:
        size = min(map(len, by_mode.values()))
        rng = random.Random(seed)
        by_mode = {m: rng.sample(rs, size) for m, rs in by_mode.items()}
    examples = [e for rs in by_mode.values() for r in rs if (e := build_example(tokenizer, r["messages"], max_length))]
    if not examples:
        raise ZslError(f"no usable SFT examples in {path}")
    return examples, {m: len(rs) for m, rs in by_mode.items()}


def collate(batch: list[Example], pad_id: int):
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(e.input_ids), torch.tensor(e.labels), 1
    return ids, labels, mask


def scored_tokens(example: Example) -> int:
    """Tokens of an example that carry a loss: response tokens after the first position."""
    return sum(label != IGNORE for label in example.labels[1:])


def response_nll(model, input_ids, attention_mask, labels, *, chunk: int = 512):
    """Sum of -log p over the response tokens (labels other than -100), the shifted next-token loss of
    transformers' `ForCausalLMLoss` before its mean. The decoder's hidden states at the positions that
    predict a response token are gathered, then projected to the vocabulary `chunk` positions at a time."""
    decoder, lm_head = decoder_and_head(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    targets = labels[:, 1:]
    scored = targets != IGNORE
    if not scored.any():  # keeps the graph (and a backward) valid for a batch without response tokens
        return hidden.sum() * 0.0
    picked = hidden[:, :-1][scored].unsqueeze(0)  # (1, response tokens, hidden): no prompt position projected
    return -hidden_logprobs(lm_head, picked, targets[scored].unsqueeze(0), chunk=chunk).sum()


def lr_at(step: int, cfg: SFTConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def batch_order(n: int, step: int, batch_size: int, seed: int) -> list[int]:
    """Indices for a step: a fresh seeded permutation per epoch, so resume replays exactly."""
    start = step * batch_size
    out = []
    for pos in range(start, start + batch_size):
        epoch, offset = divmod(pos, n)
        out.append(random.Random(seed * 100_003 + epoch).sample(range(n), n)[offset])
    return out


def make_optimizer(params, lr: float, paged: bool):
    import torch

    if paged:
        try:
            import bitsandbytes as bnb

            return bnb.optim.PagedAdamW8bit(params, lr=lr)
        except ImportError:
            pass
    return torch.optim.AdamW(params, lr=lr)


def check_resumable(cfg: SFTConfig, checkpoint: Path | None) -> None:
    """Refuse to continue the run in `cfg.out` under settings that change its result (see `RESUMABLE_SETTINGS`),
    or with fewer `max_steps` than its checkpoint has done."""
    out = Path(cfg.out)
    check_rerun(cfg, out, "an SFT run", free=RESUMABLE_SETTINGS)
    done = json.loads((checkpoint / "state.json").read_text())["step"] if checkpoint else 0
    if done > cfg.max_steps:
        raise ZslError(f"--max-steps {cfg.max_steps} is fewer than the {done} steps {out} has done")


def train_sft(cfg: SFTConfig, *, on_step: Callable[[dict], None] = lambda row: None, model=None, tokenizer=None) -> Path:
    """Run (or resume) SFT; returns the adapter folder. `model`/`tokenizer` may be passed pre-built (tests).
    Inputs and a saved run's settings are checked before anything is loaded; `config.json` is written only
    once the model and data are ready, so a run that fails to start leaves the folder as it was."""
    import torch

    from ..models.spec import resolve_model

    out = Path(cfg.out)
    if not Path(cfg.data).is_file():
        raise ZslError(f"SFT data not found: {cfg.data}")
    resolved = resolve_model(cfg.model) if tokenizer is None else None
    checkpoint = find_checkpoint(out)
    check_resumable(cfg, checkpoint)
    torch.manual_seed(cfg.seed)
    if tokenizer is None:
        tokenizer = load_tokenizer(resolved)
    examples, classes = load_examples(tokenizer, Path(cfg.data), cfg.max_length, cfg.balance, cfg.seed)
    if model is None:
        model = load_base(cfg.model, load_in_4bit=cfg.load_in_4bit, gradient_checkpointing=cfg.gradient_checkpointing)
    lora = LoraSettings(cfg.lora_r, cfg.alpha, cfg.lora_dropout)
    model = add_lora(model, lora, checkpoint / "adapter" if checkpoint else None)
    out.mkdir(parents=True, exist_ok=True)
    save_settings(cfg, out)
    device = next(model.parameters()).device
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg.lr, paged=device.type == "cuda")
    start = load_checkpoint(checkpoint, optimizer)["step"] if checkpoint else 0
    model.train()
    metrics = (out / "metrics.jsonl").open("a")
    done = start
    try:
        for step in range(start, cfg.max_steps):
            started = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            indices = batch_order(len(examples), step, cfg.batch_size * cfg.grad_accum, cfg.seed)
            step_scored = max(1, sum(scored_tokens(examples[i]) for i in indices))
            total_loss, tokens = 0.0, 0
            for micro in range(cfg.grad_accum):
                chunk = indices[micro * cfg.batch_size : (micro + 1) * cfg.batch_size]
                ids, labels, mask = (t.to(device) for t in collate([examples[i] for i in chunk], tokenizer.pad_token_id))
                loss = response_nll(model, ids, mask, labels, chunk=cfg.loss_chunk) / step_scored
                loss.backward()
                total_loss += loss.item()
                tokens += int(mask.sum())
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - started
            row = {"step": step + 1, "loss": total_loss, "lr": lr_at(step, cfg), "tokens": tokens,
                   "tokens_per_s": tokens / seconds, "seconds": seconds, "classes": classes}
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            done = step + 1
            on_step(row)
            if done % cfg.save_every == 0 and done < cfg.max_steps:
                save_checkpoint(out, model, optimizer, done)
    except KeyboardInterrupt:
        save_checkpoint(out, model, optimizer, done)
        raise
    finally:
        metrics.close()
    save_checkpoint(out, model, optimizer, cfg.max_steps)
    model.save_pretrained(str(out / "adapter"))
    tokenizer.save_pretrained(str(out / "adapter"))
    if cfg.merge:
        quantized = getattr(model.base_model.model, "is_loaded_in_4bit", False)
        save_merged(model, tokenizer, out, base=cfg.model if quantized else None)
    return out / "adapter"


def save_merged(model, tokenizer, out: Path, *, base: str | None = None) -> Path:
    """`merged/`: the trained adapter merged into its base, written beside and renamed into place. With `base`
    (a 4-bit run, whose quantized weights cannot take the merge) the adapter is merged into a full-precision
    copy of the base loaded on the CPU in bf16, as `zsl export` merges, so the GPU holds nothing more."""
    import shutil

    staging = out / ".merged.partial"
    shutil.rmtree(staging, ignore_errors=True)
    if base is None:
        merged = model.merge_and_unload()
    else:
        from peft import PeftModel

        from ..models.hf import load_causal_lm
        from ..models.spec import resolve_model

        full = load_causal_lm(resolve_model(base), device="cpu", dtype="bfloat16")
        merged = PeftModel.from_pretrained(full, str(out / "adapter")).merge_and_unload()
    merged.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    return swap_in(staging, out / "merged", out / ".merged.old")

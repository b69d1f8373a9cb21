"""Checks of the memory plan's estimate: the peak measured on CUDA with random-weight models of the plan's
shapes, loaded and trained through the project's own code (`train_lite.modeling.load_base` / `add_lora`,
the SFT loss of `train_lite.sft`, `grpo_loss.token_logprobs`, the simulator through
`models.loading.load_backend`), and, without a GPU, PyTorch's CPU memory timeline of the same steps on
the model cut to a few blocks. Downloads nothing; imports torch only inside its functions.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from .memory_plan import Arch, GRPOPlan, SFTPlan, gib, prefill_bytes_per_token, train_bytes


@dataclass
class Measured:
    phase: str
    status: str  # ok, or the first line of the error (an OOM included)
    seconds: float
    peak_allocated: float
    peak_reserved: float
    outside_torch: float  # device memory in use that PyTorch did not allocate (context, paged optimizer)

    @property
    def device_peak(self) -> float:
        return self.peak_reserved + self.outside_torch


@contextmanager
def measured_phase(name: str, results: list[Measured]) -> Iterator[None]:
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    started, status = time.perf_counter(), "ok"
    try:
        yield
    except torch.OutOfMemoryError as exc:
        status = "OOM: " + str(exc).strip().splitlines()[0][:120]
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    results.append(Measured(name, status, time.perf_counter() - started, torch.cuda.max_memory_allocated(),
                            torch.cuda.max_memory_reserved(), (total - free) - torch.cuda.memory_reserved()))


def hf_config(arch: Arch):
    from transformers import AutoConfig

    extra = {"attention_bias": False} if arch.model_type == "llama" else {}
    return AutoConfig.for_model(
        arch.model_type, hidden_size=arch.hidden, num_hidden_layers=arch.layers, num_attention_heads=arch.heads,
        num_key_value_heads=arch.kv_heads, head_dim=arch.head_dim, intermediate_size=arch.intermediate,
        vocab_size=arch.vocab, tie_word_embeddings=arch.tied, max_position_embeddings=32768,
        rope_theta=arch.rope_theta, bos_token_id=arch.bos, eos_token_id=arch.eos,
        rms_norm_eps=1e-6, **extra,
    )


def word_tokenizer(arch: Arch):
    """A word-level tokenizer of `arch`'s vocabulary size, with its BOS and EOS ids, for the simulator
    backend to load alongside the weights; it only has to load: the measurement feeds random token ids
    and never encodes or decodes text."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(arch.vocab)}, unk_token="t0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=words, unk_token="t0", bos_token=f"t{arch.bos}",
                                   eos_token=f"t{arch.eos}", pad_token=f"t{arch.eos}")


def random_checkpoint(arch: Arch, folder: Path, device: str = "cuda") -> Path:
    """A random-weight bf16 model of `arch` and its tokenizer, saved as a model folder (reused when the
    folder already holds one)."""
    import torch
    from transformers import AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "tokenizer.json").is_file():
        word_tokenizer(arch).save_pretrained(str(folder))
    if (folder / "config.json").is_file():
        return folder
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config(arch), dtype=torch.bfloat16)
    model.save_pretrained(str(folder))
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return folder


def load_simulator(folder: Path, grpo: GRPOPlan):
    """The simulator as `zsl train grpo --simulator-backend transformers [--simulator-4bit]` loads it (the
    backend options of `train_lite.grpo.build_trainer`); its model, in eval mode, is what generates."""
    from ..models.loading import load_backend

    options = {"load_in_4bit": True} if grpo.sim_nf4 else {}
    return load_backend(str(folder), "transformers", **options).model


def load_policy(folder: Path, arch: Arch, r: int, dropout: float, stream: int):
    """The project's training load (NF4, checkpointing, bf16 stream, LoRA) and its 8-bit paged AdamW.

    `load_base` keeps the residual stream bf16 (it casts back what peft's `prepare_model_for_kbit_training`
    upcast); with `stream` 4 the float weights go to fp32 again, as that peft call leaves them, to measure
    the fp32 stream for comparison."""
    import torch

    from .modeling import LoraSettings, add_lora, load_base
    from .sft import make_optimizer

    base = load_base(str(folder), load_in_4bit=True, gradient_checkpointing=True)
    if stream == 4:  # embeddings, norms and biases as peft's prepare_model_for_kbit_training casts them
        for param in base.parameters():
            if param.dtype == torch.bfloat16:
                param.data = param.data.to(torch.float32)
    model = add_lora(base, LoraSettings(r=r, alpha=2 * r, dropout=dropout))
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], 1e-5, paged=True)
    return model, optimizer


def random_ids(arch: Arch, rows: int, width: int, *, ragged: bool, device: str = "cuda"):
    """Left-padded random token ids; with `ragged`, rows lose 0, 1/8, 2/8 or 3/8 of `width` to padding."""
    import torch

    ids = torch.randint(3, arch.vocab - 3, (rows, width), device=device)
    mask = torch.ones_like(ids)
    if ragged:
        for row in range(1, rows):
            mask[row, : int(width * 0.5 * (row % 4) / 4)] = 0
        ids[mask == 0] = arch.bos
    return ids, mask


def generate(model, arch: Arch, rows: int, width: int, new: int) -> None:
    import torch

    ids, mask = random_ids(arch, rows, width, ragged=True, device=str(model.device))
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=True,
                       temperature=1.0, top_p=1.0, use_cache=True, pad_token_id=arch.bos)


def sft_step(model, optimizer, arch: Arch, plan: SFTPlan) -> None:
    """One optimizer step of `train_sft`: grad_accum micro-batches through its chunked response loss (with
    `loss_chunk` 0, the model's own full-logit loss, to measure what chunking saves)."""
    import torch

    from .sft import response_nll

    model.train()
    for _ in range(plan.grad_accum):
        ids, mask = random_ids(arch, plan.batch_size, plan.max_length, ragged=False, device=str(model.device))
        labels = ids.clone()
        labels[:, : plan.max_length // 3] = -100  # the prompt carries no loss
        if plan.loss_chunk:
            scored = int((labels[:, 1:] != -100).sum()) * plan.grad_accum
            loss = response_nll(model, ids, mask, labels, chunk=plan.loss_chunk) / scored
        else:
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss / plan.grad_accum
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def rollout_turn(model, simulator, arch: Arch, plan: GRPOPlan, results: list[Measured]) -> None:
    """The last (longest) policy turn of a rollout batch, then one batched simulator call."""
    model.eval()
    with measured_phase("GRPO rollout: policy last turn", results):
        rows, width = plan.generate_rows, plan.max_context - plan.max_tokens_per_turn
        for start in range(0, plan.rollouts, rows):
            generate(model, arch, min(rows, plan.rollouts - start), width, plan.max_tokens_per_turn)
    with measured_phase("GRPO rollout: simulator", results):
        generate(simulator, arch, plan.rollouts, plan.sim_prompt, plan.sim_new)


def grpo_update(model, optimizer, arch: Arch, plan: GRPOPlan) -> None:
    """The trainer's update: reference log-probs with the adapter off, then micro-batch loss and backward."""
    import torch

    from .grpo_loss import grpo_loss, token_logprobs

    batches = [random_ids(arch, min(plan.micro_batch, plan.rollouts - s), plan.max_context, ragged=False,
                          device=str(model.device)) for s in range(0, plan.rollouts, plan.micro_batch)]
    refs = []
    model.eval()
    with torch.no_grad(), model.disable_adapter():
        for ids, mask in batches:
            refs.append(token_logprobs(model, ids, mask, chunk=plan.logprob_chunk))
    model.train()
    total = sum(ids.shape[0] * (ids.shape[1] - 1) for ids, _ in batches) // 3
    for (ids, mask), ref in zip(batches, refs, strict=True):
        loss_mask = torch.zeros_like(ids[:, 1:])
        loss_mask[:, ::3] = 1  # about the share of policy-written tokens in a transcript
        advantages = torch.randn(ids.shape[0], device=ids.device)
        logp = token_logprobs(model, ids, mask, chunk=plan.logprob_chunk)
        loss, _ = grpo_loss(logp, logp.detach(), ref, advantages, loss_mask, clip_eps=0.2, kl_beta=0.001,
                            total_tokens=total)
        loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(arch: Arch, sft: SFTPlan, grpo: GRPOPlan, folder: Path, stream: int, phases: list[str]) -> list[Measured]:
    """Each job loads its own policy (SFT's LoRA has dropout, GRPO's has none); the simulator joins GRPO."""
    import gc

    import torch

    results: list[Measured] = []
    if "sft" in phases:
        with measured_phase("sim SFT: load (NF4 + LoRA + optimizer)", results):
            model, optimizer = load_policy(folder, arch, sft.lora_r, sft.lora_dropout, stream)
        with measured_phase("sim SFT: optimizer step", results):
            sft_step(model, optimizer, arch, sft)
        del model, optimizer
        gc.collect()
        torch.cuda.empty_cache()
    if "grpo" in phases:
        with measured_phase("GRPO: load policy and simulator", results):
            model, optimizer = load_policy(folder, arch, grpo.lora_r, grpo.lora_dropout, stream)
            simulator = load_simulator(folder, grpo)
        rollout_turn(model, simulator, arch, grpo, results)
        with measured_phase("GRPO update", results):
            grpo_update(model, optimizer, arch, grpo)
    return results


# ---------------------------------------------------------------------------------------------- CPU profile


def cut_down_model(arch: Arch, dropout: float, stream: int = 2):
    """`arch` in bf16 (the residual stream load_base gives), or fp32 with `stream` 4, with its linear layers
    acting like bitsandbytes' 4-bit ones for autograd (the weight is kept, the input is not saved) and
    LoRA (fp32, as peft makes it) on them, running as peft's LoRA layer for 4-bit ones does."""
    import torch
    from peft.tuners.lora.layer import Linear as LoraLinear
    from transformers import AutoModelForCausalLM

    from .modeling import LoraSettings, add_lora

    class NoInputSaved(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight):
            ctx.save_for_backward(weight)
            return x @ weight.t()

        @staticmethod
        def backward(ctx, grad):
            (weight,) = ctx.saved_tensors
            return grad @ weight, None

    class Like4bit(torch.nn.Linear):
        def forward(self, x):
            out = NoInputSaved.apply(x, self.weight)
            return out if self.bias is None else out + self.bias

    class FlatHead(torch.nn.Linear):
        """The vocabulary projection as one 2-D matmul. A 3-D input that is a strided slice of the hidden
        states (the last position, a chunk of positions) makes `matmul` use `bmm` on the transposed
        weight; the CPU's bf16 `bmm` first copies that weight (vocab x hidden, 0.58 GiB for Qwen2.5-3B),
        CUDA's takes the transposed layout as it is. Flattening keeps the CPU's count to CUDA's."""

        def forward(self, x):
            return torch.nn.functional.linear(x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)

    class LoraLike4bit(LoraLinear):
        """The forward of peft's LoRA layer on a bitsandbytes 4-bit layer (`lora.bnb.Linear4bit`), which
        needs bitsandbytes to import: the base output is cloned and the fp32 LoRA output is cast to its
        dtype before the sum (the generic layer sums in fp32, one more tensor of the output's size)."""

        def forward(self, x, *args, **kwargs):
            if self.disable_adapters:
                return self.base_layer(x, *args, **kwargs)
            result = self.base_layer(x, *args, **kwargs).clone()
            for name in self.active_adapters:
                if name not in self.lora_A:
                    continue
                lora_a, lora_b = self.lora_A[name], self.lora_B[name]
                x_lora = self._cast_input_dtype(x, lora_a.weight.dtype)
                output = lora_b(lora_a(self.lora_dropout[name](x_lora))) * self.scaling[name]
                result = result + output.to(result.dtype)
            return result

    dtype = torch.float32 if stream == 4 else torch.bfloat16
    model = AutoModelForCausalLM.from_config(hf_config(arch), dtype=dtype)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.__class__ = FlatHead if name == "lm_head" else Like4bit
    model.requires_grad_(False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = add_lora(model, LoraSettings(dropout=dropout))
    for module in model.modules():
        if type(module) is LoraLinear:
            module.__class__ = LoraLike4bit
    return model


def profiled_peak(step) -> float:
    """Peak CPU bytes allocated by `step()` above what was live before it (PyTorch's memory timeline)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    totals = [sum(row) for row in sizes]
    return max(totals) - totals[0]


def profile_cpu(arch: Arch, layers: int, tokens: int, chunk: int, stream: int = 2, sft_chunk: int = 512
                ) -> list[tuple[str, float, float]]:
    """(step, profiled peak, estimate) for prefill, SFT (the model's own full-logit loss, then the chunked
    loss of `train_sft`) and GRPO-update steps of `arch` cut to `layers` blocks, one row of `tokens` tokens,
    residual stream of `stream` bytes: a check of the activation and logits accounting without a GPU."""
    import torch

    from .grpo_loss import token_logprobs
    from .sft import response_nll

    small = replace(arch, layers=layers)
    model = cut_down_model(small, dropout=0.05, stream=stream)
    ids = torch.randint(3, small.vocab - 3, (1, tokens))
    mask = torch.ones_like(ids)
    lora_grads = 4 * small.lora_params(16)

    def prefill() -> None:
        model.eval()
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)

    labels = ids.clone()
    labels[:, : tokens // 3] = -100  # the prompt carries no loss
    scored = int((labels[:, 1:] != -100).sum())

    def sft_full() -> None:
        model.train()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()

    def sft_chunked() -> None:
        model.train()
        (response_nll(model, ids, mask, labels, chunk=sft_chunk) / scored).backward()

    def update() -> None:
        model.train()
        (token_logprobs(model, ids, mask, chunk=chunk).sum() * 1e-3).backward()

    def no_dropout() -> None:  # the GRPO trainer's LoRA has none
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0

    rows = []
    for name, step, positions, dropout in (("prefill (no grad)", prefill, 0, True),
                                           ("SFT forward/backward, full logits", sft_full, tokens, True),
                                           (f"SFT forward/backward, loss chunk {sft_chunk}", sft_chunked,
                                            min(sft_chunk, scored), True),
                                           ("GRPO policy forward/backward", update, chunk, False)):
        if not dropout:
            no_dropout()
        peak = profiled_peak(step)
        model.zero_grad(set_to_none=True)
        if positions:
            saved, working, _ = train_bytes(small, 1, tokens, stream, logit_tokens=positions, dropout=dropout)
            estimate = saved + working + lora_grads
        else:
            estimate = tokens * (small.kv_bytes_per_token(stream) + prefill_bytes_per_token(small, stream))
        rows.append((name, peak, estimate))
    return rows


def measured_table(results: list[Measured], device: str) -> str:
    lines = [f"measured on {device} (GiB; device peak = peak reserved + memory outside PyTorch)",
             "| phase | status | seconds | peak allocated | peak reserved | outside torch | device peak |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for m in results:
        lines.append(f"| {m.phase} | {m.status} | {m.seconds:.1f} | {gib(m.peak_allocated)} | {gib(m.peak_reserved)} "
                     f"| {gib(m.outside_torch)} | {gib(m.device_peak)} |")
    return "\n".join(lines)


def profile_table(arch: Arch, rows: list[tuple[str, float, float]], layers: int, tokens: int, stream: int
                  ) -> str:
    stream_name = "fp32" if stream == 4 else "bf16"
    title = f"CPU memory profile, {arch.name} cut to {layers} blocks, 1 x {tokens} tokens, {stream_name} stream (MiB)"
    lines = [title,
             "| step | profiled peak | estimate | estimate / profiled |", "| --- | ---: | ---: | ---: |"]
    for name, peak, estimate in rows:
        lines.append(f"| {name} | {peak / 2**20:.0f} | {estimate / 2**20:.0f} | {estimate / max(peak, 1):.2f} |")
    return "\n".join(lines)


def measure_on_cuda(arch: Arch, sft: SFTPlan, grpo: GRPOPlan, stream: int, phases: list[str],
                    checkpoint_dir: Path | None = None) -> tuple[list[Measured], str]:
    """Measured peaks of `phases` ("sft", "grpo") and the device's name; the random-weight model is kept
    in `checkpoint_dir` when given (and reused from there), else in a temporary folder."""
    import torch

    from ..errors import ZslError

    if not torch.cuda.is_available():
        raise ZslError("measuring needs a CUDA GPU (and bitsandbytes, peft); the estimate needs neither")
    unknown = set(phases) - {"sft", "grpo"}
    if unknown:
        raise ZslError(f"unknown phase {min(unknown)!r}: choose sft, grpo or sft,grpo")
    with tempfile.TemporaryDirectory() as scratch:
        folder = random_checkpoint(arch, checkpoint_dir or Path(scratch) / arch.name)
        results = measure(arch, sft, grpo, folder, stream, phases)
    return results, torch.cuda.get_device_name()

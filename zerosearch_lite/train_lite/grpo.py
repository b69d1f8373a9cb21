"""Stage 2 of ZeroSearch: GRPO of the search policy against the (simulated) search engine.

One step: pick questions (fresh ones plus recycled zero-variance ones), roll out G trajectories each with
the current policy (`rollout`), each search getting noisy documents with the curriculum's probability,
score the answers (F1 or EM), normalize rewards per group, and take one clipped-ratio policy-gradient
update on policy-generated tokens only, with a KL penalty to the reference (the same weights with the
LoRA adapter disabled: no second model in memory).

The run directory holds `config.json`, `checkpoint/` (adapter, optimizer, step, data cursor, recycle
pool; written atomically) and `metrics.db` (a row per step). Each step seeds its RNGs from (seed, step),
so a resumed run replays exactly what an uninterrupted one would; Ctrl-C during rollouts saves the last
finished step, Ctrl-C during an update lets that update finish and saves it.

    zsl train grpo --data tests/data/hotpot_small.jsonl --out runs/grpo --steps 20
    zsl train grpo --resume runs/grpo
"""

from __future__ import annotations

import random
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ..agent.config import AgentConfig
from ..errors import ZslError
from .checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from .curriculum import Curriculum
from .datasets import QAExample
from .grpo_loss import group_advantages, grpo_loss, token_logprobs, zero_variance
from .metrics import MetricsStore, StepMetrics
from .recycle import PoolState, RecyclePool, ZeroVariancePolicy
from .rewards import reward
from .rollout import RolloutBatch, rollout, tokenize_trajectory

CONFIG_FILE = "config.json"


class GRPOConfig(BaseModel):
    """Everything a run needs; saved as config.json, so `--resume RUN_DIR` needs nothing else."""

    data: str = Field(..., description="QA JSONL/parquet with question + golden_answers.")
    out: str = Field(..., description="Run directory.")
    policy: str = Field("embedded", description="Policy base model (name, .gguf, HF folder or hub id).")
    engine: Literal["simulated", "corpus", "http", "template"] = "simulated"
    simulator: str = Field("embedded", description="Simulator model for the simulated engine.")
    simulator_backend: str = Field("auto", description="auto, llama.cpp, transformers or openai.")
    simulator_adapter: str | None = Field(None, description="peft adapter of the simulator (transformers).")
    simulator_load_in_4bit: bool = Field(False, description="NF4 simulator (transformers backend, CUDA).")
    preset: str = "zsl"
    corpus: str | None = None
    url: str | None = None
    limit: int | None = Field(None, ge=1, description="Use the first N questions.")
    steps: int = Field(20, ge=1, description="Total steps m (also the curriculum's length).")
    batch_questions: int = Field(2, ge=1, description="Questions per step.")
    group_size: int = Field(5, ge=2, description="Rollouts per question (G).")
    agent: AgentConfig = Field(
        default_factory=lambda: AgentConfig(max_turns=3, max_tokens_per_turn=96, max_context=2048, k=3,
                                            temperature=1.0, top_p=1.0)
    )
    reward: Literal["f1", "em"] = "f1"
    lr: float = Field(1e-5, gt=0)
    clip_eps: float = Field(0.2, gt=0)
    kl_beta: float = Field(0.001, ge=0)
    updates_per_batch: int = Field(1, ge=1, description="Optimizer passes over each rollout batch.")
    micro_batch: int = Field(4, ge=1, description="Trajectories per forward/backward pass.")
    rollout_batch: int | None = Field(None, ge=1, description="Largest number of rows per generate call (memory cap).")
    logprob_chunk: int = Field(256, ge=16, description="Positions per chunk of vocabulary logits.")
    curriculum: Curriculum = Field(default_factory=Curriculum)
    zero_variance: ZeroVariancePolicy = "recycle"
    recycle_share: float = Field(0.5, ge=0, le=1, description="Largest share of a batch drawn from the pool.")
    pool_max_tries: int = Field(3, ge=1)
    pool_cooldown: int = Field(2, ge=0, description="Steps before a pooled question may return.")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    load_in_4bit: bool | None = None
    gradient_checkpointing: bool | None = None
    save_every: int = Field(5, ge=1)
    seed: int = 0


# ---------------------------------------------------------------------------------------------- data order


def fresh_questions(n_examples: int, cursor: int, count: int, seed: int, exclude: set[int]) -> tuple[list[int], int]:
    """The next `count` example indices from a seeded per-epoch permutation, skipping `exclude`."""
    out: list[int] = []
    tries = 0
    while len(out) < count and tries < 2 * n_examples + count:
        epoch, offset = divmod(cursor, n_examples)
        index = random.Random(seed * 100_003 + epoch).sample(range(n_examples), n_examples)[offset]
        cursor += 1
        tries += 1
        if index not in exclude and index not in out:
            out.append(index)
    return out, cursor


# ---------------------------------------------------------------------------------------------- interrupts


class _Deferred:
    def __init__(self):
        self.hit = False


@contextmanager
def deferred_interrupt() -> Iterator[_Deferred]:
    """Hold Ctrl-C until the block ends (an update and its bookkeeping are never cut in half)."""
    state = _Deferred()
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: setattr(state, "hit", True))
    except ValueError:  # not the main thread: nothing to defer
        yield state
        return
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------------------------------------- trainer


class GRPOTrainer:
    def __init__(self, cfg: GRPOConfig, *, examples: list[QAExample], model, tokenizer, engine):
        import torch

        self.cfg, self.examples, self.model, self.tokenizer, self.engine = cfg, examples, model, tokenizer, engine
        self.by_id = {e.id: i for i, e in enumerate(examples)}
        from ..models.backends.transformers_backend import TransformersBackend

        self.policy = TransformersBackend.from_objects(model, tokenizer, model_id="policy")
        # As at inference (`zsl ask`): protocol-constrained decoding for a model not trained on the protocol.
        grammar = cfg.agent.grammar
        self.constrained = grammar == "on" or (grammar == "auto" and cfg.policy == "embedded")
        self.device = next(model.parameters()).device
        params = [p for p in model.parameters() if p.requires_grad]
        from .sft import make_optimizer

        self.optimizer = make_optimizer(params, cfg.lr, paged=self.device.type == "cuda")
        self.pool = RecyclePool(max_tries=cfg.pool_max_tries, cooldown=cfg.pool_cooldown)
        self.cursor = 0
        self.step = 0
        self.out = Path(cfg.out)
        self.metrics = MetricsStore(self.out)
        self._torch = torch

    # -- state ------------------------------------------------------------------------------------------

    def _extra(self, pool: PoolState, cursor: int) -> dict:
        return {"cursor": cursor, "pool": pool.model_dump()}

    def save(self, step: int, pool: PoolState, cursor: int) -> None:
        save_checkpoint(self.out, self.model, self.optimizer, step, self._extra(pool, cursor))

    def restore(self, checkpoint: Path) -> None:
        state = load_checkpoint(checkpoint, self.optimizer)
        self.step, self.cursor = state["step"], state.get("cursor", 0)
        self.pool.state = PoolState.model_validate(state.get("pool", {}))
        self.metrics.truncate_after(self.step)  # rows of steps after the checkpoint are re-run

    # -- one step ---------------------------------------------------------------------------------------

    def _pick(self, step: int) -> tuple[list[QAExample], int]:
        cfg = self.cfg
        n_pool = int(cfg.recycle_share * cfg.batch_questions) if cfg.zero_variance == "recycle" else 0
        pooled = [self.by_id[q] for q in self.pool.take(n_pool, step) if q in self.by_id]
        fresh, self.cursor = fresh_questions(
            len(self.examples), self.cursor, cfg.batch_questions - len(pooled), cfg.seed, set(pooled)
        )
        return [self.examples[i] for i in pooled + fresh], len(pooled)

    def _update(self, batch: RolloutBatch, advantages: list[float], keep: list[bool]) -> dict:
        torch, cfg = self._torch, self.cfg
        rows = [
            (tokenize_trajectory(self.tokenizer, t.segments, cfg.agent.max_context), a)
            for t, a, k in zip(batch.trajectories, advantages, keep, strict=True) if k
        ]
        rows = [r for r in rows if sum(r[0][1]) > 0]
        if not rows:  # every group flat (or filtered): no update, so no loss or KL to report
            return {"loss": None, "kl": None}
        total_tokens = sum(sum(mask[1:]) for (_, mask), _ in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

        def tensors(chunk):
            width = max(len(ids) for (ids, _), _ in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attn = torch.zeros((len(chunk), width), dtype=torch.long)
            loss_mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, ((seq, mask), _) in enumerate(chunk):
                ids[i, : len(seq)], attn[i, : len(seq)] = torch.tensor(seq), 1
                loss_mask[i, : len(seq)] = torch.tensor(mask)
            adv = torch.tensor([a for _, a in chunk], dtype=torch.float32)
            return ids.to(self.device), attn.to(self.device), loss_mask[:, 1:].to(self.device), adv.to(self.device)

        batches = [tensors(rows[i : i + cfg.micro_batch]) for i in range(0, len(rows), cfg.micro_batch)]
        old: list = []
        refs: list = []
        self.model.eval()  # no dropout in the log-probs the ratio compares
        with torch.no_grad():
            for ids, attn, _, _ in batches:
                old.append(token_logprobs(self.model, ids, attn, chunk=cfg.logprob_chunk) if cfg.updates_per_batch > 1 else None)
                if cfg.kl_beta > 0:
                    with self.model.disable_adapter():
                        refs.append(token_logprobs(self.model, ids, attn, chunk=cfg.logprob_chunk))
                else:
                    refs.append(None)
        totals = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0}
        for _ in range(cfg.updates_per_batch):
            self.model.train()
            kl_sum, tokens = 0.0, 0
            for (ids, attn, loss_mask, adv), old_lp, ref_lp in zip(batches, old, refs, strict=True):
                logp = token_logprobs(self.model, ids, attn, chunk=cfg.logprob_chunk)
                loss, parts = grpo_loss(
                    logp, old_lp if old_lp is not None else logp.detach(), ref_lp, adv, loss_mask,
                    clip_eps=cfg.clip_eps, kl_beta=cfg.kl_beta, total_tokens=total_tokens,
                )
                loss.backward()
                totals["loss"] += parts.loss
                kl_sum += parts.kl * parts.tokens
                tokens += parts.tokens
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            totals["kl"] = kl_sum / max(tokens, 1)
        totals["loss"] /= cfg.updates_per_batch
        return totals

    def run_step(self, step: int, stopped: Callable[[], bool]) -> StepMetrics | None:
        """One step; None when `stopped()` aborted the rollouts (nothing was changed)."""
        torch, cfg = self._torch, self.cfg
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        rng = random.Random(cfg.seed * 1_000_003 + step)
        pool_before, cursor_before = self.pool.state.model_copy(deep=True), self.cursor
        examples, n_pooled = self._pick(step)
        noise_p = cfg.curriculum.noise_probability(step, cfg.steps)
        self.model.eval()
        try:
            batch = rollout(self.policy, self.engine, examples, cfg.group_size, cfg.agent,
                            noise_p=noise_p, rng=rng, stopped=stopped, constrained=self.constrained,
                            max_rows=cfg.rollout_batch)
        except KeyboardInterrupt:
            self.pool.state, self.cursor = pool_before, cursor_before
            raise
        if stopped():
            self.pool.state, self.cursor = pool_before, cursor_before
            return None
        golds = [e.golden_answers for e in examples for _ in range(cfg.group_size)]
        rewards = reward([t.answer for t in batch.trajectories], golds, cfg.reward)
        advantages = group_advantages(rewards, cfg.group_size)
        groups = [rewards[i : i + cfg.group_size] for i in range(0, len(rewards), cfg.group_size)]
        flat = [zero_variance(g) for g in groups]
        keep_group = [True] * len(groups) if cfg.zero_variance == "keep" else [not f for f in flat]
        keep = [k for k in keep_group for _ in range(cfg.group_size)]
        tick = time.perf_counter()
        with deferred_interrupt() as interrupt:
            parts = self._update(batch, advantages, keep)
            for index, (example, is_flat) in enumerate(zip(examples, flat, strict=True)):
                from_pool = index < n_pooled
                if cfg.zero_variance == "recycle" or from_pool:
                    self.pool.report(example.id, is_flat, step, from_pool=from_pool)
            update_seconds = time.perf_counter() - tick
            trajs = batch.trajectories
            row = StepMetrics(
                step=step + 1,
                reward_mean=sum(rewards) / len(rewards),
                reward_std=statistics.pstdev(rewards),
                noise_p=noise_p,
                kl=parts["kl"],
                loss=parts["loss"],
                response_tokens=sum(t.usage.completion_tokens for t in trajs) / len(trajs),
                searches_per_question=sum(len(t.searches) for t in trajs) / len(trajs),
                answered_share=sum(t.answer is not None for t in trajs) / len(trajs),
                zero_variance_groups=sum(flat),
                pool_size=len(self.pool),
                pool_share=n_pooled / len(examples),
                recovered=self.pool.state.recovered,
                cache_hit_rate=batch.cache_hit_rate,
                rollout_seconds=batch.seconds,
                update_seconds=update_seconds,
                lr=cfg.lr,
            )
            self.metrics.write(row)
            self.step = step + 1
            if self.step % cfg.save_every == 0 or self.step == cfg.steps or interrupt.hit:
                self.save(self.step, self.pool.state, self.cursor)
        if interrupt.hit:
            raise KeyboardInterrupt
        return row

    def train(self, on_step: Callable[[StepMetrics], None] = lambda row: None, stopped=lambda: False) -> None:
        try:
            for step in range(self.step, self.cfg.steps):
                row = self.run_step(step, stopped)
                if row is None:
                    break
                on_step(row)
        except KeyboardInterrupt:
            self.save(self.step, self.pool.state, self.cursor)
            raise
        finally:
            self.metrics.close()
        self.model.save_pretrained(str(self.out / "adapter"))
        self.tokenizer.save_pretrained(str(self.out / "adapter"))


# ---------------------------------------------------------------------------------------------- entry


def load_run_config(run_dir: str | Path) -> GRPOConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ZslError(f"not a GRPO run directory (no {CONFIG_FILE}): {run_dir}")
    try:
        return GRPOConfig.model_validate_json(path.read_text())
    except ValueError as exc:
        raise ZslError(f"unreadable run config {path}: {str(exc).splitlines()[0]}") from None


def build_trainer(cfg: GRPOConfig, *, resume: bool, model=None, tokenizer=None, engine=None) -> GRPOTrainer:
    """Load data, policy (+LoRA, from the checkpoint when resuming) and engine; `model`/`engine` may be
    passed pre-built (tests)."""
    from ..models.spec import resolve_model
    from .datasets import load_qa
    from .modeling import LoraSettings, add_lora, load_base, load_tokenizer

    out = Path(cfg.out)
    checkpoint = find_checkpoint(out)
    if not resume and checkpoint is not None:
        raise ZslError(f"{out} already holds a run; continue it with `zsl train grpo --resume {out}`")
    if resume and checkpoint is None and not (out / CONFIG_FILE).is_file():
        raise ZslError(f"nothing to resume in {out}")
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(cfg.model_dump_json(indent=2))
    dataset = load_qa(cfg.data, limit=cfg.limit)
    if tokenizer is None:
        tokenizer = load_tokenizer(resolve_model(cfg.policy))
    if model is None:
        model = load_base(cfg.policy, load_in_4bit=cfg.load_in_4bit, gradient_checkpointing=cfg.gradient_checkpointing)
    lora = LoraSettings(cfg.lora_r, cfg.lora_alpha, dropout=0.0)
    model = add_lora(model, lora, checkpoint / "adapter" if checkpoint else None)
    if engine is None:
        from ..simulator.factory import build_engine

        engine = build_engine(
            cfg.engine, simulator=cfg.simulator, simulator_backend=cfg.simulator_backend,
            adapter=cfg.simulator_adapter, preset=cfg.preset, corpus=cfg.corpus, url=cfg.url,
            cache_path=out / "doc_cache.db",
            backend_options={"load_in_4bit": True} if cfg.simulator_load_in_4bit else None,
        )
    trainer = GRPOTrainer(cfg, examples=dataset.examples, model=model, tokenizer=tokenizer, engine=engine)
    if checkpoint is not None:
        trainer.restore(checkpoint)
    return trainer

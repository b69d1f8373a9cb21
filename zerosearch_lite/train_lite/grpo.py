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

import functools
import random
import signal
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from ..agent.rollout import Rollout, RolloutRequest, RolloutStats
from ..agent.types import Trajectory
from ..errors import ZslError
from ..evaluation.datasets import QAExample
from ..saved_settings import CONFIG_FILE
from ..simulator.types import SearchContext
from .checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from .grpo_config import GRPOConfig
from .grpo_loss import group_advantages, grpo_loss, token_logprobs, zero_variance
from .heldout import BestAdapter, HeldOutScore, score_heldout
from .metrics import MetricsStore, StepMetrics, read_metrics
from .recycle import PoolState, RecyclePool, pool_slots
from .rewards import reward
from .sequences import tokenize_trajectory

ROLLOUT_ADAPTER = "rollout-adapter"  # the adapter a separate rollout backend reads after each update

__all__ = ["GRPOConfig", "GRPOTrainer", "build_trainer", "load_run_config"]


# ---------------------------------------------------------------------------------------------- data order


@functools.lru_cache(maxsize=2)
def epoch_order(n_examples: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The seeded permutation of one epoch (kept: a 170k-question set would otherwise be shuffled again for
    every question drawn)."""
    return tuple(random.Random(seed * 100_003 + epoch).sample(range(n_examples), n_examples))


def fresh_questions(n_examples: int, cursor: int, count: int, seed: int, exclude: set[int]) -> tuple[list[int], int]:
    """The next `count` example indices from a seeded per-epoch permutation, skipping `exclude`."""
    out: list[int] = []
    tries = 0
    while len(out) < count and tries < 2 * n_examples + count:
        epoch, offset = divmod(cursor, n_examples)
        index = epoch_order(n_examples, seed, epoch)[offset]
        cursor += 1
        tries += 1
        if index not in exclude and index not in out:
            out.append(index)
    return out, cursor


def unique_ids(examples: list[QAExample]) -> list[QAExample]:
    """The examples with ids the recycle pool can key on: a merged training set may repeat an id across its
    sources (`train_0` of NQ and of HotpotQA), so a repeated id becomes `source/id`, then `source/id#n`."""
    counts = Counter(e.id for e in examples)
    if max(counts.values(), default=0) < 2:
        return examples
    seen: Counter = Counter()
    unique = []
    for example in examples:
        key = f"{example.source}/{example.id}" if counts[example.id] > 1 else example.id
        seen[key] += 1
        unique.append(replace(example, id=key if seen[key] == 1 else f"{key}#{seen[key]}"))
    return unique


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
    def __init__(self, cfg: GRPOConfig, *, examples: list[QAExample], model, tokenizer, engine,
                 heldout: list[QAExample] | None = None, constrained: bool = False, rollout_policy=None):
        """`engine` None with `--engine self`: the policy being trained writes its own documents.
        `rollout_policy`: a backend that samples rollouts instead of the training model (vLLM in this process or
        a server); it gets the current adapter (`set_adapter`) after every update."""
        import torch

        from ..models.backends.transformers_backend import TransformersBackend
        from ..simulator.config import open_engine

        examples = unique_ids(examples)
        self.cfg, self.examples, self.model, self.tokenizer = cfg, examples, model, tokenizer
        self.by_id = {e.id: i for i, e in enumerate(examples)}
        self.out = Path(cfg.out)
        self.policy = rollout_policy or TransformersBackend.from_objects(model, tokenizer, model_id="policy")
        if rollout_policy is not None:
            self._hand_over()  # a resumed run's adapter, or the fresh (zero) one
        # Self-search uses the current weights (adapter on) and no cache: its documents change as it learns.
        self.engine = engine if engine is not None else open_engine(
            cfg.engine.model_copy(update={"cache": "off"}), policy=self.policy)
        self.rollout = Rollout(self.policy, self.engine, cfg.agent, constrained=constrained,
                               max_rows=cfg.rollout_batch)
        self.heldout = heldout or []
        self.heldout_rollout = Rollout(self.policy, self.engine,
                                       cfg.agent.model_copy(update={"temperature": cfg.eval_temperature}),
                                       constrained=constrained, max_rows=cfg.rollout_batch)
        self.device = next(model.parameters()).device
        params = [p for p in model.parameters() if p.requires_grad]
        from .sft import make_optimizer

        self.optimizer = make_optimizer(params, cfg.lr, paged=self.device.type == "cuda")
        self.pool = RecyclePool(max_tries=cfg.pool_max_tries, cooldown=cfg.pool_cooldown)
        self.cursor = 0
        self.step = 0
        self.metrics = MetricsStore(self.out)
        self.best = BestAdapter(self.out)
        self.on_warning: Callable[[str], None] = lambda text: None
        self._torch = torch

    # -- rollouts on another backend -------------------------------------------------------------------

    def _hand_over(self) -> None:
        """Give a separate rollout backend the adapter as it is now (vLLM loads it per request, under a new id)."""
        if not hasattr(self.policy, "set_adapter"):
            return
        folder = self.out / ROLLOUT_ADAPTER
        self.model.save_pretrained(str(folder))
        self.policy.set_adapter(folder)

    def _free_rollout_memory(self) -> None:
        """vLLM in this process sleeps through the update (weights to CPU memory, KV cache freed); the next
        generate wakes it."""
        sleep = getattr(self.policy, "sleep", None)
        if sleep is not None and getattr(getattr(self.policy, "settings", None), "enable_sleep_mode", False):
            sleep()

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
        self.best.remember([HeldOutScore(r.step, r.heldout_strict_em or 0, r.heldout_cover_em or 0,
                                         r.heldout_f1 or 0, r.heldout_searches or 0, r.heldout_answered or 0)
                            for r in read_metrics(self.out) if r.heldout_f1 is not None])

    # -- one step ---------------------------------------------------------------------------------------

    def _pick(self, step: int) -> tuple[list[QAExample], int]:
        cfg = self.cfg
        draw = random.Random(cfg.seed * 7_000_003 + step).random()  # its own stream: the step's rng is untouched
        n_pool = pool_slots(cfg.recycle_share, cfg.batch_questions, draw) if cfg.zero_variance == "recycle" else 0
        pooled = [self.by_id[q] for q in self.pool.take(n_pool, step) if q in self.by_id]
        fresh, self.cursor = fresh_questions(
            len(self.examples), self.cursor, cfg.batch_questions - len(pooled), cfg.seed, set(pooled)
        )
        return [self.examples[i] for i in pooled + fresh], len(pooled)

    def roll(self, examples: list[QAExample], noise_p: float, rng: random.Random,
             stopped: Callable[[], bool]) -> tuple[list[Trajectory], RolloutStats]:
        """G trajectories per question, group by group; each search noisy with probability `noise_p`."""
        self.rollout.stopped = stopped
        requests = [RolloutRequest(e.question, SearchContext(e.question, e.golden_answers))
                    for e in examples for _ in range(self.cfg.group_size)]
        return self.rollout.run(requests, noise_p=noise_p, rng=rng)

    def _update(self, trajectories: list[Trajectory], advantages: list[float], keep: list[bool]) -> dict:
        torch, cfg = self._torch, self.cfg
        rows = [
            (tokenize_trajectory(self.tokenizer, t.segments, cfg.agent.max_context), a)
            for t, a, k in zip(trajectories, advantages, keep, strict=True) if k
        ]
        rows = [r for r in rows if sum(r[0][1]) > 0]
        if not rows:  # every group flat (or filtered): no update, so no loss or KL to report
            return {"loss": None, "kl": None, "clip_fraction": None}
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
            kl_sum, clipped, tokens = 0.0, 0.0, 0
            for (ids, attn, loss_mask, adv), old_lp, ref_lp in zip(batches, old, refs, strict=True):
                logp = token_logprobs(self.model, ids, attn, chunk=cfg.logprob_chunk)
                loss, parts = grpo_loss(
                    logp, old_lp if old_lp is not None else logp.detach(), ref_lp, adv, loss_mask,
                    clip_eps=cfg.clip_eps, kl_beta=cfg.kl_beta, total_tokens=total_tokens,
                )
                loss.backward()
                totals["loss"] += parts.loss
                kl_sum += parts.kl * parts.tokens
                clipped += parts.clip_fraction * parts.tokens
                tokens += parts.tokens
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            totals["kl"] = kl_sum / max(tokens, 1)
            totals["clip_fraction"] = clipped / max(tokens, 1)  # the last pass's: the first is always 0
        totals["loss"] /= cfg.updates_per_batch
        return totals

    def _heldout(self, step: int) -> dict:
        """The held-out columns of this step's row (empty when no score is due)."""
        cfg = self.cfg
        if not self.heldout or not ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            return {}
        score = score_heldout(self.heldout_rollout, self.heldout, step + 1)
        warnings = self.best.warnings(score)
        self.best.offer(self.model, score)
        for text in warnings:
            self.on_warning(f"step {step + 1}: {text}")
        return {"heldout_strict_em": score.strict_em, "heldout_cover_em": score.cover_em, "heldout_f1": score.f1,
                "heldout_searches": score.searches, "heldout_answered": score.answered,
                "warning": "; ".join(warnings) or None}

    def run_step(self, step: int, stopped: Callable[[], bool]) -> StepMetrics | None:
        """One step; None when `stopped()` aborted the rollouts (nothing was changed)."""
        torch, cfg = self._torch, self.cfg
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        rng = random.Random(cfg.seed * 1_000_003 + step)
        pool_before, cursor_before = self.pool.state.model_copy(deep=True), self.cursor
        examples, n_pooled = self._pick(step)
        noise_p = cfg.curriculum.at_step(step, cfg.steps)
        self.model.eval()
        try:
            trajs, stats = self.roll(examples, noise_p, rng, stopped)
        except KeyboardInterrupt:
            self.pool.state, self.cursor = pool_before, cursor_before
            raise
        if stopped():
            self.pool.state, self.cursor = pool_before, cursor_before
            return None
        golds = [e.golden_answers for e in examples for _ in range(cfg.group_size)]
        rewards = reward([t.answer for t in trajs], golds, cfg.reward)
        advantages = group_advantages(rewards, cfg.group_size)
        groups = [rewards[i : i + cfg.group_size] for i in range(0, len(rewards), cfg.group_size)]
        flat = [zero_variance(g) for g in groups]
        keep_group = [True] * len(groups) if cfg.zero_variance == "keep" else [not f for f in flat]
        keep = [k for k in keep_group for _ in range(cfg.group_size)]
        tick = time.perf_counter()
        with deferred_interrupt() as interrupt:
            self._free_rollout_memory()
            parts = self._update(trajs, advantages, keep)
            if parts["loss"] is not None:
                self._hand_over()
            for index, (example, is_flat) in enumerate(zip(examples, flat, strict=True)):
                from_pool = index < n_pooled
                if cfg.zero_variance == "recycle" or from_pool:
                    self.pool.report(example.id, is_flat, step, from_pool=from_pool)
            update_seconds = time.perf_counter() - tick
            heldout = self._heldout(step)
            row = StepMetrics(
                step=step + 1,
                reward_mean=sum(rewards) / len(rewards),
                reward_std=statistics.pstdev(rewards),
                noise_p=noise_p,
                kl=parts["kl"],
                loss=parts["loss"],
                clip_fraction=parts["clip_fraction"],
                response_tokens=sum(t.usage.completion_tokens for t in trajs) / len(trajs),
                searches_per_question=sum(len(t.searches) for t in trajs) / len(trajs),
                answered_share=sum(t.answer is not None for t in trajs) / len(trajs),
                zero_variance_groups=sum(flat),
                pool_size=len(self.pool),
                pool_share=n_pooled / len(examples),
                recovered=self.pool.state.recovered,
                cache_hit_rate=stats.cache_hit_rate,
                noisy_share=stats.noisy_share,
                searches=stats.searches,
                cache_hits=stats.cache_hits,
                simulator_tokens=stats.simulator_tokens,
                search_seconds=stats.search_seconds,
                guarded_documents=stats.guarded_documents,
                guard_retries=stats.guard_retries,
                guard_dropped=stats.guard_dropped,
                guard_seconds=stats.guard_seconds,
                rollout_seconds=stats.seconds,
                update_seconds=update_seconds,
                lr=cfg.lr,
                **heldout,
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
    from ..agent.config import use_protocol_grammar
    from ..evaluation.datasets import load_qa
    from ..models.spec import resolve_model
    from ..simulator.config import open_engine
    from .modeling import LoraSettings, add_lora, load_base, load_tokenizer

    out = Path(cfg.out)
    checkpoint = find_checkpoint(out)
    if not resume and checkpoint is not None:
        raise ZslError(f"{out} already holds a run; continue it with `zsl train grpo --resume {out}`")
    if resume and checkpoint is None and not (out / CONFIG_FILE).is_file():
        raise ZslError(f"nothing to resume in {out}")
    dataset = load_qa(cfg.data, limit=cfg.limit)
    heldout = load_qa(cfg.eval_data, limit=cfg.eval_limit).examples if cfg.eval_data else []
    policy_model = resolve_model(cfg.policy.name)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(cfg.model_dump_json(indent=2))
    if tokenizer is None:
        tokenizer = load_tokenizer(policy_model)
    if model is None:
        model = load_base(policy_model, load_in_4bit=cfg.load_in_4bit, gradient_checkpointing=cfg.gradient_checkpointing)
    lora = LoraSettings(cfg.lora_r, cfg.alpha, dropout=0.0)
    model = add_lora(model, lora, checkpoint / "adapter" if checkpoint else None)
    if engine is None and cfg.engine.kind != "self":
        engine = open_engine(cfg.engine, cache_path=out / "doc_cache.db")
    trainer = GRPOTrainer(cfg, examples=dataset.examples, model=model, tokenizer=tokenizer, engine=engine,
                          heldout=heldout, constrained=use_protocol_grammar(cfg.agent.grammar, policy_model),
                          rollout_policy=rollout_backend(cfg, policy_model))
    if checkpoint is not None:
        trainer.restore(checkpoint)
    return trainer


def rollout_backend(cfg: GRPOConfig, policy_model):
    """The backend that samples rollouts when it is not the training model itself: vLLM on the same card (LoRA
    on, sleep mode on, memory capped) or an OpenAI-compatible vLLM server with runtime LoRA."""
    from ..models.loading import load_backend
    from ..models.spec import resolve_model

    if cfg.rollout_backend == "vllm":
        return load_backend(policy_model, "vllm", n_ctx=cfg.agent.max_context, enable_lora=True,
                            enable_sleep_mode=True, max_lora_rank=cfg.lora_r,
                            gpu_memory_utilization=cfg.vllm_memory)
    if cfg.rollout_backend == "openai":
        return load_backend(resolve_model(cfg.rollout_url), "openai")
    return None

"""`GRPOConfig`: every knob of a GRPO run, declared once with its default, bounds and help (the CLI's options are
derived from these fields); saved as the run's `config.json`, so `--resume RUN_DIR` needs nothing else.

Nested: `policy` (the model trained), `engine` (what answers searches), `agent` (the turn limits and sampling of
rollouts) and `curriculum` (the noise schedule). Older run directories stored the engine and policy flat; they
are read into the nested form.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from ..agent.config import AgentConfig, PolicyConfig
from ..config_cli import flag
from ..simulator.config import EngineConfig
from .curriculum import Curriculum
from .recycle import ZeroVariancePolicy

# Settings older run directories kept at the top level, and where they live now.
_FLAT_ENGINE = {"engine": "kind", "simulator": "simulator", "simulator_backend": "simulator_backend",
                "simulator_adapter": "simulator_adapter", "simulator_load_in_4bit": "simulator_4bit",
                "preset": "preset", "corpus": "corpus", "url": "url"}


def rollout_defaults() -> AgentConfig:
    """Rollouts of a CPU-sized run: short turns, few documents, full-temperature sampling."""
    return AgentConfig(max_turns=3, max_tokens_per_turn=96, max_context=2048, k=3, temperature=1.0, top_p=1.0)


def training_engine() -> EngineConfig:
    """The simulated engine with the noise guard on: a noisy search must not hold the answer in training."""
    return EngineConfig(guard="drop")


class GRPOConfig(BaseModel):
    """Everything a run needs; saved as config.json, so `--resume RUN_DIR` needs nothing else."""

    data: str = Field(..., description="QA JSONL/parquet with question + golden_answers.")
    out: str = Field(..., description="Run directory (config, checkpoint, metrics.db, adapter/, best/).")
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    engine: EngineConfig = Field(default_factory=training_engine)
    limit: int | None = Field(None, ge=1, description="Use the first N questions.")
    steps: int = Field(20, ge=1, description="Total steps m (also the curriculum's length).")
    batch_questions: int = Field(2, ge=1, description="Questions per step.")
    group_size: int = Field(5, ge=2, description="Rollouts per question (G).", json_schema_extra=flag("--group-size", "-G"))
    agent: AgentConfig = Field(default_factory=rollout_defaults)
    reward: Literal["f1", "em"] = Field("f1", description="Reward of an answer: token F1 or strict exact match.")
    lr: float = Field(1e-5, gt=0, description="Learning rate of the LoRA parameters (AdamW).")
    clip_eps: float = Field(0.2, gt=0, description="PPO clip range of the probability ratio.")
    kl_beta: float = Field(0.001, ge=0, description="Weight of the KL penalty to the reference (the base, "
                           "adapter off).")
    updates_per_batch: int = Field(1, ge=1, description="Optimizer passes over each rollout batch.")
    micro_batch: int = Field(4, ge=1, description="Trajectories per forward/backward pass.")
    rollout_batch: int | None = Field(None, ge=1, description="Largest number of rows per generate call "
                                      "(caps rollout memory).")
    logprob_chunk: int = Field(256, ge=16, description="Positions per chunk of vocabulary logits.")
    rollout_backend: Literal["transformers", "vllm", "openai"] = Field(
        "transformers", description="Who samples the rollouts: transformers (the model being trained), vllm (the "
        "base in vLLM in this process, the new LoRA handed over after every update, asleep during it; the gpu "
        "extra) or openai (a vLLM server at --rollout-url with runtime LoRA).",
    )
    rollout_url: str | None = Field(None, description="OpenAI-compatible server for --rollout-backend openai.")
    vllm_memory: float = Field(0.35, gt=0.0, le=0.95,
                               description="Share of the GPU's memory vLLM may take for rollouts.")
    curriculum: Curriculum = Field(default_factory=Curriculum)
    zero_variance: ZeroVariancePolicy = Field(
        "recycle", description="Groups whose rollouts all scored the same: recycle (pool them for later "
        "batches), filter (drop them) or keep.",
    )
    recycle_share: float = Field(0.5, ge=0, le=1, description="Largest share of a batch drawn from the pool.")
    pool_max_tries: int = Field(3, ge=1, description="Flat returns before a pooled question is dropped.")
    pool_cooldown: int = Field(2, ge=0, description="Steps before a pooled question may return.")
    lora_r: int = Field(16, ge=1, description="LoRA rank (all linear layers).")
    lora_alpha: int | None = Field(None, ge=1, description="LoRA alpha (default: 2 × r).")
    load_in_4bit: bool | None = Field(None, json_schema_extra=flag("--load-in-4bit/--no-4bit"),
                                      description="NF4 base (bitsandbytes, CUDA; default: on with CUDA).")
    gradient_checkpointing: bool | None = Field(
        None, json_schema_extra=flag("--gradient-checkpointing/--no-gradient-checkpointing"),
        description="Recompute activations in the backward pass (default: on with CUDA).",
    )
    save_every: int = Field(5, ge=1, description="Checkpoint every N steps (and on Ctrl-C).")
    seed: int = Field(0, description="Seed of the data order and of each step's sampling.")
    eval_data: str | None = Field(
        None, description="Held-out QA file, scored every --eval-every steps with useful documents (p = 0); "
        "the adapter with the best held-out F1 is kept as best/.",
    )
    eval_every: int = Field(10, ge=1, description="Steps between held-out scores.")
    eval_limit: int = Field(32, ge=1, description="Held-out questions scored (the first N of --eval-data).")
    eval_temperature: float = Field(0.0, ge=0.0, le=2.0,
                                    description="Sampling temperature of held-out rollouts (0: greedy).")

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_settings(cls, data: Any) -> Any:
        return cls.upgrade_settings(data)

    @classmethod
    def upgrade_settings(cls, data: Any) -> Any:
        """Read run directories written before the engine and the policy were nested configs."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("policy"), str):
            data["policy"] = {"name": data["policy"]}
        if not isinstance(data.get("engine", {}), dict) or any(k in data for k in _FLAT_ENGINE if k != "engine"):
            engine = data.get("engine") if isinstance(data.get("engine"), dict) else {}
            for old, new in _FLAT_ENGINE.items():
                if old in data and not (old == "engine" and isinstance(data[old], dict)):
                    engine[new] = data.pop(old)
            data["engine"] = engine
        return data

    @model_validator(mode="after")
    def _rollout_server(self) -> GRPOConfig:
        if self.rollout_backend == "openai" and not self.rollout_url:
            raise ValueError("--rollout-backend openai needs --rollout-url http://HOST:PORT/v1")
        return self

    @property
    def alpha(self) -> int:
        return self.lora_alpha or 2 * self.lora_r

"""The agent's settings, each declared once with its default, bounds and help text: `AgentConfig` (the loop's
knobs), `PolicyConfig` (which model answers) and `Method` (agent, rag or direct). The CLI derives its options
from these fields (`config_cli`), and the TUI, the evaluator and the trainer read the same objects.

Also the one rule that decides protocol-constrained decoding (`use_protocol_grammar`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, model_validator

from ..config_cli import flag
from ..simulator.config import EngineConfig

if TYPE_CHECKING:
    from ..models.spec import ResolvedModel

GrammarMode = Literal["auto", "on", "off"]
BackendName = Literal["auto", "llama.cpp", "transformers", "openai", "vllm"]
Method = Literal["agent", "rag", "direct"]


class AgentConfig(BaseModel):
    max_turns: int = Field(4, ge=1, le=32, description="Turns (policy generations) before the run is cut off.")
    max_tokens_per_turn: int = Field(
        256, ge=8, le=8192,
        description="New tokens the policy may write per turn. The protocol grammar's caps are sized from it; a "
        "constrained turn may run past it only as far as its longest well-formed turn at one token a character.",
        json_schema_extra=flag("--max-tokens-per-turn", "--max-tokens"),
    )
    max_context: int = Field(
        4096, ge=256, description="Total transcript tokens; a turn that would exceed it ends the run."
    )
    k: int = Field(5, ge=1, le=20, description="Documents per search.", json_schema_extra=flag("-k"))
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Policy sampling temperature (0: greedy).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Policy nucleus sampling.")
    seed: int | None = Field(
        None, description="Sampling seed: sample i of N uses seed + 1000·i, and turn t of it adds t."
    )
    grammar: GrammarMode = Field(
        "auto",
        description="Protocol-constrained decoding: auto = on for models not trained on the protocol (the "
        "embedded one), on, or off.",
    )
    min_searches: int = Field(
        1, ge=0, le=16, description="With the grammar on, searches required before an answer."
    )
    search_mode: Literal["useful", "noisy"] | None = Field(
        None, description="Ask a simulated engine for useful or noisy documents (default: the engine's own).",
    )

    @model_validator(mode="after")
    def _searches_fit_turns(self) -> AgentConfig:
        # Only where the grammar is surely on: under "auto" it may be off (a model trained on the protocol), and
        # where it is on the last turn's answer comes first anyway (`turns.turn_rules`).
        if self.grammar == "on" and self.min_searches >= self.max_turns:
            raise ValueError(
                f"min_searches ({self.min_searches}) must be below max_turns ({self.max_turns}): "
                "the last turn is reserved for the answer"
            )
        return self


class PolicyConfig(BaseModel):
    """The policy model, named the way every command names a model."""

    name: str = Field(
        "embedded", description="Policy model: embedded, a .gguf, a model folder, a hub id or a server URL.",
        json_schema_extra=flag("--policy", "-p"),
    )
    adapter: str | None = Field(
        None, description="LoRA adapter of the policy: a GGUF LoRA (llama.cpp) or a peft folder such as "
        "RUN/adapter (transformers).", json_schema_extra=flag("--policy-adapter"),
    )
    backend: BackendName = Field(
        "auto", description="Backend of the policy: auto (GGUF: llama.cpp, folder: transformers, URL: openai), "
        "llama.cpp, transformers, openai or vllm.", json_schema_extra=flag("--policy-backend"),
    )

    @property
    def label(self) -> str:
        """How sessions and reports name the policy: the model, plus `+<adapter>` when one is applied."""
        return f"{self.name}+{self.adapter}" if self.adapter else self.name


def use_protocol_grammar(mode: GrammarMode, model: ResolvedModel | None) -> bool:
    """Whether to decode the policy under the protocol: always with `on`, never with `off`, and with `auto` for
    the embedded model (by any of its names), which was never trained on the protocol. The one place that
    decides it, for `zsl ask`, the TUI, evaluation, collection and GRPO rollouts."""
    if mode == "auto":
        return model is not None and model.source == "embedded"
    return mode == "on"


class AskConfig(BaseModel):
    """`zsl ask` and `zsl tui`: the policy, the engine, the loop's knobs, and how many samples to vote over."""

    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    samples: int = Field(1, ge=1, le=64, json_schema_extra=flag("--samples", "-n"),
                         description="Trajectories to sample and majority-vote over.")
    store: bool = Field(True, json_schema_extra=flag("--store/--no-store"),
                        description="Save the session to the history store.")

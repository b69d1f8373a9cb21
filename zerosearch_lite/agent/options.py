"""Typer options shared by `zsl ask` and `zsl tui`: one declaration each, so names, limits and help texts
stay the same in both commands, and `agent_config` to turn the agent's options into an `AgentConfig`.

Defaults stay with each command's parameters (Typer takes them from `=`, not from `Annotated`). The option's
name comes from the parameter's name (`max_turns: options.MaxTurns` is `--max-turns`) unless the alias names it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import ZslError

if TYPE_CHECKING:
    from .config import AgentConfig

Engine = Annotated[str, typer.Option("--engine", "-e", help="Search engine: simulated, corpus or http.")]
Policy = Annotated[str, typer.Option("--policy", "-p", help="Policy model: embedded, a .gguf, a folder, a hub id or a URL.")]
PolicyAdapter = Annotated[str | None, typer.Option(
    help="LoRA adapter for the policy: a GGUF LoRA (llama.cpp) or a peft folder such as RUN/adapter (transformers).")]
Simulator = Annotated[str, typer.Option("--simulator", "-s", help="Simulator model (for --engine simulated).")]
SimulatorAdapter = Annotated[str | None, typer.Option(help="LoRA adapter for the simulator.")]
Preset = Annotated[str, typer.Option(help="Simulation prompt preset: zsl or zerosearch.")]
Corpus = Annotated[str | None, typer.Option(help="JSONL corpus for --engine corpus.")]
Url = Annotated[str | None, typer.Option(help="/retrieve URL for --engine http.")]
TopK = Annotated[int, typer.Option("-k", min=1, max=20, help="Documents per search.")]
MaxTurns = Annotated[int, typer.Option(min=1, max=32, help="Turns before the run is cut off.")]
MaxTokens = Annotated[int, typer.Option(min=8, help="New tokens per turn.")]
Temperature = Annotated[float, typer.Option(min=0.0, max=2.0)]
Seed = Annotated[int | None, typer.Option(help="Sampling seed (sample i uses seed + 1000·i).")]
Grammar = Annotated[str, typer.Option(help="Protocol-constrained decoding: auto, on or off.")]
MinSearches = Annotated[int, typer.Option(min=0, help="With the grammar, searches required before answering.")]
Cache = Annotated[bool, typer.Option(help="Use the simulated-document cache.")]
Store = Annotated[bool, typer.Option(help="Save the session to the history store.")]


def agent_config(
    *, max_turns: int, max_tokens: int, k: int, temperature: float, seed: int | None, grammar: str, min_searches: int
) -> AgentConfig:
    """The agent settings these options give; a value the options let through but `AgentConfig` rejects (e.g.
    --min-searches not below --max-turns) is a one-line `ZslError`."""
    from pydantic import ValidationError

    from .config import AgentConfig

    try:
        return AgentConfig(
            max_turns=max_turns, max_tokens_per_turn=max_tokens, k=k, temperature=temperature, seed=seed,
            grammar=grammar, min_searches=min_searches,  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        raise ZslError(f"invalid option: {exc.errors()[0]['msg']}") from None

"""CLI command `zsl tui`: parse the same model and agent options as `zsl ask`, then open the app.

Textual is imported only inside the command, so `zsl` works without the `tui` extra installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..agent import options
from ..errors import ZslError

SCREEN_NAMES = ("ask", "history", "simulator", "training", "models")


def tui_command(
    policy: options.Policy = "embedded",
    policy_adapter: options.PolicyAdapter = None,
    engine: options.Engine = "simulated",
    simulator: options.Simulator = "embedded",
    simulator_adapter: options.SimulatorAdapter = None,
    preset: options.Preset = "zsl",
    corpus: options.Corpus = None,
    url: options.Url = None,
    k: options.TopK = 5,
    max_turns: options.MaxTurns = 4,
    max_tokens: options.MaxTokens = 256,
    temperature: options.Temperature = 0.7,
    seed: options.Seed = None,
    grammar: options.Grammar = "auto",
    min_searches: options.MinSearches = 1,
    cache: options.Cache = True,
    store: options.Store = True,
    run: Annotated[Path | None, typer.Option("--run", help="Training run directory to show on the Training screen.")] = None,
    screen: Annotated[str, typer.Option(help="Screen to open: ask, history, simulator, training or models.")] = "ask",
) -> None:
    """Open the terminal UI: ask and watch the agent, browse history, compare simulations, watch training."""
    try:
        import textual  # noqa: F401
        import textual_plotext  # noqa: F401
    except ImportError:
        # No square brackets here (the "tui" extra): the CLI prints errors as Rich markup.
        raise ZslError("the TUI needs textual and textual-plotext: pip install textual textual-plotext") from None
    from .app import ZslApp
    from .services import Settings, Workbench

    if screen not in SCREEN_NAMES:
        raise ZslError(f"unknown screen {screen!r}: choose one of {', '.join(SCREEN_NAMES)}")
    config = options.agent_config(
        max_turns=max_turns, max_tokens=max_tokens, k=k, temperature=temperature, seed=seed, grammar=grammar,
        min_searches=min_searches,
    )
    settings = Settings(
        policy=policy, policy_adapter=policy_adapter, engine=engine, simulator=simulator,
        simulator_adapter=simulator_adapter, preset=preset, corpus=corpus, url=url, use_cache=cache, store=store, agent=config,
    )
    ZslApp(Workbench(settings), run_dir=run, screen=screen).run()

"""CLI group `zsl sim`: collect → sft → eval, the simulator's training stage (thin: options and progress)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..console import err, out
from ..errors import ZslError

sim_app = typer.Typer(help="Train the simulator: collect real-engine data, LoRA SFT, measure usefulness control.",
                      no_args_is_help=True)

DataOpt = Annotated[Path, typer.Option("--data", help="QA JSONL/parquet with question + golden_answers.")]


def _progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=err)


@sim_app.command("collect")
def collect_command(
    data: DataOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (trajectories.jsonl, sft.jsonl); rerun to resume.")],
    corpus: Annotated[str | None, typer.Option(help="JSONL corpus for the real BM25 engine.")] = None,
    url: Annotated[str | None, typer.Option(help="A /retrieve URL instead of --corpus.")] = None,
    policy: Annotated[str, typer.Option(help="Policy model that searches.")] = "embedded",
    limit: Annotated[int | None, typer.Option(min=1, help="Use the first N questions.")] = None,
    labelling: Annotated[str, typer.Option(help="outcome (trajectory reached the answer) or contains (docs hold it).")] = "outcome",
    preset: Annotated[str, typer.Option(help="Simulation prompt preset of the SFT rows: zsl or zerosearch.")] = "zsl",
    k: Annotated[int, typer.Option("-k", min=1, max=20)] = 5,
    max_turns: Annotated[int, typer.Option(min=2, max=16)] = 3,
    max_tokens_per_turn: Annotated[int, typer.Option(min=16, help="New tokens the policy may write per turn.")] = 256,
    grammar: Annotated[str, typer.Option(help="Protocol-constrained decoding: auto (on for the embedded model), on, off.")] = "auto",
    seed: int = 0,
    question_field: str = "question",
    answers_field: str = "golden_answers",
) -> None:
    """Run the policy against a real engine and write simulator SFT data (resumable)."""
    from ..agent.config import AgentConfig
    from ..agent.loop import Agent
    from ..models.loading import load_backend
    from ..models.spec import resolve_model
    from ..simulator.factory import build_engine
    from .collect import collect
    from .datasets import load_qa

    if labelling not in ("outcome", "contains"):
        raise ZslError(f"--labelling must be outcome or contains, not {labelling!r}")
    dataset = load_qa(data, question_field=question_field, answers_field=answers_field, limit=limit)
    err.print(dataset.summary())
    engine = build_engine("http" if url else "corpus", corpus=corpus, url=url)
    model = resolve_model(policy)
    if grammar not in ("auto", "on", "off"):
        raise ZslError(f"--grammar must be auto, on or off, not {grammar!r}")
    config = AgentConfig(k=k, max_turns=max_turns, max_tokens_per_turn=max_tokens_per_turn, seed=seed,
                         grammar=grammar)  # type: ignore[arg-type]
    agent = Agent(load_backend(model), engine, config, grammar_default=model.source == "embedded")
    with _progress() as progress:
        task = progress.add_task("collect", total=len(dataset), info="")

        def update(stats):
            progress.update(task, completed=stats.questions + stats.resumed,
                            info=f"correct {stats.correct} · useful {stats.useful} · noisy {stats.noisy}")

        try:
            stats = collect(agent, dataset.examples, out_dir, preset=preset, labelling=labelling, on_progress=update)
        except KeyboardInterrupt:
            err.print(f"interrupted: what was collected is in {out_dir}; run the same command to resume")
            raise typer.Exit(130) from None
    out.print(f"collected {stats.questions} questions ({stats.resumed} already done): "
              f"{stats.correct} correct, {stats.useful} useful and {stats.noisy} noisy examples in {out_dir / 'sft.jsonl'}")


@sim_app.command("sft")
def sft_command(
    data: Annotated[Path, typer.Option("--data", help="sft.jsonl from `zsl sim collect`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder; rerun to resume from its checkpoint.")],
    model: Annotated[str, typer.Option(help="Base simulator model.")] = "embedded",
    max_steps: Annotated[int, typer.Option(min=1)] = 40,
    batch_size: Annotated[int, typer.Option(min=1)] = 4,
    grad_accum: Annotated[int, typer.Option(min=1)] = 1,
    max_length: Annotated[int, typer.Option(min=32)] = 512,
    lr: float = 2e-4,
    lora_r: int = 16,
    load_in_4bit: Annotated[bool | None, typer.Option("--load-in-4bit/--no-4bit", help="NF4 base (CUDA).")] = None,
    save_every: int = 10,
    merge: Annotated[bool, typer.Option(help="Also write merged/ (full model).")] = True,
    seed: int = 0,
) -> None:
    """LoRA SFT of the simulator on collected data (response-only loss; 4-bit on CUDA)."""
    from pydantic import ValidationError

    from .sft import SFTConfig, train_sft

    try:
        cfg = SFTConfig(model=model, data=str(data), out=str(out_dir), max_steps=max_steps, batch_size=batch_size,
                        grad_accum=grad_accum, max_length=max_length, lr=lr, lora_r=lora_r, lora_alpha=2 * lora_r,
                        load_in_4bit=load_in_4bit, save_every=save_every, merge=merge, seed=seed)
    except ValidationError as exc:
        raise ZslError(f"invalid option: {exc.errors()[0]['msg']}") from None
    with _progress() as progress:
        task = progress.add_task("sft", total=max_steps, info="loading")

        def update(row):
            progress.update(task, completed=row["step"],
                            info=f"loss {row['loss']:.3f} · {row['tokens_per_s']:.0f} tok/s")

        try:
            adapter = train_sft(cfg, on_step=update)
        except KeyboardInterrupt:
            err.print(f"interrupted: checkpoint saved in {out_dir}; run the same command to resume")
            raise typer.Exit(130) from None
    out.print(f"adapter: {adapter}" + (f"\nmerged model: {out_dir / 'merged'}" if merge else ""))


@sim_app.command("eval")
def eval_command(
    data: DataOpt,
    base: Annotated[str, typer.Option(help="Base simulator model.")] = "embedded",
    adapter: Annotated[list[str], typer.Option(help="Tuned simulator: a peft adapter folder (repeatable).")] = [],  # noqa: B006
    tuned: Annotated[list[str], typer.Option(help="Tuned simulator as a full model (merged folder or GGUF; repeatable).")] = [],  # noqa: B006
    backend: Annotated[str, typer.Option(help="auto, llama.cpp or transformers (the same for every row).")] = "transformers",
    preset: str = "zsl",
    limit: Annotated[int, typer.Option(min=1)] = 10,
    offset: Annotated[int, typer.Option(min=0, help="Skip the first N questions (e.g. those used for training).")] = 0,
    k: Annotated[int, typer.Option("-k", min=1, max=20)] = 5,
    structured: Annotated[bool, typer.Option("--structured/--free", help="Grammar-forced 'Doc i:' lines (llama.cpp).")] = False,
) -> None:
    """Usefulness gap: share of questions whose useful vs noisy documents contain a gold answer."""
    from rich.table import Table

    from ..models.loading import load_backend
    from ..simulator.simulated import SimulatedSearchEngine
    from .datasets import load_qa
    from .sim_eval import evaluate_simulator

    dataset = load_qa(data, limit=offset + limit)
    examples = dataset.examples[offset:]
    if not examples:
        raise ZslError(f"no questions left after --offset {offset} in {data}")
    rows = [("base", base, None)] + [(f"adapter {a}", base, a) for a in adapter] + [(f"tuned {t}", t, None) for t in tuned]
    reports = []
    for label, model_name, adapter_dir in rows:
        err.print(f"evaluating {escape(label)} …")
        engine = SimulatedSearchEngine(load_backend(model_name, backend, adapter=adapter_dir),  # type: ignore[arg-type]
                                       preset=preset, cache=None, structured=structured)
        reports.append(evaluate_simulator(engine, examples, name=label, k=k))
        engine.backend.close()
    table = Table(title=f"usefulness gap on {len(examples)} questions from {data.name} (k={k}, {backend})")
    for col in ("simulator", "useful docs hold answer", "noisy docs hold answer", "gap", "docs/query", "format ok", "seconds"):
        table.add_column(col, justify="right" if col != "simulator" else "left")
    for r in reports:
        table.add_row(escape(r.name), f"{r.useful_rate:.2f}", f"{r.noisy_rate:.2f}", f"{r.gap:+.2f}",
                      f"{r.docs_per_query:.1f}", f"{r.format_ok:.2f}", f"{r.seconds:.0f}")
    out.print(table)

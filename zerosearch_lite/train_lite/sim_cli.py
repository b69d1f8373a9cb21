"""CLI group `zsl sim`: collect → sft → eval, the simulator's training stage (thin: options and progress)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from ..config_cli import config_command
from ..console import err, out, progress_bar
from ..errors import ZslError
from ..simulator.simulated import LEAK_RULE, NoiseGuard
from .collect import CollectConfig
from .sft import SFTConfig
from .sim_eval import SimEvalConfig

sim_app = typer.Typer(help="Train the simulator: collect real-engine data, LoRA SFT, measure usefulness control.",
                      no_args_is_help=True)

# The simulator fields of an engine: collection searches a real engine, so they would do nothing there.
COLLECT_EXCLUDED = ("engine.simulator", "engine.simulator_adapter", "engine.simulator_backend",
                    "engine.simulator_4bit", "engine.preset", "engine.structured", "engine.cache",
                    "engine.semantic_threshold", "engine.guard", "agent.search_mode")


@sim_app.command("collect")
@config_command(CollectConfig, exclude=COLLECT_EXCLUDED)
def collect_command(config: CollectConfig) -> None:
    """Run the policy against a real engine and write simulator SFT data (resumable)."""
    from ..agent.config import use_protocol_grammar
    from ..agent.loop import Agent
    from ..evaluation.datasets import load_qa
    from ..models.loading import load_model
    from ..saved_settings import save as save_settings
    from ..simulator.config import open_engine
    from .collect import check_saved_settings, collect

    cfg, out_dir = config, Path(config.out)
    check_saved_settings(cfg)
    dataset = load_qa(cfg.data, question_field=cfg.question_field, answers_field=cfg.answers_field, limit=cfg.limit)
    err.print(dataset.summary())
    engine = open_engine(cfg.engine)
    loaded = load_model(cfg.policy.name, cfg.policy.backend, adapter=cfg.policy.adapter,
                        n_ctx=max(cfg.agent.max_context, 2048))
    agent = Agent(loaded.backend, engine, cfg.agent,
                  protocol_grammar=use_protocol_grammar(cfg.agent.grammar, loaded.model))
    try:
        save_settings(cfg, out_dir)
        with progress_bar() as progress:
            task = progress.add_task("collect", total=len(dataset), info="")

            def update(stats):
                progress.update(task, completed=stats.questions + stats.resumed,
                                info=f"correct {stats.correct} · useful {stats.useful} · noisy {stats.noisy}")

            try:
                stats = collect(agent, dataset.examples, out_dir, preset=cfg.sft_preset, labelling=cfg.labelling,
                                on_progress=update)
            except KeyboardInterrupt:
                err.print(f"interrupted: what was collected is in {out_dir}; run the same command to resume")
                raise typer.Exit(130) from None
    finally:
        engine.close()
        loaded.backend.close()
    out.print(f"collected {stats.questions} questions ({stats.resumed} already done): "
              f"{stats.correct} correct, {stats.useful} useful and {stats.noisy} noisy examples in {out_dir / 'sft.jsonl'}")


@sim_app.command("sft")
@config_command(SFTConfig)
def sft_command(config: SFTConfig) -> None:
    """LoRA SFT of the simulator on collected data (response-only loss; 4-bit on CUDA)."""
    from .sft import train_sft

    with progress_bar() as progress:
        task = progress.add_task("sft", total=config.max_steps, info="loading")

        def update(row):
            progress.update(task, completed=row["step"],
                            info=f"loss {row['loss']:.3f} · {row['tokens_per_s']:.0f} tok/s")

        try:
            adapter = train_sft(config, on_step=update)
        except KeyboardInterrupt:
            err.print(f"interrupted: checkpoint saved in {config.out}; run the same command to resume")
            raise typer.Exit(130) from None
    out.print(f"adapter: {adapter}" + (f"\nmerged model: {Path(config.out) / 'merged'}" if config.merge else ""))


@sim_app.command("eval")
@config_command(SimEvalConfig)
def eval_command(config: SimEvalConfig) -> None:
    """Usefulness gap: share of questions whose useful vs noisy documents contain a gold answer, without and with
    the noise guard (resumable: rows are kept per question)."""
    from rich import box
    from rich.table import Table

    from ..evaluation.datasets import load_qa
    from ..models.loading import load_backend
    from ..simulator.prompts import get_preset, output_version
    from ..simulator.simulated import SimulatedSearchEngine
    from .jsonl import JsonlWriter, read_records
    from .sim_eval import QuestionRow, evaluate_rows, summarize

    cfg = config
    out_file = cfg.rows_file()
    dataset = load_qa(cfg.data, limit=cfg.offset + cfg.limit)
    examples = dataset.examples[cfg.offset:]
    if not examples:
        raise ZslError(f"no questions left after --offset {cfg.offset} in {cfg.data}")
    guards = ["off"] + [g for g in dict.fromkeys(cfg.guard) if g != "off"]

    def short(path: str) -> str:  # the table names a model by its last two path parts
        return "/".join(Path(path).parts[-2:])

    rows = [("base", cfg.base, None)] + [(f"adapter {short(a)}", cfg.base, a) for a in cfg.adapter] + \
        [(f"tuned {short(t)}", t, None) for t in cfg.tuned]

    def setting(row: tuple[str, str, str | None], mode: str) -> str:  # what must match for a stored row to be reused
        label, model_name, adapter_dir = row
        options = f"{cfg.backend}|{output_version(get_preset(cfg.preset), cfg.structured)}|k={cfg.k}"
        return f"{label}|{model_name}|{adapter_dir or ''}|{options}|{LEAK_RULE}|guard={mode}" + \
            (f"/{cfg.guard_attempts}" if mode != "off" else "")

    stored: dict[tuple[str, str], QuestionRow] = {}
    for record in read_records(out_file):
        if (row := QuestionRow.from_dict(record)) is not None:
            stored[(row.setting, row.question_id)] = row
    writer = JsonlWriter(out_file)

    def keep(new_rows: list[QuestionRow]) -> None:
        for row in new_rows:
            stored[(row.setting, row.question_id)] = row
            writer.write(row.to_dict())

    try:
        with progress_bar() as progress:
            for row in rows:
                label, model_name, adapter_dir = row
                todo = {mode: [e for e in examples if (setting(row, mode), e.id) not in stored] for mode in guards}
                if not any(todo.values()):
                    continue
                task = progress.add_task(f"{escape(label)}: loading", total=len(examples) * len(guards),
                                         completed=len(examples) * len(guards) - sum(map(len, todo.values())), info="")
                simulator = load_backend(model_name, cfg.backend, adapter=adapter_dir)  # type: ignore[arg-type]
                try:
                    for mode in guards:
                        progress.update(task, description=f"{escape(label)}: guard {mode}")
                        engine = SimulatedSearchEngine(simulator, preset=cfg.preset, cache=None, structured=cfg.structured,
                                                       guard=NoiseGuard(mode=mode, attempts=cfg.guard_attempts))  # type: ignore[arg-type]

                        def advance(new_rows: list[QuestionRow], task=task) -> None:
                            keep(new_rows)
                            progress.advance(task, len(new_rows))

                        evaluate_rows(engine, todo[mode], setting=setting(row, mode), k=cfg.k, on_rows=advance)
                finally:
                    simulator.close()
    except KeyboardInterrupt:
        err.print(f"interrupted: rows so far are in {out_file}; run the same command to resume")
        raise typer.Exit(130) from None
    finally:
        writer.close()
    reports = [summarize(row[0], mode, [stored[(setting(row, mode), e.id)] for e in examples])
               for row in rows for mode in guards]
    table = Table(title=f"usefulness gap on {len(examples)} questions from {Path(cfg.data).name} (k={cfg.k}, {cfg.backend})",
                  caption="useful / noisy: share of questions whose useful / noisy documents hold a gold answer; "
                          "noisy docs: share of noisy documents holding one; docs, format (k docs written), seconds, "
                          "simulator tokens and guard retries: per query", box=box.SIMPLE_HEAD, padding=0)
    table.add_column("simulator", overflow="fold", min_width=min(24, max(len(r.name) for r in reports)))
    table.add_column("guard", no_wrap=True)
    for col in ("useful", "noisy", "noisy docs", "gap", "docs", "format", "s/query", "tokens", "retries"):
        table.add_column(col, justify="right", no_wrap=col != "noisy docs")
    for r in reports:
        table.add_row(escape(r.name), r.guard, f"{r.useful_rate:.2f}", f"{r.noisy_rate:.2f}", f"{r.noisy_doc_rate:.2f}",
                      f"{r.gap:+.2f}", f"{r.docs_per_query:.1f}", f"{r.format_ok:.2f}", f"{r.seconds_per_query:.1f}",
                      f"{r.generated_tokens / max(1, 2 * r.questions):.0f}", f"{r.retries_per_query:.2f}")
    out.print(table)

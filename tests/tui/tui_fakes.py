"""Scripted models for the TUI tests: a workbench whose policy, simulator and model list are fakes.

A plain module, not a conftest.py: a second conftest.py would take over the name `conftest` that other
test files import helpers from.
"""

from __future__ import annotations

from zerosearch_lite.agent.config import AgentConfig
from zerosearch_lite.models.backends.fake import FakeBackend
from zerosearch_lite.models.spec import ResolvedModel
from zerosearch_lite.simulator.cache import DocumentCache
from zerosearch_lite.simulator.simulated import SimulatedSearchEngine
from zerosearch_lite.tui.services import Settings, Workbench

SEARCH_TURN = "<think>I should look up who wrote it</think>\n<search>frankenstein novel author</search>"
ANSWER_TURN = "<think>the documents name Mary Shelley</think>\n<answer>Mary Shelley</answer>"
USEFUL_DOCS = "\n".join(
    f"Doc {i}: (Frankenstein) Mary Shelley wrote the novel Frankenstein, published in 1818, fact {i}."
    for i in range(1, 4)
)
NOISY_DOCS = "\n".join(
    f"Doc {i}: (Gothic fiction) Many gothic novels appeared in the nineteenth century, note {i}."
    for i in range(1, 4)
)
FIXED_MODELS = [
    ResolvedModel("embedded", "gguf", "/models/SmolLM2-135M-Instruct.Q4_1.gguf", "embedded", 94_000_000),
    ResolvedModel("org/simulator-3b", "hf", "/hub/org/simulator-3b", "hub", 6_200_000_000),
]


def simulated_docs(prompt: str) -> str:
    """The fake simulator answers by mode, as the prompt asks (the zsl noisy prompt asks for unhelpful ones)."""
    return NOISY_DOCS if "unhelpful" in prompt else USEFUL_DOCS


def fake_workbench(tmp_path, *, policy_outputs=(SEARCH_TURN, ANSWER_TURN), policy=None) -> Workbench:
    config = AgentConfig(grammar="off", max_turns=3, k=3, seed=1)
    engine = SimulatedSearchEngine(
        FakeBackend(default=simulated_docs, model_id="fake-simulator"),
        cache=DocumentCache(tmp_path / "doc_cache.db"), structured=False,
    )
    return Workbench(
        Settings(agent=config),
        policy=policy or FakeBackend(policy_outputs, model_id="fake-policy"),
        engine=engine,
        list_models=lambda: list(FIXED_MODELS),
        sessions_path=tmp_path / "sessions.db",
    )


def eval_runs(root, names=("direct", "agent")) -> list:
    """Evaluation runs written by the real evaluator (scripted policy) under `root`: the first answers every
    question wrong, the second answers the French one right; three samples each."""
    import json

    from zerosearch_lite.evaluation.runner import EvalConfig, run_eval

    root.mkdir(parents=True, exist_ok=True)
    qa = root / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in (
        {"id": "a", "question": "Capital of France?", "golden_answers": ["Paris"]},
        {"id": "b", "question": "Capital of Spain?", "golden_answers": ["Madrid"]})))
    runs = []
    for i, name in enumerate(names):
        def answer(prompt: str, right=bool(i)) -> str:
            return "<answer>" + ("Paris" if right and "France" in prompt else "Rome") + "</answer>"

        cfg = EvalConfig(data=[str(qa)], out=str(root / "evals" / name), method="direct", samples=3,
                         agent={"grammar": "off", "seed": 0})
        run_eval(cfg, policy=FakeBackend(default=answer))
        runs.append(root / "evals" / name)
    return runs

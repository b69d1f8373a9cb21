"""GRPO: curriculum, loss mask, advantages, recycling, KL, rollouts, exact resume (tiny random model)."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import DATA

from zerosearch_lite.agent.config import AgentConfig
from zerosearch_lite.agent.loop import apply_search, apply_turn
from zerosearch_lite.agent.protocol import render_information, user_message
from zerosearch_lite.agent.types import Segment, Trajectory
from zerosearch_lite.errors import ZslError
from zerosearch_lite.models.backends.fake import FakeBackend
from zerosearch_lite.models.spec import resolve_model
from zerosearch_lite.simulator.cache import DocumentCache
from zerosearch_lite.simulator.simulated import SimulatedSearchEngine
from zerosearch_lite.simulator.types import Doc, SearchResult
from zerosearch_lite.train_lite import grpo as grpo_module
from zerosearch_lite.train_lite.curriculum import Curriculum
from zerosearch_lite.train_lite.datasets import QAExample
from zerosearch_lite.train_lite.grpo import GRPOConfig, build_trainer
from zerosearch_lite.train_lite.grpo_loss import group_advantages, grpo_loss, token_logprobs
from zerosearch_lite.train_lite.metrics import read_metrics
from zerosearch_lite.train_lite.modeling import LoraSettings, add_lora, load_base, load_tokenizer
from zerosearch_lite.train_lite.recycle import RecyclePool
from zerosearch_lite.train_lite.rollout import RolloutBatch, rollout, tokenize_trajectory

# ------------------------------------------------------------------------------------------- curriculum


def test_curriculum_at_start_middle_and_end():
    curve = Curriculum(p_start=0.1, p_end=0.5, base=4.0)
    m = 200
    assert curve.noise_probability(0, m) == pytest.approx(0.1)
    # b^(1/2) = 2 → (2 - 1) / (4 - 1) = 1/3 of the way
    assert curve.noise_probability(m // 2, m) == pytest.approx(0.1 + 0.4 / 3)
    assert curve.noise_probability(m, m) == pytest.approx(0.5)
    assert Curriculum(base=1.0).noise_probability(50, 100) == pytest.approx(0.25)  # linear limit


# ------------------------------------------------------------------------------------------- loss mask


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(resolve_model(str(tiny_model_dir)))


def built_trajectory(tokenizer) -> Trajectory:
    traj = Trajectory(question="who wrote frankenstein?")
    prompt = tokenizer.apply_chat_template(user_message(traj.question), tokenize=False, add_generation_prompt=True)
    traj.segments.append(Segment(prompt, generated=False))
    action = apply_turn(traj, "<think>I should look it up.</think>\n<search>frankenstein author", "stop")[-1]
    apply_search(traj, action, SearchResult("frankenstein author", [Doc("Frankenstein", "A novel by Mary Shelley.", "t")]))
    apply_turn(traj, "no tags at all", "stop")  # invalid: the retry hint is environment text
    apply_turn(traj, "<think>It is Mary Shelley.</think>\n<answer> Mary Shelley", "stop")
    return traj


def test_mask_covers_exactly_the_environment_spans_token_by_token(tokenizer):
    traj = built_trajectory(tokenizer)
    ids, mask = tokenize_trajectory(tokenizer, traj.segments, max_length=4096)
    assert len(ids) == len(mask)
    # Walk the tokens and the segments side by side: every token's text lies inside one segment, and its
    # mask bit is that segment's `generated` flag.
    position = 0
    for segment in traj.segments:
        pieces = tokenizer(segment.text, add_special_tokens=False)["input_ids"]
        assert ids[position : position + len(pieces)] == pieces
        assert mask[position : position + len(pieces)] == [int(segment.generated)] * len(pieces)
        position += len(pieces)
    assert position == len(ids)
    masked_after_prompt = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m][len(
        tokenizer(traj.segments[0].text, add_special_tokens=False)["input_ids"]):])
    info = render_information([Doc("Frankenstein", "A novel by Mary Shelley.", "t")])
    assert masked_after_prompt == info + traj.segments[4].text  # the <information> block, then the retry hint
    trained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert "<information>" not in trained and "Mary Shelley</answer>" in trained
    assert trained.startswith("<think>I should look it up.</think>\n<search>frankenstein author</search>")


def test_mask_is_cut_with_the_ids(tokenizer):
    ids, mask = tokenize_trajectory(tokenizer, built_trajectory(tokenizer).segments, max_length=10)
    assert len(ids) == len(mask) == 10


# ------------------------------------------------------------------------------------------- advantages


def test_zero_variance_group_gets_zero_advantages():
    adv = group_advantages([1.0, 1.0, 1.0, 0.0, 1.0, 0.5], group_size=3)
    assert adv[:3] == [0.0, 0.0, 0.0]
    assert adv[3] < 0 < adv[4] and abs(sum(adv[3:])) < 1e-6
    with pytest.raises(ValueError):
        group_advantages([1.0, 0.0, 1.0], group_size=2)


def test_pool_returns_oldest_least_tried_after_cooldown_and_counts_recovery():
    pool = RecyclePool(max_tries=2, cooldown=2)
    for qid, step in (("a", 0), ("b", 1), ("c", 1)):
        assert pool.report(qid, True, step, from_pool=False) == "added"
    assert pool.take(5, step=2) == ["a"]  # b and c are still cooling down
    assert pool.report("a", True, 2, from_pool=True) == "returned"
    assert pool.take(5, step=4) == ["b", "c", "a"][:3] and len(pool) == 0
    assert pool.report("b", False, 4, from_pool=True) == "recovered"
    assert pool.report("c", True, 4, from_pool=True) == "returned"
    assert pool.report("a", True, 4, from_pool=True) == "dropped"  # second flat return: max_tries
    assert (pool.state.recovered, pool.state.dropped, len(pool)) == (1, 1, 1)


# ------------------------------------------------------------------------------------------- KL


@pytest.fixture()
def lora_model(tiny_model_dir):
    torch.manual_seed(0)
    base = load_base(resolve_model(str(tiny_model_dir)), load_in_4bit=False, gradient_checkpointing=False)
    return add_lora(base, LoraSettings(r=4, alpha=8, dropout=0.0))


def test_kl_is_zero_while_the_adapter_is_zero_and_grows_after_an_update(lora_model, tokenizer):
    ids = torch.tensor([tokenizer("the quick brown fox jumps over the lazy dog")["input_ids"]])
    attn = torch.ones_like(ids)
    mask = torch.ones((1, ids.shape[1] - 1), dtype=torch.long)

    def kl_now() -> float:
        with torch.no_grad(), lora_model.disable_adapter():
            ref = token_logprobs(lora_model, ids, attn, chunk=4)
        logp = token_logprobs(lora_model, ids, attn, chunk=4)
        loss, parts = grpo_loss(logp, logp.detach(), ref, torch.tensor([1.0]), mask,
                                clip_eps=0.2, kl_beta=0.1, total_tokens=int(mask.sum()))
        return parts.kl, loss

    kl, loss = kl_now()
    assert kl == 0.0
    loss.backward()
    torch.optim.SGD([p for p in lora_model.parameters() if p.requires_grad], lr=1.0).step()
    assert kl_now()[0] > 0.0


def test_chunked_logprobs_equal_full_logits(lora_model, tokenizer):
    ids = torch.tensor([tokenizer("a b c d e f g h i j k l")["input_ids"]] * 2)
    attn = torch.ones_like(ids)
    with torch.no_grad():
        logits = lora_model(input_ids=ids, attention_mask=attn).logits
        full = torch.gather(logits[:, :-1].log_softmax(-1), 2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        chunked = token_logprobs(lora_model, ids, attn, chunk=3)
    assert torch.allclose(full, chunked, atol=1e-5)


# ------------------------------------------------------------------------------------------- rollouts


def test_rollout_groups_noise_and_shared_cache(tmp_path):
    def policy_turn(prompt: str) -> str:
        if "<information>Doc" in prompt:
            return "<think>found it</think>\n<answer> Mary Shelley</answer>"
        return "<think>search</think>\n<search>frankenstein author</search>"

    examples = [QAExample("q1", "who wrote frankenstein?", ("Mary Shelley",)),
                QAExample("q2", "who wrote dracula?", ("Bram Stoker",))]
    agent = AgentConfig(max_turns=3, k=2, grammar="off")
    for noise_p, mode in ((0.0, "useful"), (1.0, "noisy")):
        simulator = FakeBackend(default="Doc 1: (A) alpha beta gamma\nDoc 2: (B) delta epsilon zeta")
        engine = SimulatedSearchEngine(simulator, cache=DocumentCache(tmp_path / f"c{noise_p}.db"), structured=False)
        batch = rollout(FakeBackend(default=policy_turn), engine, examples, 3, agent,
                        noise_p=noise_p, rng=random.Random(0))
        assert [len(g) for g in batch.groups] == [3, 3]
        assert all(t.answer == "Mary Shelley" and t.finished for t in batch.trajectories)
        assert {s.mode for t in batch.trajectories for s in t.searches} == {mode}
        # the group's identical searches share one generation; a later batch is served by the cache
        assert batch.searches == 6 and len(simulator.history) == 2
        again = rollout(FakeBackend(default=policy_turn), engine, examples, 3, agent,
                        noise_p=noise_p, rng=random.Random(0))
        assert again.cache_hits == 6 and again.cache_hit_rate == 1.0 and len(simulator.history) == 2


# ------------------------------------------------------------------------------------------- trainer


def scripted_rollout(policy, engine, examples, group_size, agent, *, noise_p, rng, stopped=lambda: False,
                     constrained=False, max_rows=None):
    """Deterministic stand-in for rollouts: 'always' questions are answered right by every sample (a
    zero-variance group); the others right or wrong at random from the step's seeded rng."""
    batch = RolloutBatch(examples=list(examples), groups=[])
    for example in examples:
        group = []
        for _ in range(group_size):
            right = example.question.startswith("always") or rng.random() < 0.5
            answer = example.golden_answers[0] if right else "nobody"
            traj = Trajectory(question=example.question)
            traj.segments.append(Segment(policy.render_chat(user_message(example.question)), generated=False))
            apply_turn(traj, f"<think>thinking about {example.id}</think>\n<answer> {answer}", "stop")
            group.append(traj)
        batch.groups.append(group)
    return batch


@pytest.fixture()
def qa_file(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [("always", "Paris"), ("mixed one", "Rome"), ("mixed two", "Oslo"), ("mixed three", "Bern")]
    path.write_text("".join(f'{{"id": "q{i}", "question": "{q}", "golden_answers": ["{a}"]}}\n'
                            for i, (q, a) in enumerate(rows)))
    return path


def make_cfg(qa_file, out, **overrides) -> GRPOConfig:
    values = {"data": str(qa_file), "out": str(out), "steps": 4, "batch_questions": 2, "group_size": 3, "lr": 1e-2,
                  "save_every": 2, "recycle_share": 0.5, "pool_cooldown": 1, "lora_r": 4, "lora_alpha": 8, "micro_batch": 2, "seed": 3}
    return GRPOConfig(**(values | overrides))


def trainer_for(cfg, tiny_model_dir, resume=False):
    torch.manual_seed(0)
    model = load_base(resolve_model(str(tiny_model_dir)), load_in_4bit=False, gradient_checkpointing=False)
    return build_trainer(cfg.model_copy(update={"policy": str(tiny_model_dir)}), resume=resume, model=model,
                         engine=object())


@pytest.fixture()
def scripted(monkeypatch):
    monkeypatch.setattr(grpo_module, "rollout", scripted_rollout)


def adapter_weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_" in k}


@pytest.mark.parametrize("policy", ["recycle", "filter", "keep"])
def test_zero_variance_groups_go_to_the_pool_only_under_recycle(scripted, qa_file, tmp_path, tiny_model_dir, policy):
    cfg = make_cfg(qa_file, tmp_path / policy, zero_variance=policy, steps=1, batch_questions=4)
    trainer = trainer_for(cfg, tiny_model_dir)
    row = trainer.run_step(0, stopped=lambda: False)
    assert row.zero_variance_groups >= 1  # the "always" question at least
    pooled = [e.id for e in trainer.pool.state.entries]
    if policy == "recycle":
        assert "q0" in pooled and row.pool_size == len(pooled) == row.zero_variance_groups
    else:
        assert pooled == [] and row.pool_size == 0


def test_a_step_whose_groups_are_all_flat_makes_no_update_and_reports_no_kl(scripted, tmp_path, tiny_model_dir):
    qa = tmp_path / "always.jsonl"
    qa.write_text('{"id": "a", "question": "always one", "golden_answers": ["Paris"]}\n')
    trainer = trainer_for(make_cfg(qa, tmp_path / "run", steps=1, batch_questions=1), tiny_model_dir)
    before = adapter_weights(trainer)
    row = trainer.run_step(0, stopped=lambda: False)
    assert row.zero_variance_groups == 1 and row.kl is None and row.loss is None
    assert all(torch.equal(v, adapter_weights(trainer)[k]) for k, v in before.items())


def test_recycled_questions_come_back_into_later_batches(scripted, qa_file, tmp_path, tiny_model_dir):
    trainer = trainer_for(make_cfg(qa_file, tmp_path / "run", steps=6), tiny_model_dir)
    rows = [trainer.run_step(step, stopped=lambda: False) for step in range(6)]
    assert any(r.pool_share > 0 for r in rows)
    assert trainer.pool.state.returned > 0


def test_killed_run_resumes_exactly_with_no_gap_or_duplicate(scripted, qa_file, tmp_path, tiny_model_dir):
    straight = trainer_for(make_cfg(qa_file, tmp_path / "straight"), tiny_model_dir)
    straight.train()
    expected = read_metrics(tmp_path / "straight")

    cfg = make_cfg(qa_file, tmp_path / "killed")
    first = trainer_for(cfg, tiny_model_dir)
    for step in range(3):  # checkpoint after step 2; step 3's row is written, then the process "dies"
        first.run_step(step, stopped=lambda: False)
    with pytest.raises(ZslError, match="--resume"):
        trainer_for(cfg, tiny_model_dir)
    resumed = trainer_for(cfg, tiny_model_dir, resume=True)
    assert resumed.step == 2
    resumed.train()
    rows = read_metrics(tmp_path / "killed")
    assert [r.step for r in rows] == [1, 2, 3, 4]
    assert [r.reward_mean for r in rows] == [r.reward_mean for r in expected]
    assert [r.pool_size for r in rows] == [r.pool_size for r in expected]
    final = trainer_for(make_cfg(qa_file, tmp_path / "killed"), tiny_model_dir, resume=True)
    reference = trainer_for(make_cfg(qa_file, tmp_path / "straight"), tiny_model_dir, resume=True)
    for name, value in adapter_weights(reference).items():
        assert torch.allclose(value, adapter_weights(final)[name], atol=1e-6), name
    assert any(v.abs().sum() > 0 for k, v in adapter_weights(final).items() if "lora_B" in k)  # it did learn


def test_ctrl_c_during_rollouts_saves_the_last_finished_step(scripted, qa_file, tmp_path, tiny_model_dir, monkeypatch):
    cfg = make_cfg(qa_file, tmp_path / "run")
    trainer = trainer_for(cfg, tiny_model_dir)
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return scripted_rollout(*args, **kwargs)

    monkeypatch.setattr(grpo_module, "rollout", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    resumed = trainer_for(cfg, tiny_model_dir, resume=True)
    assert resumed.step == 1 and [r.step for r in read_metrics(cfg.out)] == [1]


def test_resume_needs_a_run_directory(tmp_path):
    with pytest.raises(ZslError, match="not a GRPO run directory"):
        grpo_module.load_run_config(tmp_path)


def test_real_rollouts_and_update_on_the_tiny_model(qa_file, tmp_path, tiny_model_dir):
    """No script: the tiny random policy samples real turns against the BM25 corpus engine."""
    cfg = make_cfg(qa_file, tmp_path / "real", steps=1, engine="corpus", corpus=str(DATA / "corpus_small.jsonl"),
                   agent=AgentConfig(max_turns=2, max_tokens_per_turn=16, max_context=1024, k=2, grammar="off",
                                     temperature=1.0, top_p=1.0))
    torch.manual_seed(0)
    model = load_base(resolve_model(str(tiny_model_dir)), load_in_4bit=False, gradient_checkpointing=False)
    trainer = build_trainer(cfg.model_copy(update={"policy": str(tiny_model_dir)}), resume=False, model=model)
    trainer.train()
    (row,) = read_metrics(cfg.out)
    assert row.step == 1 and row.response_tokens > 0 and row.rollout_seconds > 0
    assert (tmp_path / "real" / "adapter" / "adapter_config.json").is_file()

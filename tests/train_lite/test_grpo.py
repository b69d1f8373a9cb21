"""GRPO: curriculum, loss mask, advantages, recycling, KL, rollouts, exact resume (tiny random model)."""

from __future__ import annotations

import random

import pytest
import torch

from zerosearch_lite.agent.config import AgentConfig, PolicyConfig
from zerosearch_lite.agent.protocol import render_information, user_message
from zerosearch_lite.agent.rollout import Rollout, RolloutRequest, RolloutStats
from zerosearch_lite.agent.turns import apply_search, apply_turn, start_trajectory
from zerosearch_lite.agent.types import Segment, Trajectory
from zerosearch_lite.errors import ZslError
from zerosearch_lite.evaluation.datasets import QAExample
from zerosearch_lite.models.backends.base import Completion
from zerosearch_lite.models.backends.fake import FakeBackend
from zerosearch_lite.models.backends.transformers_backend import TransformersBackend
from zerosearch_lite.models.spec import resolve_model
from zerosearch_lite.simulator.cache import DocumentCache
from zerosearch_lite.simulator.simulated import SimulatedSearchEngine
from zerosearch_lite.simulator.types import Doc, SearchContext, SearchResult
from zerosearch_lite.train_lite import grpo as grpo_module
from zerosearch_lite.train_lite.curriculum import Curriculum
from zerosearch_lite.train_lite.grpo import GRPOConfig, build_trainer
from zerosearch_lite.train_lite.grpo_loss import group_advantages, grpo_loss, token_logprobs
from zerosearch_lite.train_lite.metrics import read_metrics
from zerosearch_lite.train_lite.modeling import LoraSettings, add_lora, load_base, load_tokenizer
from zerosearch_lite.train_lite.recycle import RecyclePool
from zerosearch_lite.train_lite.sequences import tokenize_trajectory

TURNS = AgentConfig(grammar="off", max_turns=4)


def record(policy, traj: Trajectory, text: str, ids: list[int] | None = None):
    """One generated turn, as a backend would return it."""
    return apply_turn(policy, traj, Completion(text, "stop", token_ids=ids), config=TURNS, turn=traj.turns)


# ------------------------------------------------------------------------------------------- curriculum


def test_curriculum_at_start_middle_and_end():
    curve = Curriculum(p_start=0.1, p_end=0.5, base=4.0)
    m = 200
    assert curve.noise_probability(0, m) == pytest.approx(0.1)
    # b^(1/2) = 2 → (2 - 1) / (4 - 1) = 1/3 of the way
    assert curve.noise_probability(m // 2, m) == pytest.approx(0.1 + 0.4 / 3)
    assert curve.noise_probability(m, m) == pytest.approx(0.5)
    assert Curriculum(base=1.0).noise_probability(50, 100) == pytest.approx(0.25)  # linear limit


def test_the_last_training_step_trains_at_p_end():
    """Training steps 0..m-1 are the paper's i = 1..m: the last one draws noise with p_e, the first just above p_s."""
    curve = Curriculum(p_start=0.0, p_end=0.5, base=4.0)
    assert curve.at_step(19, 20) == pytest.approx(0.5)
    assert 0.0 < curve.at_step(0, 20) < 0.02
    assert Curriculum(p_start=0.0, p_end=1.0, base=1.0).at_step(0, 2) == pytest.approx(0.5)


def test_a_fractional_pool_share_recycles_at_that_rate_on_average():
    from zerosearch_lite.train_lite.recycle import pool_slots

    assert [pool_slots(0.5, 4, draw) for draw in (0.0, 0.99)] == [2, 2]  # whole: as before
    assert [pool_slots(0.5, 1, draw) for draw in (0.2, 0.7)] == [1, 0]  # half a question: every other step
    assert pool_slots(0.0, 8, 0.0) == 0 and pool_slots(1.0, 3, 0.99) == 3
    draws = [i / 1000 for i in range(1000)]
    assert sum(pool_slots(0.3, 5, d) for d in draws) / len(draws) == pytest.approx(1.5)


def test_ids_a_merged_training_set_repeats_are_made_unique_for_the_pool():
    from zerosearch_lite.evaluation.datasets import QAExample
    from zerosearch_lite.train_lite.grpo import unique_ids

    merged = [QAExample("train_0", "a?", ("x",), "nq"), QAExample("train_0", "b?", ("y",), "hotpotqa"),
              QAExample("train_0", "c?", ("z",), "hotpotqa"), QAExample("q7", "d?", ("w",), "nq")]
    assert [e.id for e in unique_ids(merged)] == ["nq/train_0", "hotpotqa/train_0", "hotpotqa/train_0#2", "q7"]
    assert [e.question for e in unique_ids(merged)] == ["a?", "b?", "c?", "d?"]
    distinct = merged[3:]
    assert unique_ids(distinct) is distinct  # ids already unique: left alone (a resumed pool keeps its keys)


def test_a_kill_between_the_two_renames_of_best_keeps_the_previous_best(tmp_path):
    import json

    from zerosearch_lite.train_lite.heldout import BEST_FILE, BestAdapter

    aside = tmp_path / ".best.old"  # `offer` moved the old best/ aside, then died before renaming the new one in
    aside.mkdir()
    (aside / BEST_FILE).write_text(json.dumps({"step": 5, "strict_em": 0.1, "cover_em": 0.2, "f1": 0.3,
                                               "searches": 1.0, "answered": 1.0}))
    best = BestAdapter(tmp_path)
    assert best.best is not None and best.best.step == 5 and (tmp_path / "best" / BEST_FILE).is_file()


# ------------------------------------------------------------------------------------------- loss mask


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(resolve_model(str(tiny_model_dir)))


def built_trajectory(tokenizer) -> Trajectory:
    policy = FakeBackend()  # no token ids: the environment text is tokenized by `tokenize_trajectory`
    traj = Trajectory(question="who wrote frankenstein?")
    prompt = tokenizer.apply_chat_template(user_message(traj.question), tokenize=False, add_generation_prompt=True)
    traj.segments.append(Segment(prompt, generated=False))
    action = record(policy, traj, "<think>I should look it up.</think>\n<search>frankenstein author")[-1]
    apply_search(traj, action, SearchResult("frankenstein author", [Doc("Frankenstein", "A novel by Mary Shelley.", "t")]),
                 policy=policy)
    record(policy, traj, "no tags at all")  # invalid: the retry hint is environment text
    record(policy, traj, "<think>It is Mary Shelley.</think>\n<answer> Mary Shelley")
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
    requests = [RolloutRequest(e.question, SearchContext(e.question, e.golden_answers)) for e in examples for _ in range(3)]
    agent = AgentConfig(max_turns=3, k=2, grammar="off")
    for noise_p, mode in ((0.0, "useful"), (1.0, "noisy")):
        simulator = FakeBackend(default="Doc 1: (A) alpha beta gamma\nDoc 2: (B) delta epsilon zeta")
        engine = SimulatedSearchEngine(simulator, cache=DocumentCache(tmp_path / f"c{noise_p}.db"), structured=False)
        trajectories, stats = Rollout(FakeBackend(default=policy_turn), engine, agent).run(
            requests, noise_p=noise_p, rng=random.Random(0))
        assert len(trajectories) == 6
        assert all(t.answer == "Mary Shelley" and t.finished for t in trajectories)
        assert {s.mode for t in trajectories for s in t.searches} == {mode}
        # the group's identical searches share one generation; a later batch is served by the cache
        assert stats.searches == 6 and len(simulator.history) == 2
        assert stats.noisy_share == noise_p
        _, again = Rollout(FakeBackend(default=policy_turn), engine, agent).run(
            requests, noise_p=noise_p, rng=random.Random(0))
        assert again.cache_hits == 6 and again.cache_hit_rate == 1.0 and len(simulator.history) == 2


def test_training_uses_the_sampled_token_ids_not_a_retokenization(tokenizer, tiny_model_dir):
    """Token-out: a turn sampled as a non-canonical split of its text ("Mary" as "M" + "ary") is trained on
    exactly as sampled, although re-tokenizing the text gives other ids."""
    torch.manual_seed(0)
    model = load_base(resolve_model(str(tiny_model_dir)), load_in_4bit=False, gradient_checkpointing=False)
    policy = TransformersBackend.from_objects(model, tokenizer)
    text = "<think>It is Mary.</think>\n<answer> Mary"
    canonical = tokenizer(text, add_special_tokens=False)["input_ids"]
    sampled = []
    for piece in ("<think>It is ", "M", "ary", ".</think>\n<answer> ", "M", "ary", "</answer>"):
        sampled += tokenizer(piece, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(sampled) == text + "</answer>" and sampled[: len(canonical)] != canonical
    traj = start_trajectory(policy, "who?")
    record_policy = policy
    apply_turn(record_policy, traj, Completion(text, "stop", token_ids=sampled), config=TURNS, turn=0)
    ids, mask = tokenize_trajectory(tokenizer, traj.segments, max_length=4096)
    trained = [t for t, m in zip(ids, mask, strict=True) if m]
    assert trained == sampled  # not tokenizer(text + "</answer>")
    assert ids[: len(traj.segments[0].token_ids)] == traj.segments[0].token_ids


def test_real_rollouts_carry_the_sampled_ids_into_the_prompt_and_the_loss(tokenizer, tiny_model_dir):
    """A real transformers rollout: each generated segment keeps its sampled ids, the next turn's prompt is
    built from them (token-in), and the loss mask marks exactly those ids."""
    torch.manual_seed(0)
    model = load_base(resolve_model(str(tiny_model_dir)), load_in_4bit=False, gradient_checkpointing=False)
    policy = TransformersBackend.from_objects(model, tokenizer)
    calls = []
    generate = policy.generate
    policy.generate = lambda prompts, params: calls.append(list(prompts)) or generate(prompts, params)
    agent = AgentConfig(grammar="off", max_turns=2, max_tokens_per_turn=12, temperature=1.0, top_p=1.0)
    trajectories, _ = Rollout(policy, SimulatedSearchEngine(FakeBackend(), structured=False), agent).run(
        [RolloutRequest("who wrote frankenstein?")] * 2)
    for traj in trajectories:
        generated = [s for s in traj.segments if s.generated]
        assert generated and all(s.token_ids for s in generated)
        ids, mask = tokenize_trajectory(tokenizer, traj.segments, max_length=4096)
        assert [t for t, m in zip(ids, mask, strict=True) if m] == [i for s in generated for i in s.token_ids]
    assert len(calls) == 2  # random text has no tags: an invalid first turn, then a second one
    for prompt, traj in zip(calls[1], trajectories, strict=True):  # token-in: the second prompt is ids
        first_turn = next(s for s in traj.segments if s.generated)
        assert not isinstance(prompt, str)
        start = len(traj.segments[0].token_ids)
        assert prompt[start : start + len(first_turn.token_ids)] == first_turn.token_ids


# ------------------------------------------------------------------------------------------- trainer


def scripted_roll(self, examples, noise_p, rng, stopped):
    """Deterministic stand-in for rollouts: 'always' questions are answered right by every sample (a
    zero-variance group); the others right or wrong at random from the step's seeded rng."""
    policy = FakeBackend()
    trajectories = []
    for example in examples:
        for _ in range(self.cfg.group_size):
            right = example.question.startswith("always") or rng.random() < 0.5
            answer = example.golden_answers[0] if right else "nobody"
            traj = Trajectory(question=example.question)
            traj.segments.append(Segment(self.policy.render_chat(user_message(example.question)), generated=False))
            record(policy, traj, f"<think>thinking about {example.id}</think>\n<answer> {answer}")
            trajectories.append(traj)
    return trajectories, RolloutStats()


@pytest.fixture()
def qa_file(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [("always", "Paris"), ("mixed one", "Rome"), ("mixed two", "Oslo"), ("mixed three", "Bern")]
    path.write_text("".join(f'{{"id": "q{i}", "question": "{q}", "golden_answers": ["{a}"]}}\n'
                            for i, (q, a) in enumerate(rows)))
    return path


def make_cfg(qa_file, out, **overrides) -> GRPOConfig:
    values = {"data": str(qa_file), "out": str(out), "steps": 4, "batch_questions": 2, "group_size": 3, "lr": 1e-2,
              "save_every": 2, "recycle_share": 0.5, "pool_cooldown": 1, "lora_r": 4, "lora_alpha": 8, "micro_batch": 2,
              "seed": 3, "engine": {"kind": "template"}}
    return GRPOConfig(**(values | overrides))


def trainer_for(cfg, tiny_model_dir, resume=False):
    torch.manual_seed(0)
    model = load_base(resolve_model(str(tiny_model_dir)), load_in_4bit=False, gradient_checkpointing=False)
    return build_trainer(cfg.model_copy(update={"policy": PolicyConfig(name=str(tiny_model_dir))}), resume=resume, model=model)


@pytest.fixture()
def scripted(monkeypatch):
    monkeypatch.setattr(grpo_module.GRPOTrainer, "roll", scripted_roll)


def adapter_weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_" in k}


def test_a_run_draws_noise_on_the_curriculum_up_to_p_end(scripted, qa_file, tmp_path, tiny_model_dir):
    cfg = make_cfg(qa_file, tmp_path / "run", steps=2, curriculum=Curriculum(p_start=0.0, p_end=1.0, base=1.0))
    trainer_for(cfg, tiny_model_dir).train()
    assert [row.noise_p for row in read_metrics(tmp_path / "run")] == pytest.approx([0.5, 1.0])


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

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return scripted_roll(self, *args, **kwargs)

    monkeypatch.setattr(grpo_module.GRPOTrainer, "roll", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    resumed = trainer_for(cfg, tiny_model_dir, resume=True)
    assert resumed.step == 1 and [r.step for r in read_metrics(cfg.out)] == [1]


def test_resume_needs_a_run_directory(tmp_path):
    with pytest.raises(ZslError, match="not a GRPO run directory"):
        grpo_module.load_run_config(tmp_path)


def test_old_flat_run_configs_still_load():
    old = {"data": "qa.jsonl", "out": "runs/x", "policy": "embedded", "engine": "corpus", "corpus": "c.jsonl",
           "simulator": "embedded", "simulator_backend": "auto", "simulator_adapter": None,
           "simulator_load_in_4bit": False, "preset": "zsl", "url": None}
    cfg = GRPOConfig.model_validate(old)
    assert cfg.policy.name == "embedded" and cfg.engine.kind == "corpus" and cfg.engine.corpus == "c.jsonl"


def lora_parameters(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def test_a_real_step_with_varying_rewards_updates_every_lora_parameter(tmp_path, tokenizer, tiny_model_dir):
    """No script: the tiny random policy samples protocol-constrained turns against the template engine. Its
    answers are random words; gold answers made of common vocabulary words make some of them score, so groups
    have reward variance, and the update must move every trainable parameter (TRL's smoke-test rule)."""
    words = sorted({w for w in (tokenizer.decode([i]).strip().lower() for i in range(300, 6000)) if w.isalpha()})
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(f'{{"id": "q{i}", "question": "question {i}?", "golden_answers": {words!r}}}\n'.replace("'", '"')
                          for i in range(2)))
    cfg = make_cfg(qa, tmp_path / "real", steps=1, batch_questions=2, group_size=4, lr=1e-2, zero_variance="keep",
                   agent=AgentConfig(max_turns=2, max_tokens_per_turn=24, max_context=1024, k=2, grammar="on",
                                     temperature=1.0, top_p=1.0))
    trainer = trainer_for(cfg, tiny_model_dir)
    before = lora_parameters(trainer.model)
    trainer.train()
    (row,) = read_metrics(cfg.out)
    assert row.step == 1 and row.reward_std > 0 and row.loss is not None  # rewards varied: a real update
    assert row.searches and row.searches_per_question == 1.0  # the constrained first turn searched
    after = lora_parameters(trainer.model)
    unchanged = [name for name, value in before.items() if torch.equal(value, after[name])]
    assert not unchanged, unchanged
    assert (tmp_path / "real" / "adapter" / "adapter_config.json").is_file()


def test_heldout_scores_land_on_their_steps_and_best_keeps_the_best_adapter(scripted, qa_file, tmp_path,
                                                                          tiny_model_dir, monkeypatch):
    scores = iter([0.2, 0.6, 0.4])

    def fake_score(rollout, examples, step):
        from zerosearch_lite.train_lite.heldout import HeldOutScore

        f1 = next(scores)
        return HeldOutScore(step, f1, f1, f1, 1.0, 1.0)

    monkeypatch.setattr(grpo_module, "score_heldout", fake_score)
    cfg = make_cfg(qa_file, tmp_path / "run", steps=6, eval_data=str(qa_file), eval_every=2, eval_limit=2)
    trainer = trainer_for(cfg, tiny_model_dir)
    saved = {}
    offer = trainer.best.offer

    def remember(model, score):
        kept = offer(model, score)
        if kept:
            saved[score.step] = lora_parameters(model)
        return kept

    trainer.best.offer = remember
    trainer.train()
    rows = read_metrics(cfg.out)
    assert [r.step for r in rows if r.heldout_f1 is not None] == [2, 4, 6]
    assert [r.heldout_f1 for r in rows if r.heldout_f1 is not None] == [0.2, 0.6, 0.4]
    import json

    from peft import PeftModel

    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert best["step"] == 4 and best["f1"] == 0.6
    torch.manual_seed(0)
    base = load_base(resolve_model(str(tiny_model_dir)), load_in_4bit=False, gradient_checkpointing=False)
    reloaded = PeftModel.from_pretrained(base, str(tmp_path / "run" / "best"))
    for name, value in reloaded.named_parameters():
        if "lora_" in name:
            match = [v for k, v in saved[4].items() if k.replace(".default", "") == name.replace(".default", "")]
            assert match and torch.allclose(value, match[0]), name


def test_resume_keeps_the_best_adapter_and_the_heldout_rows(scripted, qa_file, tmp_path, tiny_model_dir, monkeypatch):
    from zerosearch_lite.train_lite.heldout import HeldOutScore

    values = {2: 0.5, 4: 0.1, 6: 0.3}
    monkeypatch.setattr(grpo_module, "score_heldout",
                        lambda rollout, examples, step: HeldOutScore(step, 0, 0, values[step], 1.0, 1.0))
    cfg = make_cfg(qa_file, tmp_path / "run", steps=6, eval_data=str(qa_file), eval_every=2, save_every=2)
    first = trainer_for(cfg, tiny_model_dir)
    for step in range(5):  # checkpoint at step 4; step 5's row is written, then the process "dies"
        first.run_step(step, stopped=lambda: False)
    best_before = (tmp_path / "run" / "best" / "adapter_model.safetensors").read_bytes()
    resumed = trainer_for(cfg, tiny_model_dir, resume=True)
    assert resumed.step == 4 and resumed.best.best.step == 2
    resumed.train()
    rows = read_metrics(cfg.out)
    assert [(r.step, r.heldout_f1) for r in rows if r.heldout_f1 is not None] == [(2, 0.5), (4, 0.1), (6, 0.3)]
    assert (tmp_path / "run" / "best" / "adapter_model.safetensors").read_bytes() == best_before
    assert "far below its best" in (rows[3].warning or "")


class HandOverBackend(FakeBackend):
    """Stands in for vLLM in the trainer's process: records adapters handed over and sleeps."""

    class settings:
        enable_sleep_mode = True

    def __init__(self):
        super().__init__()
        self.events: list[tuple[str, object]] = []

    def set_adapter(self, path):
        from safetensors.torch import load_file

        self.events.append(("adapter", load_file(str(path / "adapter_model.safetensors"))))

    def sleep(self, level: int = 1):
        self.events.append(("sleep", level))


def test_a_separate_rollout_backend_sleeps_through_each_update_and_gets_the_new_adapter(
        scripted, qa_file, tmp_path, tiny_model_dir, monkeypatch):
    backend = HandOverBackend()
    monkeypatch.setattr(grpo_module, "rollout_backend", lambda cfg, model: backend)
    trainer = trainer_for(make_cfg(qa_file, tmp_path / "run", steps=2), tiny_model_dir)
    assert trainer.policy is backend and [e[0] for e in backend.events] == ["adapter"]  # the start adapter
    trainer.train()
    kinds = [e[0] for e in backend.events]
    assert kinds == ["adapter", "sleep", "adapter", "sleep", "adapter"]
    from safetensors.torch import load_file

    handed = [e[1] for e in backend.events if e[0] == "adapter"]
    final = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    assert handed[-1].keys() == final.keys()
    assert all(torch.equal(handed[-1][k], final[k]) for k in final)  # the last hand-over is the trained adapter
    assert any(not torch.equal(handed[0][k], handed[-1][k]) for k in final)  # and it moved since the start


def test_a_grpo_step_logs_the_documents_the_noise_guard_caught(tmp_path, tiny_model_dir):
    """Every search is noisy (p = 1) and the simulator leaks the gold answer into its noisy documents: the
    guard (on by default in training) catches them, and the step's row counts them with the search totals."""
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"id": "q", "question": "Capital of France?", "golden_answers": ["Paris"]}\n')
    leaky = FakeBackend(default="Doc 1: (A) Paris is the capital of France, it says here.\n"
                                "Doc 2: (B) Some other text about unrelated topics entirely.")
    engine = SimulatedSearchEngine(leaky, structured=False, guard="drop", cache=None)
    cfg = make_cfg(qa, tmp_path / "run", steps=1, batch_questions=1, group_size=2,
                   curriculum=Curriculum(p_start=1.0, p_end=1.0),
                   agent=AgentConfig(max_turns=2, max_tokens_per_turn=24, max_context=1024, k=2, grammar="on"))
    assert GRPOConfig(data="qa.jsonl", out="x").engine.guard == "drop"  # on by default in training
    torch.manual_seed(0)
    model = load_base(resolve_model(str(tiny_model_dir)), load_in_4bit=False, gradient_checkpointing=False)
    trainer = build_trainer(cfg.model_copy(update={"policy": PolicyConfig(name=str(tiny_model_dir))}),
                            resume=False, model=model, engine=engine)
    row = trainer.run_step(0, stopped=lambda: False)
    assert row.searches == 2 and row.noisy_share == 1.0
    assert row.guarded_documents >= 2  # one leaked document per search, caught
    # every regeneration leaks again: two regenerations per generated search, then the leak is dropped
    generated = len({p for p, _ in leaky.history})
    assert row.guard_retries == 2 * generated and row.guard_dropped == row.guarded_documents
    assert 0 < row.guard_seconds <= row.search_seconds
    assert row.simulator_tokens > 0 and row.search_seconds is not None
    assert read_metrics(tmp_path / "run")[-1].guard_retries == row.guard_retries  # stored with the step

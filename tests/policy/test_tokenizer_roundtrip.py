"""The tiny tokenizer must tokenise the same after a save and reload as when it was trained.

`AutoTokenizer` loads a `qwen2` model directory's tokenizer as `Qwen2Tokenizer`, which imposes its
own normaliser and pre-tokeniser; a tokenizer trained with different ones silently changes after
the build, so the model is served with a tokenisation it never saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from agentrl.models import TinyRecipe, tiny_config

TEXTS = [
    "Noor packs 26 boxes with 27 cards in each. How many cards does Noor have now?",
    '<tool_call>{"name": "calculator", "arguments": {"expression": "7574 * 7"}}</tool_call>',
    "<tool_response>\n195232\n</tool_response>",
    "<answer>319</answer>",
    "What is the capital of the country where Étienne was born?  Twice  spaced.\n\nNext",
]


def test_saved_tokenizer_reloads_with_identical_ids(tokenizer: Any, tmp_path: Path) -> None:
    tiny_config(TinyRecipe(), tokenizer).save_pretrained(tmp_path)  # model_type qwen2, as built
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        assert (
            reloaded(text, add_special_tokens=False)["input_ids"]
            == tokenizer(text, add_special_tokens=False)["input_ids"]
        ), text

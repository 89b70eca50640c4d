"""Chat-template rendering and incremental tokenisation."""

from __future__ import annotations

from typing import Any

import pytest

from agentrl.chat import CHATML_TOOLS_TEMPLATE, ChatFormat, stop_token_ids
from tests.policy.conftest import CALC_SCHEMA, SYSTEM

CALL = '<tool_call>{"name": "calculator", "arguments": {"expression": "3 + 5"}}</tool_call>'
OPENING = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 3 + 5?"}]
# SmolLM2-style ChatML: no tool support at all.
PLAIN_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
NO_TOOL_ROLE = (
    "{% for message in messages %}{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('bad role') }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_template_renders_tools_and_tool_responses(tokenizer: Any) -> None:
    chat = ChatFormat(tokenizer)
    assert chat.native_tools and chat.native_tool_role
    conv = [
        *OPENING,
        {"role": "assistant", "content": CALL},
        {"role": "tool", "name": "calculator", "content": "8"},
        {"role": "tool", "name": "calculator", "content": "9"},
    ]
    text = chat.render(conv, [CALC_SCHEMA], add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n" + SYSTEM + "\n\n# Tools")
    assert '"name": "calculator"' in text
    # consecutive tool results share one user turn, as in Qwen2.5
    assert text.endswith(
        "<|im_start|>user\n<tool_response>\n8\n</tool_response>\n<tool_response>\n9\n</tool_response>"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chat.assistant_tail == "<|im_end|>\n"


def test_incremental_pieces_concatenate_to_the_full_render(tokenizer: Any) -> None:
    chat = ChatFormat(tokenizer)
    prompt = chat.prompt_ids(OPENING, [CALC_SCHEMA])
    sampled = [*chat.encode(CALL), tokenizer.eos_token_id]
    tool = [{"role": "tool", "name": "calculator", "content": "8"}]
    ids = (
        prompt
        + sampled
        + chat.end_of_turn_ids(sampled)
        + chat.observation_ids(OPENING, CALL, tool, [CALC_SCHEMA])
    )
    full = chat.render([*OPENING, {"role": "assistant", "content": CALL}, *tool], [CALC_SCHEMA], True)
    assert tokenizer.decode(ids) == full


def test_end_of_turn_when_model_stopped_without_eos(tokenizer: Any) -> None:
    chat = ChatFormat(tokenizer)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.decode(chat.end_of_turn_ids(chat.encode("8"))) == "<|im_end|>\n"
    assert tokenizer.decode(chat.end_of_turn_ids([*chat.encode("8"), im_end])) == "\n"
    assert chat.end_of_turn_ids([]) == chat.encode("<|im_end|>\n")
    assert im_end in chat.stop_token_ids and im_end in stop_token_ids(tokenizer)


def test_template_without_tool_support_gets_tools_in_system_prompt(tokenizer: Any) -> None:
    chat = ChatFormat(tokenizer, PLAIN_CHATML)
    assert not chat.native_tools and chat.native_tool_role
    text = chat.render(OPENING, [CALC_SCHEMA], add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n" + SYSTEM + "\n\n# Tools")
    assert '"name": "calculator"' in text and text.endswith("<|im_start|>assistant\n")


def test_template_rejecting_tool_role_gets_tool_responses_as_user(tokenizer: Any) -> None:
    chat = ChatFormat(tokenizer, NO_TOOL_ROLE)
    assert not chat.native_tool_role
    ids = chat.observation_ids(OPENING, CALL, [{"role": "tool", "name": "calculator", "content": "8"}])
    assert (
        tokenizer.decode(ids)
        == "<|im_start|>user\n<tool_response>\n8\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )


def test_observation_falls_back_when_template_rewrites_history(tokenizer: Any) -> None:
    # A template that drops <think> blocks from assistant turns followed by more messages.
    template = (
        "{% for m in messages %}{% set c = m['content'] %}{% if m['role'] == 'assistant' and not loop.last %}"
        "{% set c = c.split('</think>')[-1] %}{% endif %}{{'<|im_start|>' + m['role'] + '\n' + c + "
        "'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    chat = ChatFormat(tokenizer, template)
    ids = chat.observation_ids(OPENING, "<think>hmm</think>" + CALL, [{"role": "user", "content": "go on"}])
    assert tokenizer.decode(ids) == "<|im_start|>user\ngo on<|im_end|>\n<|im_start|>assistant\n"


def test_no_template_is_a_clear_error(tokenizer: Any) -> None:
    class Bare:
        chat_template = None

    with pytest.raises(ValueError, match="no chat template"):
        ChatFormat(Bare())
    assert ChatFormat(tokenizer, CHATML_TOOLS_TEMPLATE).native_tools

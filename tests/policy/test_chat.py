"""Chat-template rendering and incremental tokenisation."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agentrl.chat import CHATML_TOOLS_TEMPLATE, ChatFormat, resolve_tool_format, stop_token_ids
from agentrl.tools.formats import TOOL_FORMATS, get_tool_format, reformat_action
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


# --- every tool-call format, each with a template in its family's style ---------------------------

# Llama 3.x style: header tokens, tools in the system turn, tool results in an `ipython` turn.
LLAMA3_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}{%- set sys = messages[0].content %}{%- set rest = messages[1:] %}"
    "{%- else %}{%- set sys = '' %}{%- set rest = messages %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + sys }}"
    "{%- if tools %}{{- '\\n\\nTo call a function, reply with JSON: "
    '{"name": function name, "parameters": dictionary of arguments}.\\n\\n\' }}'
    "{%- for t in tools %}{{- t | tojson + '\\n\\n' }}{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- for m in rest %}"
    "{%- if m.role in ['tool', 'ipython'] %}{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' }}"
    "{%- else %}{{- '<|start_header_id|>' + m.role + '<|end_header_id|>\\n\\n' }}{%- endif %}"
    "{{- m.content + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
# Mistral style: [AVAILABLE_TOOLS] before the first [INST], tool results in [TOOL_RESULTS], </s> ends a turn.
MISTRAL_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}{%- set sys = messages[0].content + '\\n\\n' %}"
    "{%- set rest = messages[1:] %}{%- else %}{%- set sys = '' %}{%- set rest = messages %}{%- endif %}"
    "{{- '<s>' }}"
    "{%- for m in rest %}"
    "{%- if m.role == 'user' %}"
    "{%- if tools and loop.first %}{{- '[AVAILABLE_TOOLS] ' + (tools | tojson) + '[/AVAILABLE_TOOLS]' }}{%- endif %}"
    "{{- '[INST] ' + (sys if loop.first else '') + m.content + '[/INST]' }}"
    "{%- elif m.role == 'assistant' %}{{- m.content + '</s>' }}"
    "{%- elif m.role == 'tool' %}{{- '[TOOL_RESULTS] ' + ({'content': m.content} | tojson) + '[/TOOL_RESULTS]' }}"
    "{%- endif %}"
    "{%- endfor %}"
)
# A generic template that lists tools as JSON and has no call markup of its own: plain JSON calls.
JSON_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' + messages[0].content + '\\n\\nFunctions:\\n' }}"
    "{%- for t in tools %}{{- (t | tojson) + '\\n' }}{%- endfor %}"
    "{{- 'Call one with a JSON object holding its name and arguments.<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for m in messages[1:] %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
FORMAT_TEMPLATES: dict[str, tuple[str, list[str], str | None]] = {
    # name: (template, extra special tokens, eos token)
    "hermes": (CHATML_TOOLS_TEMPLATE, [], None),
    "llama3": (
        LLAMA3_TEMPLATE,
        ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"],
        "<|eot_id|>",
    ),
    "mistral": (
        MISTRAL_TEMPLATE,
        [
            *("<s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]"),
            *("[TOOL_RESULTS]", "[/TOOL_RESULTS]", "</s>"),
        ],
        "</s>",
    ),
    "json": (JSON_TEMPLATE, [], None),
}
_FORMAT_TOKENIZERS: dict[str, Any] = {}


def format_tokenizer(tokenizer: Any, name: str) -> Any:
    """A copy of the test tokenizer speaking `name`'s chat template, with that family's special tokens."""
    if name not in _FORMAT_TOKENIZERS:
        template, specials, eos = FORMAT_TEMPLATES[name]
        tok = copy.deepcopy(tokenizer)
        if specials:
            tok.add_special_tokens({"additional_special_tokens": specials})
        if eos:
            tok.eos_token = eos
        tok.chat_template = template
        _FORMAT_TOKENIZERS[name] = tok
    return _FORMAT_TOKENIZERS[name]


class ExpertIn:
    """The env's scripted expert (which writes Hermes), speaking `tool_format` instead."""

    def __init__(self, env: Any) -> None:
        self.env = env

    def expert_action(self) -> str:
        return reformat_action(self.env.expert_action(), self.env.tool_format)


@pytest.mark.parametrize("name", list(TOOL_FORMATS))
def test_format_is_detected_and_pieces_concatenate(tokenizer: Any, name: str) -> None:
    tok = format_tokenizer(tokenizer, name)
    chat = ChatFormat(tok)
    assert (chat.tool_format, chat.tools_rendering) == (name, "native")
    assert resolve_tool_format("auto", tok) == name
    call = get_tool_format(name).format_call("calculator", {"expression": "3 + 5"})
    prompt = chat.prompt_ids(OPENING, [CALC_SCHEMA])
    sampled = [*chat.encode(call), tok.eos_token_id]
    tool = [{"role": "tool", "name": "calculator", "content": "8"}]
    ids = (
        prompt
        + sampled
        + chat.end_of_turn_ids(sampled)
        + chat.observation_ids(OPENING, call, tool, [CALC_SCHEMA])
    )
    full = chat.render([*OPENING, {"role": "assistant", "content": call}, *tool], [CALC_SCHEMA], True)
    assert tok.decode(ids) == full and '"calculator"' in full


@pytest.mark.parametrize("name", list(TOOL_FORMATS))
def test_preamble_is_written_in_the_chosen_format(tokenizer: Any, name: str) -> None:
    chat = ChatFormat(tokenizer, PLAIN_CHATML, tool_format=name)
    assert (chat.tool_format, chat.tools_rendering) == (name, "preamble")
    text = chat.render(OPENING, [CALC_SCHEMA], add_generation_prompt=True)
    assert get_tool_format(name).preamble([CALC_SCHEMA]) in text
    assert ChatFormat(tokenizer, PLAIN_CHATML).tool_format == "hermes"  # auto, no tool markup: Hermes


def test_unknown_tool_format_setting_is_one_line(tokenizer: Any) -> None:
    with pytest.raises(
        ValueError, match=r"^model\.tool_format: unknown .*auto, hermes, llama3, mistral, json$"
    ):
        ChatFormat(tokenizer, tool_format="chatml")
    assert resolve_tool_format("mistral", tokenizer) == "mistral"


@pytest.mark.parametrize("name", list(TOOL_FORMATS))
async def test_episodes_in_every_format_are_token_exact_and_rescore(
    tokenizer: Any, model: Any, name: str
) -> None:
    import gymnasium

    import agentrl.envs  # noqa: F401  (registers the envs)
    from agentrl.policy.hf import HFPolicy
    from agentrl.rollout.episode import run_episode
    from agentrl.types import SamplingParams, Status
    from tests.policy.conftest import ScriptedPolicy
    from tests.policy.test_episode import assert_rescoring_matches

    tok = format_tokenizer(tokenizer, name)
    chat = ChatFormat(tok, tool_format=name)
    env = gymnasium.make("agentrl/Calculator-v0", tool_format=name).unwrapped
    prompt_id = f"{env.name}/test/{env.task_ids('test')[0]}"
    traj = await run_episode(env, ScriptedPolicy(tok, env=ExpertIn(env)), chat, prompt_id=prompt_id)
    assert traj.status is Status.OK and traj.reward == 1.0, env.messages
    # the env reads text decoded without special tokens, so its copy of a call lacks `[TOOL_CALLS]`
    said = [
        {**m, "content": "[TOOL_CALLS]" + m["content"]}
        if name == "mistral" and m["role"] == "assistant" and m["content"].startswith("[")
        else m
        for m in env.messages
    ]
    assert tok.decode(traj.token_ids) == chat.render(said, env.toolbox.schemas())
    calls = [m for m in env.messages if m["role"] == "tool"]
    assert calls and all(not m["content"].startswith("Error") for m in calls)

    resized = copy.deepcopy(model)
    resized.resize_token_embeddings(len(tok))
    policy = HFPolicy(resized, tok)
    traj = await run_episode(
        env, policy, chat, prompt_id=prompt_id, max_turns=2, params=SamplingParams(max_new_tokens=16, seed=5)
    )
    assert traj.status in (Status.OK, Status.TRUNCATED)
    assert_rescoring_matches(resized, traj)
    await policy.aclose()

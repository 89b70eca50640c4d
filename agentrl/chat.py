"""Chat-template rendering and incremental tokenisation for token-in/token-out episodes.

An episode's token sequence is built by appending: the rendered prompt, the tokens the model sampled
(verbatim, never re-tokenised from text), the end-of-turn tokens the template expects after an
assistant turn when the model did not emit them, and the rendered tool/env messages plus the next
generation prompt. The last two are found by rendering the conversation with the tokenizer's chat
template and taking the text suffix after what is already there, so any template works, and the
model's own tokens are kept even where the template would render its turn differently.

Tool calls follow one format per model (`agentrl.tools.formats`): `resolve_tool_format` turns the
`model.tool_format` setting ("auto" detects it from the chat template) into a format name, and a
template that ignores `tools=` gets the schemas in a system-prompt preamble written in that format.

`CHATML_TOOLS_TEMPLATE` is the template of the embedded `tiny` model: ChatML with Qwen2.5-style
tool rendering (tool schemas inside `<tools>` in the system turn, tool results as
`<tool_response>` blocks in a user turn).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentrl.tools.formats import TOOL_FORMATS, detect_tool_format, get_tool_format

Message = Mapping[str, Any]

# Whitespace is spelled out with '\n' literals so the template does not depend on Jinja's
# trim_blocks/lstrip_blocks settings.
CHATML_TOOLS_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions. Their signatures are inside <tools></tools>:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each call, write a JSON object with the name and arguments inside "
    '<tool_call></tool_call> tags:\\n<tool_call>{"name": <function-name>, "arguments": <args-json-object>}'
    "</tool_call><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' and loop.first %}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_PROBE_USER = "PROBE-USER-7f3a"
_PROBE_ASSISTANT = "PROBE-ASSISTANT-7f3a"
_PROBE_TOOL = "probe_tool_7f3a"


TOOL_FORMAT_SETTINGS = ("auto", *TOOL_FORMATS)


def tools_preamble(tools: Sequence[Mapping[str, Any]], tool_format: str = "hermes") -> str:
    """Tool schemas and how to call them in `tool_format`, for templates that ignore `tools`."""
    return get_tool_format(tool_format).preamble(tools)


def resolve_tool_format(setting: str, tokenizer: Any = None, chat_template: str | None = None) -> str:
    """The tool-call format a run uses: `setting` itself, or with "auto" the one the chat template
    (given, or the tokenizer's) teaches. An unknown setting is a one-line error naming the field."""
    if setting == "auto":
        return detect_tool_format(chat_template or getattr(tokenizer, "chat_template", None))
    if setting not in TOOL_FORMATS:
        raise ValueError(
            f"model.tool_format: unknown tool-call format {setting!r}; "
            f"expected one of {', '.join(TOOL_FORMAT_SETTINGS)}"
        )
    return setting


class ChatFormat:
    """Renders conversations with a tokenizer's chat template and tokenises them incrementally.

    Templates that ignore `tools` get the tool schemas written into the system message, in the
    resolved `tool_format`; templates that reject the `tool` role get tool results as
    `<tool_response>` user messages. `tool_format` is the resolved format name and `tools_rendering`
    says how tools reach the model: "native" (the template's own `tools=`) or "preamble".
    """

    def __init__(self, tokenizer: Any, chat_template: str | None = None, tool_format: str = "auto") -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        if not self.chat_template:
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} has no chat template; pass chat_template= "
                "(agentrl.chat.CHATML_TOOLS_TEMPLATE is a ChatML template with tool support)"
            )
        self.tool_format = resolve_tool_format(tool_format, chat_template=self.chat_template)
        self.native_tools = self._probe_native_tools()
        self.tools_rendering = "native" if self.native_tools else "preamble"
        self.native_tool_role = self._probe_tool_role()
        self.assistant_tail = self._probe_assistant_tail()
        self.stop_token_ids = stop_token_ids(tokenizer)

    # -- rendering -----------------------------------------------------------------------------

    def _prepare(
        self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        msgs = [dict(m) for m in messages]
        if not self.native_tool_role:
            msgs = [
                {"role": "user", "content": f"<tool_response>\n{m['content']}\n</tool_response>"}
                if m.get("role") == "tool"
                else m
                for m in msgs
            ]
        if tools and not self.native_tools:
            preamble = tools_preamble(tools, self.tool_format)
            if msgs and msgs[0].get("role") == "system":
                msgs[0] = {**msgs[0], "content": f"{msgs[0]['content']}\n\n{preamble}"}
            else:
                msgs.insert(0, {"role": "system", "content": preamble})
            return msgs, None
        return msgs, [dict(t) for t in tools] if tools else None

    def render(
        self,
        messages: Sequence[Message],
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = False,
    ) -> str:
        msgs, tool_arg = self._prepare(messages, tools)
        return self._raw_render(msgs, tool_arg, add_generation_prompt)

    def _raw_render(
        self, msgs: list[dict[str, Any]], tools: list[dict[str, Any]] | None, add_generation_prompt: bool
    ) -> str:
        text = self.tokenizer.apply_chat_template(
            msgs,
            tools=tools,
            chat_template=self.chat_template,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )
        if not isinstance(text, str):  # some versions return a list for batched input
            text = text[0]
        return text

    def encode(self, text: str) -> list[int]:
        """Tokenise rendered template text; special tokens written in the text are parsed as such."""
        if not text:
            return []
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- the three pieces of an episode ---------------------------------------------------------

    def prompt_ids(
        self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> list[int]:
        """The opening messages rendered with the generation prompt, as token ids."""
        return self.encode(self.render(messages, tools, add_generation_prompt=True))

    def end_of_turn_ids(self, sampled_ids: Sequence[int]) -> list[int]:
        """Tokens the template puts after an assistant turn that the model did not emit itself.

        If the model stopped on a stop token (e.g. `<|im_end|>`), only the rest of the tail (the
        newline) is added; if it stopped on length or a stop string, the whole tail is.
        """
        tail = self.assistant_tail
        if sampled_ids and sampled_ids[-1] in self.stop_token_ids:
            emitted = self.tokenizer.decode([sampled_ids[-1]], skip_special_tokens=False)
            if tail.startswith(emitted):
                tail = tail[len(emitted) :]
        return self.encode(tail)

    def observation_ids(
        self,
        history: Sequence[Message],
        assistant_text: str,
        new_messages: Sequence[Message],
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> list[int]:
        """Tokens for `new_messages` (tool results, env feedback) plus the next generation prompt.

        `history` is the conversation before the assistant turn whose text is `assistant_text`.
        The suffix is taken against the real history; if the template re-renders earlier turns once
        new messages follow (some templates drop reasoning from old turns), it is taken against a
        minimal probe conversation instead, which is what the model sees for those messages.
        """
        if not new_messages:
            return []
        assistant = {"role": "assistant", "content": assistant_text}
        msgs, tool_arg = self._prepare([*history, assistant], tools)
        before = self._raw_render(msgs, tool_arg, False)
        new, _ = self._prepare(new_messages, None)
        after = self._raw_render([*msgs, *new], tool_arg, add_generation_prompt)
        if after.startswith(before):
            return self.encode(after[len(before) :])
        probe = [{"role": "user", "content": _PROBE_USER}, {"role": "assistant", "content": _PROBE_ASSISTANT}]
        before = self._raw_render(probe, None, False)
        after = self._raw_render([*probe, *new], None, add_generation_prompt)
        if not after.startswith(before):
            raise ValueError(
                "chat template renders earlier turns differently once new messages are appended, "
                "so the new messages cannot be tokenised incrementally"
            )
        return self.encode(after[len(before) :])

    # -- probes of the template's behaviour -----------------------------------------------------

    def _probe_native_tools(self) -> bool:
        tool = {"type": "function", "function": {"name": _PROBE_TOOL, "description": "", "parameters": {}}}
        try:
            text = self._raw_render([{"role": "user", "content": _PROBE_USER}], [tool], False)
        except Exception:
            return False
        return _PROBE_TOOL in text

    def _probe_tool_role(self) -> bool:
        msgs = [
            {"role": "user", "content": _PROBE_USER},
            {"role": "assistant", "content": _PROBE_ASSISTANT},
            {"role": "tool", "name": _PROBE_TOOL, "content": "PROBE-RESULT"},
        ]
        try:
            return "PROBE-RESULT" in self._raw_render(msgs, None, False)
        except Exception:
            return False

    def _probe_assistant_tail(self) -> str:
        msgs = [{"role": "user", "content": _PROBE_USER}, {"role": "assistant", "content": _PROBE_ASSISTANT}]
        text = self._raw_render(msgs, None, False)
        at = text.rfind(_PROBE_ASSISTANT)
        if at < 0:
            raise ValueError("chat template does not render assistant message content")
        return text[at + len(_PROBE_ASSISTANT) :]


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> set[int]:
    """Token ids that end an assistant turn: the eos id(s), `<|im_end|>` and similar end-of-turn tokens."""
    ids: set[int] = set()
    for source in (tokenizer, generation_config):
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, list | tuple):
            ids.update(int(i) for i in eos)
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    for name in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        if name in vocab:
            ids.add(int(vocab[name]))
    return ids

"""The CRPO prompt (METHOD.md section 2) and the Qwen3-VL chat template, as text.

User turn: the video, then the question, "Options:", one "X. text" line per option
(the null option "None of the above" last, METHOD.md section 1), then the answer
instruction. No system prompt: the Qwen3-VL Instruct template has none by default.

`prompt_text` renders the template directly, byte for byte what the hub template
(reference/qwen3vl.md section 5.5) renders for `build_messages(...)` with
`add_generation_prompt=True`; tests check that against the tokenizer's template.
"""

from __future__ import annotations

from collections.abc import Sequence

NULL_OPTION = "None of the above"
INSTRUCTION = (
  "Think about the question step by step inside <think> </think> tags, then give "
  "only the letter of the correct option inside <answer> </answer> tags."
)
VISION_WRAPPERS = {
  "video": "<|vision_start|><|video_pad|><|vision_end|>",
  "image": "<|vision_start|><|image_pad|><|vision_end|>",
}


def option_letter(i: int) -> str:
  """Letter of the 0-based option i ('A', 'B', ...)."""
  if not 0 <= i < 26:
    raise ValueError(f"option index {i} has no letter (A..Z)")
  return chr(ord("A") + i)


def is_null_option(text: str) -> bool:
  """Whether an option text is the null option (any case, surrounding space ignored)."""
  return text.strip().rstrip(".").lower() == NULL_OPTION.lower()


def with_null_option(options: Sequence[str]) -> tuple[str, ...]:
  """The options with "None of the above" as the last one, exactly once.

  The one place the null option is added (METHOD.md section 1): options that already
  end with it are returned unchanged, so its letter is the same either way.

  Raises:
    ValueError: the null option stands anywhere but last, or twice: two letters
      would mean "none of the above".
  """
  options = tuple(options)
  at = [i for i, o in enumerate(options) if is_null_option(o)]
  if at == [len(options) - 1]:
    return options
  if at:
    raise ValueError(
      f"options hold the null option {NULL_OPTION!r} at position(s) {[i + 1 for i in at]}"
      f" of {len(options)}; it may only be the last option, once: {list(options)}"
    )
  return (*options, NULL_OPTION)


def question_text(
  question: str,
  options: Sequence[str],
  *,
  add_null_option: bool = False,
  instruction: str = INSTRUCTION,
) -> str:
  """The text part of the user turn.

  Args:
    question: the question.
    options: option texts without letters.
    add_null_option: append "None of the above" as the last option.
    instruction: the answer-format instruction closing the turn.

  Returns:
    "question\\nOptions:\\nA. ...\\nB. ...\\ninstruction".
  """
  if add_null_option:
    options = with_null_option(options)
  if not options:
    raise ValueError("a multiple-choice prompt needs at least one option")
  lines = [question.strip(), "Options:"]
  lines += [f"{option_letter(i)}. {text}" for i, text in enumerate(options)]
  lines.append(instruction)
  return "\n".join(lines)


def build_messages(
  question: str,
  options: Sequence[str],
  *,
  add_null_option: bool = False,
  instruction: str = INSTRUCTION,
  media: str = "video",
) -> list[dict]:
  """Chat messages for `tokenizer.apply_chat_template` (one user turn)."""
  if media not in VISION_WRAPPERS:
    raise ValueError(f"media must be 'video' or 'image', got {media!r}")
  text = question_text(question, options, add_null_option=add_null_option, instruction=instruction)
  return [{"role": "user", "content": [{"type": media}, {"type": "text", "text": text}]}]


def prompt_text(
  question: str,
  options: Sequence[str],
  *,
  add_null_option: bool = False,
  instruction: str = INSTRUCTION,
  media: str = "video",
) -> str:
  """The chat-templated prompt, ending with the assistant header.

  The vision part is the template's `<|vision_start|><|video_pad|><|vision_end|>`
  (or the image one); `processor.tokenize_prompt` expands it.
  """
  messages = build_messages(
    question, options, add_null_option=add_null_option, instruction=instruction, media=media
  )
  text = messages[0]["content"][1]["text"]
  return f"<|im_start|>user\n{VISION_WRAPPERS[media]}{text}<|im_end|>\n<|im_start|>assistant\n"

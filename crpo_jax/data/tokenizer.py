"""Tokenizer loading from a local checkpoint, and a tiny word-level Qwen tokenizer.

`load_tokenizer` wraps `transformers.AutoTokenizer` with local files only.
`build_word_tokenizer` writes a small word-level tokenizer that behaves like the
real Qwen3-VL one where the pipeline cares: the Qwen special and added tokens sit
at their real ids (151643..151668, with <think>/</think> at 151667/151668), the
chat template is Qwen3-VL's, and text splits into words, single punctuation
marks, single digits and single whitespace characters (like Appendix A of
reference/qwen3vl.md, but keeping the whitespace as tokens), so "<1.5 seconds>"
becomes "<", "1", ".", "5", " ", "seconds", ">". Keeping whitespace and fusing on
decode makes decode(encode(text)) == text for in-vocabulary text, so rewards can
parse "<answer>A</answer>" out of decoded completions exactly as with the real
tokenizer. The synthetic world, the CPU demo and the tests use it; nothing is
downloaded.

`compact=True` (config `data.compact_vocab`, for the `tiny_compact` and
`demo_compact` presets) puts the same added tokens at ids 1..26 instead, in the
same order, and the words after them: every token keeps its role, and a model with
a few hundred vocabulary rows spends its step on the body instead of a 152k-way
head. `check_special_ids` compares a tokenizer with the model config's ids, so a
compact tokenizer cannot meet a Qwen-id model unnoticed.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Iterable

from crpo_jax.data import prompts

# Qwen2/Qwen3 added tokens, real ids. True: special (dropped by skip_special_tokens).
QWEN_ADDED_TOKENS: tuple[tuple[str, int, bool], ...] = (
  ("<|endoftext|>", 151643, True),
  ("<|im_start|>", 151644, True),
  ("<|im_end|>", 151645, True),
  ("<|object_ref_start|>", 151646, True),
  ("<|object_ref_end|>", 151647, True),
  ("<|box_start|>", 151648, True),
  ("<|box_end|>", 151649, True),
  ("<|quad_start|>", 151650, True),
  ("<|quad_end|>", 151651, True),
  ("<|vision_start|>", 151652, True),
  ("<|vision_end|>", 151653, True),
  ("<|vision_pad|>", 151654, True),
  ("<|image_pad|>", 151655, True),
  ("<|video_pad|>", 151656, True),
  ("<tool_call>", 151657, False),
  ("</tool_call>", 151658, False),
  ("<|fim_prefix|>", 151659, False),
  ("<|fim_middle|>", 151660, False),
  ("<|fim_suffix|>", 151661, False),
  ("<|fim_pad|>", 151662, False),
  ("<|repo_name|>", 151663, False),
  ("<|file_sep|>", 151664, False),
  ("<tool_response>", 151665, False),
  ("</tool_response>", 151666, False),
  ("<think>", 151667, False),
  ("</think>", 151668, False),
)
REQUIRED_TOKENS = (
  "<|im_start|>",
  "<|im_end|>",
  "<|vision_start|>",
  "<|vision_end|>",
  "<|video_pad|>",
)

# The user/assistant part of the Qwen3-VL Instruct chat_template.json (section 5.5),
# without the tool-calling branches, which crpo_jax never uses.
CHAT_TEMPLATE = (
  "{%- for message in messages %}"
  "{{- '<|im_start|>' + message.role + '\\n' }}"
  "{%- if message.content is string %}{{- message.content }}"
  "{%- else %}{%- for content in message.content %}"
  "{%- if content.type == 'image' or 'image' in content or 'image_url' in content %}"
  "<|vision_start|><|image_pad|><|vision_end|>"
  "{%- elif content.type == 'video' or 'video' in content %}"
  "<|vision_start|><|video_pad|><|vision_end|>"
  "{%- elif 'text' in content %}{{- content.text }}"
  "{%- endif %}{%- endfor %}{%- endif %}"
  "{{- '<|im_end|>\\n' }}"
  "{%- endfor %}"
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_BASE_WORDS = [
  "user",
  "assistant",
  "system",
  "seconds",
  "Options",
  "answer",
  "think",
  "None",
  "of",
  "the",
  "above",
  "left",
  "right",
  "up",
  "down",
  "yes",
  "no",
  "a",
  "an",
  "and",
  "or",
  "is",
  "it",
]


# One unit per whitespace char, punctuation mark (incl. "_") or digit; letters group.
_UNIT = r"\s|[^\s\w]|_|\d|[^\W\d_]+"


def _words_of(text: str) -> list[str]:
  return re.findall(_UNIT, text)


def added_token_ids(compact: bool) -> dict[str, int]:
  """Id of every Qwen added token: the real ones, or 1..26 in the compact layout."""
  return {tok: (i + 1 if compact else idx) for i, (tok, idx, _) in enumerate(QWEN_ADDED_TOKENS)}


def check_special_ids(tokenizer, model_ids: dict[str, int], where: str) -> None:
  """Raises unless the tokenizer has the model config's special-token ids.

  Args:
    tokenizer: a loaded tokenizer.
    model_ids: field name -> id, e.g. {"video_token_id": 151656, ...} from the
      model config (image/video/vision_start/vision_end/eos/pad token ids).
    where: the tokenizer's directory, for the error.
  """
  tokens = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
    "eos_token_id": "<|im_end|>",
    "pad_token_id": "<|endoftext|>",
  }
  wrong = {
    field: (tok, tokenizer.convert_tokens_to_ids(tok), model_ids[field])
    for field, tok in tokens.items()
    if field in model_ids and tokenizer.convert_tokens_to_ids(tok) != model_ids[field]
  }
  size = model_ids.get("vocab_size")
  if size is not None and len(tokenizer) > size:
    raise ValueError(
      f"{where}: tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {size}"
    )
  if wrong:
    raise ValueError(
      f"{where}: tokenizer ids differ from the model config's "
      + ", ".join(
        f"{f}: {t} is {got} in the tokenizer, {want} in the model"
        for f, (t, got, want) in wrong.items()
      )
      + " (a compact word tokenizer, data.compact_vocab, needs a *_compact preset and back)"
    )


def build_word_tokenizer(
  words: Iterable[str], out_dir: str | os.PathLike, *, compact: bool = False
) -> str:
  """Writes a word-level HF tokenizer with the real Qwen special tokens.

  The vocabulary: "<unk>" (id 0), space, newline and tab, ASCII punctuation, the
  digits, the letters
  A..Z and a..z, a few base words, every word of the default CRPO instruction,
  then `words` (split into the same units the pre-tokenizer makes; duplicates
  dropped). Unknown words map to "<unk>".

  Args:
    words: extra words or texts (e.g. every question and option of a dataset).
    out_dir: directory to write tokenizer.json, tokenizer_config.json and the
      chat template into; created if missing.
    compact: added tokens at ids 1..26 and the words after them (see module doc),
      instead of the real Qwen ids above the words.

  Returns:
    `out_dir` as a string, loadable with `load_tokenizer`.
  """
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast

  added = added_token_ids(compact)
  vocab: dict[str, int] = {"<unk>": 0}
  if compact:
    vocab.update(added)
  units = ["<unk>", " ", "\n", "\t", *string.punctuation, *string.digits, *string.ascii_uppercase]
  units += [*string.ascii_lowercase, *_BASE_WORDS, *_words_of(prompts.INSTRUCTION)]
  for w in words:
    units += _words_of(w)
  for u in units:
    vocab.setdefault(u, len(vocab))
  if not compact and len(vocab) >= QWEN_ADDED_TOKENS[0][1]:
    raise ValueError(f"{len(vocab)} words collide with the Qwen special-token ids")
  vocab.update(added)
  tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
  tk.pre_tokenizer = pre_tokenizers.Split(Regex(_UNIT), behavior="isolated")
  tk.decoder = decoders.Fuse()
  tokenizer = PreTrainedTokenizerFast(
    tokenizer_object=tk,
    unk_token="<unk>",
    eos_token="<|im_end|>",
    pad_token="<|endoftext|>",
    chat_template=CHAT_TEMPLATE,
  )
  specials = [t for t, _, special in QWEN_ADDED_TOKENS if special and t != "<|im_end|>"]
  specials = [t for t in specials if t != "<|endoftext|>"]
  tokenizer.add_special_tokens({"additional_special_tokens": specials})
  tokenizer.add_tokens([t for t, _, special in QWEN_ADDED_TOKENS if not special])
  return save_checked(tokenizer, added, out_dir)


def save_checked(tokenizer, expected_ids: dict[str, int], out_dir) -> str:
  """Saves `tokenizer` to `out_dir` after checking every token sits at its expected id."""
  for tok, idx in expected_ids.items():
    got = tokenizer.convert_tokens_to_ids(tok)
    if got != idx:
      raise AssertionError(f"{tok} got id {got}, expected {idx}")
  os.makedirs(out_dir, exist_ok=True)
  tokenizer.save_pretrained(str(out_dir))
  return str(out_dir)


def load_tokenizer(checkpoint_dir: str | os.PathLike):
  """Loads the tokenizer of a local HF checkpoint directory (no network).

  Raises:
    FileNotFoundError: the directory is missing or has no tokenizer files.
    ValueError: the tokenizer lacks the Qwen3-VL chat/vision tokens.
  """
  checkpoint_dir = str(checkpoint_dir)
  if not os.path.isdir(checkpoint_dir):
    raise FileNotFoundError(f"{checkpoint_dir}: tokenizer directory not found")
  files = set(os.listdir(checkpoint_dir))
  if "tokenizer.json" not in files and not {"vocab.json", "merges.txt"} <= files:
    raise FileNotFoundError(
      f"{checkpoint_dir}: no tokenizer files (need tokenizer.json, or vocab.json and "
      f"merges.txt, with tokenizer_config.json); found {sorted(files)[:12]}"
    )
  from transformers import AutoTokenizer

  tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir, local_files_only=True)
  vocab = tokenizer.get_vocab()
  missing = [t for t in REQUIRED_TOKENS if t not in vocab]
  if missing:
    raise ValueError(f"{checkpoint_dir}: tokenizer lacks the Qwen3-VL tokens {missing}")
  return tokenizer

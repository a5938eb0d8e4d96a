"""A tokenizer with Qwen's real vocabulary, built offline from the `dashscope` wheel.

`dashscope/resources/qwen.tiktoken` holds Qwen's byte-level BPE ranks (151,643
tokens, the same table as Qwen2/Qwen3's vocab.json + merges.txt). transformers'
`TikTokenConverter` turns the ranks into a `tokenizers` BPE with the merges
recovered from the ranks. On top of it: the Qwen2 pre-tokenizer pattern (single
digits, unlike cl100k's 1-3), NFC normalisation and a byte-level decoder as in the
hub tokenizer.json; Qwen2/Qwen3's added tokens at their real ids 151643..151668
(`crpo_jax.data.tokenizer.QWEN_ADDED_TOKENS`, <think>/</think> non-special); and
the Qwen3-VL chat template's user/assistant part (`tokenizer.CHAT_TEMPLATE`).
`tiktoken` itself, the ranks' own encoder, is the reference the tests compare with.
"""

from __future__ import annotations

import importlib.util
import os

from crpo_jax.data import tokenizer as tok_lib

# Qwen2 / Qwen2.5 / Qwen3 tokenizer.json pre-tokenizer Split pattern.
QWEN_PATTERN = (
  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
  r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NUM_RANKS = 151643  # ids 0..151642 are BPE tokens; the added tokens follow


def qwen_tiktoken_path() -> str:
  """Path of dashscope's qwen.tiktoken, found without importing dashscope."""
  spec = importlib.util.find_spec("dashscope")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the dashscope wheel is not installed (pip install -e .[test])")
  path = os.path.join(next(iter(spec.submodule_search_locations)), "resources", "qwen.tiktoken")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: missing from the dashscope wheel")
  return path


def tiktoken_encoding():
  """The reference: tiktoken's own encoder over the same ranks and pattern."""
  import tiktoken
  from tiktoken.load import load_tiktoken_bpe

  ranks = load_tiktoken_bpe(qwen_tiktoken_path())
  assert len(ranks) == NUM_RANKS
  specials = {t: i for t, i, _ in tok_lib.QWEN_ADDED_TOKENS}
  return tiktoken.Encoding("qwen", pat_str=QWEN_PATTERN, mergeable_ranks=ranks,
                           special_tokens=specials)  # fmt: skip


def build_qwen_tokenizer(out_dir: str | os.PathLike) -> str:
  """Writes the Qwen-vocabulary tokenizer to `out_dir` (loadable by load_tokenizer)."""
  from tokenizers import AddedToken, normalizers
  from transformers import PreTrainedTokenizerFast
  from transformers.convert_slow_tokenizer import TikTokenConverter

  tk = TikTokenConverter(vocab_file=qwen_tiktoken_path(), pattern=QWEN_PATTERN).converted()
  tk.normalizer = normalizers.NFC()
  added = tok_lib.QWEN_ADDED_TOKENS
  # In id order (the special ones are 151643..151656, the others follow), so each
  # lands at its real id; then the wrapper marks the special ones as such.
  for tok, _, special in added:
    tk.add_tokens([AddedToken(tok, special=special, normalized=False)])
  tokenizer = PreTrainedTokenizerFast(
    tokenizer_object=tk,
    eos_token="<|im_end|>",
    pad_token="<|endoftext|>",
    chat_template=tok_lib.CHAT_TEMPLATE,
    clean_up_tokenization_spaces=False,
  )
  specials = [t for t, _, special in added if special and t not in ("<|im_end|>", "<|endoftext|>")]
  tokenizer.add_special_tokens({"additional_special_tokens": specials})
  return tok_lib.save_checked(tokenizer, {tok: idx for tok, idx, _ in added}, out_dir)

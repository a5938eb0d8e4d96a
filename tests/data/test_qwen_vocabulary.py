"""The pipeline on Qwen's real vocabulary (tests/data/qwen_tokenizer.py), not a word one.

Tokenisation is checked against tiktoken over the same ranks; the processor
against transformers' Qwen3VLProcessor on a real clip; the sampler's stop handling,
answer extraction and the local router on decoded real-vocabulary text.
"""

from __future__ import annotations

import collections
import dataclasses
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crpo_jax.data import prompts, router
from crpo_jax.data import tokenizer as tok_lib
from crpo_jax.data.processor import ProcessorConfig
from crpo_jax.data.video import decode_video
from crpo_jax.eval import extraction
from crpo_jax.rl import rewards, sampler
from crpo_jax.train import learner_rows
from tests.data import qwen_tokenizer, real_clips
from tests.data.test_processor import _compare_video
from tests.rl.test_sampler_standin import CONFIG as STANDIN_CONFIG

TEXTS = [
  "Hello, world!",
  prompts.prompt_text(
    "Which way does the red square move?", ["left", "right"], add_null_option=True
  ),
  "<0.2 seconds><|vision_start|><|video_pad|><|vision_end|><1.25 seconds> 2048 frames",
  "<think>\nThe square starts on the left, then\tmoves right.\n</think>\n<answer> B </answer>",
  "Ünïcödé: café, 你好, 😀 — done.  \n\n",
]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
  out = tmp_path_factory.mktemp("qwen_tokenizer")
  return tok_lib.load_tokenizer(qwen_tokenizer.build_qwen_tokenizer(out))


def test_vocabulary_matches_tiktoken_and_qwen_ids(qwen):
  enc = qwen_tokenizer.tiktoken_encoding()
  for text in TEXTS:
    ids = qwen.encode(text, add_special_tokens=False)
    assert ids == enc.encode(text, allowed_special="all"), text
    assert qwen.decode(ids) == text
  assert qwen.encode("Hello, world!", add_special_tokens=False) == [9707, 11, 1879, 0]
  assert len(qwen) == 151669
  for tok, idx, special in tok_lib.QWEN_ADDED_TOKENS:
    assert qwen.convert_tokens_to_ids(tok) == idx
    assert (tok in qwen.all_special_tokens) == special, tok
  # Every digit is its own token (timestamps and counts tokenise digit by digit).
  assert qwen.tokenize("2048") == ["2", "0", "4", "8"]


def test_chat_template_renders_our_prompt(qwen):
  messages = prompts.build_messages("Which way?", ["left", "right"], add_null_option=True)
  text = qwen.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
  assert text == prompts.prompt_text("Which way?", ["left", "right"], add_null_option=True)
  ids = qwen.encode(text, add_special_tokens=False)
  assert ids[:2] == [151644, 872] and ids[-3:] == [151644, 77091, 198]  # "user", "assistant\n"


def test_processor_parity_with_real_vocabulary_and_real_clip(qwen):
  frames, meta = decode_video(real_clips.path("bikes.mp4"), fps=2.0, max_frames=6)
  cfg = ProcessorConfig(video_max_pixels=6 * 128 * 32 * 32)
  vision, ours = _compare_video(qwen, frames, meta, cfg, expect_exact=False)
  assert vision.grid_thw[0, 0] == 3  # 6 frames, 2 per temporal patch
  decoded = qwen.decode(ours["input_ids"])
  assert all(stamp in decoded for stamp in vision.timestamps)  # real-BPE timestamps


class ScriptedLM(nnx.Module):
  """The sampler's model contract over the real vocabulary, emitting a fixed script:
  completion token t is script[t] for every row (greedy picks it: one-hot logits)."""

  def __init__(self, script: list[int]):
    text = dataclasses.replace(STANDIN_CONFIG.text, vocab_size=151936)
    self.config = dataclasses.replace(
      STANDIN_CONFIG, text=text, eos_token_id=151645, pad_token_id=151643
    )
    self.script = nnx.Variable(jnp.asarray(script, jnp.int32))

  def _logits(self, step):
    tok = self.script[...][jnp.minimum(step, self.script[...].shape[0] - 1)]
    return 30.0 * jax.nn.one_hot(tok, self.config.text.vocab_size)

  def prefill(self, input_ids, attention_mask, cache, **unused):
    rows = input_ids.shape[0]
    cache = cache.replace(index=jnp.int32(input_ids.shape[1]))
    cache = cache.replace(next_position=jnp.zeros((rows,), jnp.int32))
    return self._logits(cache.next_position), cache

  def decode_step(self, tokens, cache):
    step = cache.next_position + 1
    return self._logits(step), cache.replace(next_position=step, index=cache.index + 1)


def _script(qwen, text: str, tail: str = " and more text after the stop") -> list[int]:
  im_end = qwen.convert_tokens_to_ids("<|im_end|>")
  return qwen.encode(text, add_special_tokens=False) + [im_end] + qwen.encode(tail)


def test_sampler_stops_at_real_im_end_and_answer_is_extracted(qwen):
  completion = "<think>\nIt moves to the right.\n</think>\n<answer> B </answer>"
  script = _script(qwen, completion)
  model = ScriptedLM(script)
  prompt = qwen.encode(
    prompts.prompt_text("Which way?", ["left", "right"]), add_special_tokens=False
  )
  ids = np.asarray([prompt], np.int32)
  out = sampler.generate(model, {"input_ids": ids, "attention_mask": np.ones_like(ids)},
                         max_new_tokens=len(script) + 4)  # fmt: skip
  n = len(qwen.encode(completion, add_special_tokens=False)) + 1
  assert int(out.lengths[0]) == n  # the stop token is kept and counted
  tokens = np.asarray(out.tokens[0])
  assert tokens[n - 1] == 151645 and (tokens[n:] == 151643).all()  # then <|endoftext|> pads
  assert sampler.SamplingConfig(max_new_tokens=1).eos_ids == (
    qwen.convert_tokens_to_ids("<|im_end|>"),
    qwen.convert_tokens_to_ids("<|endoftext|>"),
  )
  text = learner_rows.decode(qwen, tokens, int(out.lengths[0]))
  assert text == completion  # <think> kept (not special), <|im_end|> dropped
  assert rewards.extract_letter(text, 3) == "B" and rewards.format_reward(text) == 1.0
  assert extraction.dybench(text, 3) == "B"


def test_local_router_on_real_vocabulary(qwen):
  """chat template -> encode -> generate (stop at <|im_end|>) -> decode -> parse."""
  local = object.__new__(router.LocalCheckpointRouter)
  local.tokenizer, local.max_new_tokens, local.fallback = qwen, 64, None
  local.model = ScriptedLM(_script(qwen, "<think>\nOrder matters here.\n</think>\n\nTemporal"))
  local.stats, local._lock = collections.Counter(), threading.Lock()
  reply = local.reply("What happens after the door opens?")
  assert reply == "<think>\nOrder matters here.\n</think>\n\nTemporal"
  assert local.route("What happens after the door opens?") == "temporal"

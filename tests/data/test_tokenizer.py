"""The word-level Qwen tokenizer, load_tokenizer errors, and the prompt format."""

import json
import os

import pytest

from crpo_jax.data import prompts
from crpo_jax.data.tokenizer import (
  QWEN_ADDED_TOKENS,
  build_word_tokenizer,
  load_tokenizer,
)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  out = tmp_path_factory.mktemp("tok")
  return load_tokenizer(build_word_tokenizer(["The ball moves to the left_side, twice!"], out))


def test_special_tokens_at_real_qwen_ids(tok):
  for token, idx, special in QWEN_ADDED_TOKENS:
    assert tok.convert_tokens_to_ids(token) == idx
    assert tok(token, add_special_tokens=False)["input_ids"] == [idx]
    assert (token in tok.all_special_tokens) == special
  assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 151645
  assert tok.pad_token_id == 151643
  added = {t for t, _, _ in QWEN_ADDED_TOKENS}
  assert max(i for t, i in tok.get_vocab().items() if t not in added) < 1000


def test_words_punctuation_digits_and_timestamps(tok):
  def pieces(text):
    return tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])

  assert pieces("<1.5 seconds>") == ["<", "1", ".", "5", " ", "seconds", ">"]
  assert pieces("The ball moves to the left_side, twice!") == [
    "The", " ", "ball", " ", "moves", " ", "to", " ", "the", " ",
    "left", "_", "side", ",", " ", "twice", "!",
  ]  # fmt: skip
  assert pieces("12 zebras") == ["1", "2", " ", "<unk>"]
  assert pieces("<think>ok</think><answer>B</answer>") == [
    "<think>", "<unk>", "</think>", "<", "answer", ">", "B", "<", "/", "answer", ">",
  ]  # fmt: skip


def test_decode_inverts_encode(tok):
  text = (
    "<|im_start|>assistant\n<think>The ball moves to the left.</think>\n"
    "<answer>A</answer><|im_end|>"
  )
  ids = tok(text, add_special_tokens=False)["input_ids"]
  assert tok.decode(ids) == text
  assert tok.decode(ids, skip_special_tokens=True) == (
    "assistant\n<think>The ball moves to the left.</think>\n<answer>A</answer>"
  )


def test_chat_template_matches_prompt_text(tok):
  for media in ("video", "image"):
    for null in (False, True):
      messages = prompts.build_messages(
        "Where?", ["left", "right"], add_null_option=null, media=media
      )
      rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
      assert rendered == prompts.prompt_text(
        "Where?", ["left", "right"], add_null_option=null, media=media
      )


def test_prompt_format_follows_method_section_2():
  text = prompts.question_text(" Which way? ", ["left", "right"], add_null_option=True)
  assert text.splitlines() == [
    "Which way?",
    "Options:",
    "A. left",
    "B. right",
    "C. None of the above",
    prompts.INSTRUCTION,
  ]
  assert "<think>" in prompts.INSTRUCTION and "<answer>" in prompts.INSTRUCTION
  full = prompts.prompt_text("Which way?", ["left", "right"])
  assert full.startswith("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Which way?")
  assert full.endswith("<|im_end|>\n<|im_start|>assistant\n")
  assert "system" not in full
  with pytest.raises(ValueError, match="media"):
    prompts.build_messages("q", ["a"], media="audio")


def test_load_tokenizer_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="not found"):
    load_tokenizer(tmp_path / "nope")
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match="no tokenizer files"):
    load_tokenizer(tmp_path)


def test_load_tokenizer_rejects_non_qwen_tokenizer(tmp_path):
  from tokenizers import Tokenizer, models
  from transformers import PreTrainedTokenizerFast

  tk = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "hi": 1}, unk_token="<unk>"))
  PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>").save_pretrained(str(tmp_path))
  assert "tokenizer.json" in os.listdir(tmp_path)
  with pytest.raises(ValueError, match="lacks the Qwen3-VL tokens"):
    load_tokenizer(tmp_path)
  json.loads((tmp_path / "tokenizer.json").read_text())  # a valid file, just not Qwen's


def test_compact_layout_keeps_roles_at_small_ids_matching_the_compact_presets(tmp_path):
  from crpo_jax.data.tokenizer import added_token_ids, check_special_ids
  from crpo_jax.model.config import get_preset

  text = "The ball moves to the left_side, twice!"
  small = load_tokenizer(build_word_tokenizer([text], tmp_path / "c", compact=True))
  real = load_tokenizer(build_word_tokenizer([text], tmp_path / "q"))
  assert list(added_token_ids(True).values()) == list(range(1, len(QWEN_ADDED_TOKENS) + 1))
  for token, _, special in QWEN_ADDED_TOKENS:
    assert small.convert_tokens_to_ids(token) == added_token_ids(True)[token]
    assert (token in small.all_special_tokens) == special
  assert max(small.get_vocab().values()) < 512
  # Same text, same pieces, same decoding: only the ids moved.
  prompt = f"<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>{text}<|im_end|>"
  ids = small(prompt, add_special_tokens=False)["input_ids"]
  assert small.convert_ids_to_tokens(ids) == real.convert_ids_to_tokens(
    real(prompt, add_special_tokens=False)["input_ids"]
  )
  assert small.decode(ids) == prompt
  for name in ("tiny_compact", "demo_compact"):
    cfg = get_preset(name)
    ids = {f: getattr(cfg, f) for f in ("image_token_id", "video_token_id", "eos_token_id")}
    check_special_ids(small, dict(ids, pad_token_id=cfg.pad_token_id), "compact")
    with pytest.raises(ValueError, match="video_token_id: <\\|video_pad\\|> is 151656"):
      check_special_ids(real, dict(ids, vocab_size=cfg.text.vocab_size), "qwen dir")
  with pytest.raises(ValueError, match="vocab_size is 40"):
    check_special_ids(small, {"vocab_size": 40}, "compact")
  check_special_ids(real, {"video_token_id": get_preset("tiny").video_token_id}, "qwen")

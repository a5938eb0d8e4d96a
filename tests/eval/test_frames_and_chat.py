"""Frame-folder videos and the chat text the model policy builds."""

import json

import numpy as np
import pytest
from PIL import Image

from crpo_jax.data import prompts as data_prompts
from crpo_jax.data import tokenizer as tokenizer_lib
from crpo_jax.data import video
from crpo_jax.data.video import VideoError
from crpo_jax.eval import benchmarks, frames, loaders, model_policy
from tests.data import media
from tests.eval import fixtures


def _folder(path, n=12, size=(32, 48)):
  path.mkdir(parents=True)
  imgs = media.pattern_frames(n, *size)
  for i, im in enumerate(imgs):  # unpadded numbers: natural order, not text order
    Image.fromarray(im).save(path / f"frame_{i + 1}.png")
  return imgs


def test_frame_folder_sampling(tmp_path):
  imgs = _folder(tmp_path / "v")
  got, meta = frames.decode_frame_folder(str(tmp_path / "v"), src_fps=3.0, fps=2.0)
  want = np.linspace(0, 11, 8).round().astype(int)  # 12 frames = 4 s at 3 fps -> 8
  np.testing.assert_array_equal(meta.frame_indices, want)
  np.testing.assert_array_equal(got, imgs[want])
  assert (meta.fps, meta.total_frames, meta.duration) == (3.0, 12, 4.0)


def test_frame_folder_window_and_invalid_bounds(tmp_path):
  imgs = _folder(tmp_path / "v")
  got, meta = frames.decode_frame_folder(str(tmp_path / "v"), src_fps=3.0, start=1.0, end=2.0)
  np.testing.assert_array_equal(meta.frame_indices, [3, 4, 5, 6])  # min_frames 4
  np.testing.assert_array_equal(got, imgs[3:7])
  _, whole = frames.decode_frame_folder(str(tmp_path / "v"), src_fps=3.0, start=5.0, end=1.0)
  assert whole.frame_indices[0] == 0 and whole.frame_indices[-1] == 11


def test_frame_folder_errors(tmp_path):
  with pytest.raises(VideoError, match="not found"):
    frames.decode_frame_folder(str(tmp_path / "none"), src_fps=3.0)
  _folder(tmp_path / "one", n=1)
  with pytest.raises(VideoError, match="1 image"):
    frames.decode_frame_folder(str(tmp_path / "one"), src_fps=3.0)
  _folder(tmp_path / "mixed", n=4)
  Image.fromarray(media.pattern_frames(1, 16, 16)[0]).save(tmp_path / "mixed" / "frame_5.png")
  with pytest.raises(VideoError, match="differ in size"):
    frames.decode_frame_folder(str(tmp_path / "mixed"), src_fps=3.0, min_frames=5)


def test_mvbench_frame_task_items(tmp_path):
  (tmp_path / "json").mkdir()
  recs = [
    {
      "video": "s01e01_seg02_clip_00",
      "question": "q",
      "candidates": ["a", "b"],
      "answer": "b",
      "start": 3.5,
      "end": 9.0,
    }
  ]
  (tmp_path / "json" / "episodic_reasoning.json").write_text(json.dumps(recs))
  (item,) = loaders.load_mvbench(str(tmp_path))
  assert item.meta == {"task": "Episodic Reasoning", "frames_fps": 3.0}
  assert item.video.endswith("video/tvqa/frames_fps3_hq/s01e01_seg02_clip_00")
  assert (item.start, item.end, item.answer) == (3.5, 9.0, "B")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  out = tmp_path_factory.mktemp("tok")
  return tokenizer_lib.load_tokenizer(tokenizer_lib.build_word_tokenizer(["ball"], out))


def test_chat_text_dybench_matches_training_prompt(tmp_path, tokenizer):
  bench = benchmarks.get_benchmark("dybench")
  item = bench.load(str(fixtures.write_dybench(tmp_path)), None)[2]
  text = model_policy.chat_text(bench.prompt(item), tokenizer)
  assert text == data_prompts.prompt_text(item.question, item.options, add_null_option=True)


def test_chat_text_mvbench_system_and_prefix(tmp_path, tokenizer):
  bench = benchmarks.get_benchmark("mvbench")
  item = bench.load(str(fixtures.write_mvbench(tmp_path)), None)[1]
  text = model_policy.chat_text(bench.prompt(item), tokenizer)
  assert text.startswith("<|im_start|>system\nCarefully watch the video")
  # system_llm=True: the system text also opens the user text, before the question.
  user = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Carefully watch the video"
  assert user in text and "addresses the question.\nQuestion: Which" in text
  assert "(D) down\nOnly give the best option.<|im_end|>" in text
  assert text.endswith("<|im_start|>assistant\nBest option:(")


# VideoChat2 get_index, worked by hand: start_idx = max(first_idx, round(start * fps)),
# end_idx = min(round(end * fps), max_frame), seg = (end_idx - start_idx) / 16, frame i
# = int(start_idx + seg / 2 + round(seg * i)).
@pytest.mark.parametrize(
  "start,end,fps,max_frame,first_idx,head,last",
  [
    # unbounded 100-frame video: seg = 99 / 16 = 6.1875
    (None, None, 30.0, 99, 0, [3, 9, 15, 22], 96),
    # bounded 1.0-5.5 s at 30 fps: 30..165, seg = 8.4375
    (1.0, 5.5, 30.0, 299, 0, [34, 42, 51, 59], 161),
    # a TVQA folder of 30 files at 3 fps, 3.5-9.0 s: round(10.5) = 10 (half to even),
    # end 27, seg = 17 / 16
    (3.5, 9.0, 3.0, 30, 1, [10, 11, 12, 13], 26),
  ],
)
def test_segment_middles_is_videochat2_get_index(start, end, fps, max_frame, first_idx, head, last):
  idx = frames.segment_middles(16, start, end, fps, max_frame, first_idx)
  assert len(idx) == 16 and idx[:4].tolist() == head and idx[-1] == last


def test_frame_folder_videochat2_read_frame(tmp_path):
  # read_frame: files "00001.jpg".., max_frame = entries in the folder (20), first_idx 1;
  # seg = 19 / 16 = 1.1875 -> files 1, 2, 3, 5, ..., 19.
  d = tmp_path / "clip"
  d.mkdir()
  imgs = media.pattern_frames(20, 32, 48)
  for i, im in enumerate(imgs):
    Image.fromarray(im).save(d / f"{i + 1:05d}.jpg", quality=100)
  got, meta = frames.decode_frame_folder(str(d), src_fps=3.0, segments=16)
  numbers = [1, 2, 3, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 18, 19]
  assert meta.frame_indices.tolist() == [k - 1 for k in numbers]
  assert got.shape == (16, 32, 48, 3)


def test_decode_video_picks_videochat2_frames(tmp_path):
  path = media.write_pattern_video(tmp_path / "a.mp4", 40, 32, 32, fps=8)

  def pick(total, fps):
    return frames.segment_middles(16, None, None, fps, total - 1)

  got, meta = video.decode_video(path, pick=pick)
  want = frames.segment_middles(16, None, None, 8.0, 39)  # seg = 39 / 16
  assert want[:3].tolist() == [1, 3, 6]
  np.testing.assert_array_equal(meta.frame_indices, want)
  np.testing.assert_array_equal(got, media.decode_all(path)[want])
  with pytest.raises(VideoError, match="outside the 40 frames"):
    video.decode_video(path, pick=lambda total, fps: [0, total])

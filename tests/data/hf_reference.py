"""transformers' Qwen3VLProcessor with the hub's Qwen3-VL settings, for parity and benchmarks."""

from crpo_jax.data.processor import ProcessorConfig


def hf_processor(tokenizer, cfg: ProcessorConfig):
  """The reference processor built as reference/qwen3vl.md Appendix A does, from `cfg`'s budgets."""
  from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

  common = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2}
  common.update(image_mean=[0.5] * 3, image_std=[0.5] * 3)
  image = Qwen2VLImageProcessor(
    **common, size={"shortest_edge": cfg.image_min_pixels, "longest_edge": cfg.image_max_pixels}
  )
  video = Qwen3VLVideoProcessor(
    **common,
    size={"shortest_edge": cfg.video_min_pixels, "longest_edge": cfg.video_max_pixels},
    fps=cfg.fps,
    min_frames=cfg.min_frames,
    max_frames=cfg.max_frames,
  )
  return Qwen3VLProcessor(
    image_processor=image,
    tokenizer=tokenizer,
    video_processor=video,
    chat_template=tokenizer.chat_template,
  )

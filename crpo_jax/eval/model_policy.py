"""The model policy: greedy answers from a Qwen3-VL checkpoint through crpo_jax's sampler.

Per batch: decode each item's video (Qwen3-VL frame sampling, or VideoChat2's
segment middles when `segments` is set; clip bounds honoured), blank it for the
blind baseline, render the benchmark's chat prompt with the tokenizer's own
template (so Thinking checkpoints get their generation prompt) plus any assistant
prefix, expand the video placeholders, pad the batch to a fixed row count and
bucketed lengths, and run one jitted greedy sampler call with prompt rows sharded
over the mesh's data axes.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crpo_jax import bucketing, sharding
from crpo_jax.data import processor, video
from crpo_jax.data import tokenizer as tokenizer_lib
from crpo_jax.eval import frames as frames_lib
from crpo_jax.eval.baselines import blank_video
from crpo_jax.eval.items import EvalItem, Prompt
from crpo_jax.rl import sampler as sampler_lib

_LOG = logging.getLogger(__name__)

# Where a training workdir keeps its transformers export (train/loop.py: hf/).
WORKDIR_EXPORTS = ("hf", "export")


def resolve_model_dir(path: str) -> pathlib.Path:
  """An HF checkpoint dir: `path` itself, or a training workdir's export under it."""
  p = pathlib.Path(path).expanduser()
  for cand in (p, *(p / sub for sub in WORKDIR_EXPORTS)):
    if (cand / "config.json").exists():
      return cand
  looked = ", ".join(str(c / "config.json") for c in (p, *(p / s for s in WORKDIR_EXPORTS)))
  raise FileNotFoundError(
    f"config.model: {p} is neither an HF checkpoint nor a workdir with an export "
    f"(looked for {looked}); export a workdir with its `hf/` export first"
  )


def chat_text(prompt: Prompt, tokenizer) -> str:
  """The templated prompt: optional system turn, user turn (video, then text),
  the generation prompt, then the assistant prefix the model continues."""
  messages = []
  if prompt.system:
    messages.append({"role": "system", "content": prompt.system})
  content = [{"type": "video"}, {"type": "text", "text": prompt.user}]
  messages.append({"role": "user", "content": content})
  text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
  return text + prompt.assistant_prefix


class ModelPolicy:
  """`(items, prompts, blind) -> outputs` with greedy decoding (runner.Policy)."""

  def __init__(
    self,
    model: nnx.Module,
    tokenizer,
    *,
    batch_size: int,
    max_new_tokens: int,
    proc: processor.ProcessorConfig,
    mesh: jax.sharding.Mesh | None = None,
    rules: sharding.Rules = sharding.DEFAULT_RULES,
    segments: int = 0,
  ):
    self.tokenizer, self.batch_size, self.proc = tokenizer, batch_size, proc
    self.segments = segments
    cfg = model.config
    self.pad_id = int(cfg.pad_token_id)
    graphdef, self.state = nnx.split(model)
    dtype = jnp.dtype(getattr(model, "dtype", None) or jnp.float32)
    sampling = sampler_lib.SamplingConfig(
      max_new_tokens=max_new_tokens,
      temperature=0.0,
      eos_ids=tuple(dict.fromkeys((int(cfg.eos_token_id), sampler_lib.ENDOFTEXT_ID))),
      pad_id=self.pad_id,
      cache_dtype=dtype.name,
    )
    self.sampler = sampler_lib.make_sampler(graphdef, cfg, sampling, mesh, rules)

  @classmethod
  def from_config(cls, cfg) -> ModelPolicy:
    """Loads the checkpoint (sharded over the config's mesh) and its tokenizer."""
    from crpo_jax.model import hf_io

    model_dir = resolve_model_dir(cfg.model)
    mesh = sharding.make_mesh(
      {"data": cfg.mesh.data, "fsdp": cfg.mesh.fsdp, "tensor": cfg.mesh.tensor}
    )
    _LOG.info("loading %s on mesh %s", model_dir, dict(mesh.shape))
    model = hf_io.load_hf(model_dir, jnp.dtype(cfg.dtype), mesh=mesh)
    proc = processor.ProcessorConfig(
      fps=cfg.fps,
      min_frames=cfg.min_frames,
      max_frames=cfg.max_frames,
      # The processor's budget is over all frames (T * H * W).
      video_max_pixels=cfg.max_pixels * cfg.max_frames,
    )
    tokenizer = tokenizer_lib.load_tokenizer(model_dir)
    return cls(
      model,
      tokenizer,
      batch_size=cfg.batch_size,
      max_new_tokens=cfg.max_new_tokens,
      proc=proc,
      mesh=mesh,
      segments=int(cfg.get("segments", 0)),
    )

  def _inputs(self, item: EvalItem, prompt: Prompt, blind: bool) -> dict[str, np.ndarray]:
    sample = {
      "fps": self.proc.fps,
      "min_frames": self.proc.min_frames,
      "max_frames": self.proc.max_frames,
      "start": item.start,
      "end": item.end,
    }
    if "frames_fps" in item.meta:  # a folder of frames (MVBench Episodic Reasoning)
      frames, meta = frames_lib.decode_frame_folder(
        item.video, src_fps=float(item.meta["frames_fps"]), segments=self.segments, **sample
      )
    elif self.segments:

      def pick(total: int, src_fps: float) -> np.ndarray:
        return frames_lib.segment_middles(
          self.segments, item.start, item.end, src_fps, max_frame=total - 1
        )

      frames, meta = video.decode_video(item.video, pick=pick, **sample)
    else:
      frames, meta = video.decode_video(item.video, **sample)
    if blind:
      frames = blank_video(frames)
    vision = processor.process_video_frames(frames, meta, self.proc)
    out = processor.tokenize_prompt(chat_text(prompt, self.tokenizer), vision, self.tokenizer)
    out["pixel_values_videos"], out["video_grid_thw"] = vision.pixel_values, vision.grid_thw
    return out

  def _batch(self, rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    # Fixed row count: a short last batch repeats its last row, so shapes stay bucketed.
    rows = rows + [rows[-1]] * (self.batch_size - len(rows))
    length = max(len(r["input_ids"]) for r in rows)
    ids = np.full((len(rows), length), self.pad_id, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    types = np.zeros((len(rows), length), np.int32)
    for i, r in enumerate(rows):
      n = len(r["input_ids"])
      ids[i, :n], mask[i, :n], types[i, :n] = r["input_ids"], 1, r["mm_token_type_ids"]
    batch = {
      "input_ids": ids,
      "attention_mask": mask,
      "mm_token_type_ids": types,
      "pixel_values_videos": np.concatenate([r["pixel_values_videos"] for r in rows]),
      "video_grid_thw": np.concatenate([r["video_grid_thw"] for r in rows]),
    }
    return bucketing.pad_batch(batch, pad_id=self.pad_id)

  def __call__(
    self, items: Sequence[EvalItem], prompts: Sequence[Prompt], blind: bool
  ) -> list[str | Exception]:
    if len(items) > self.batch_size:
      raise ValueError(f"{len(items)} items exceed batch_size {self.batch_size}")
    outputs: list[str | Exception] = [""] * len(items)
    rows, where = [], []
    for i, (item, prompt) in enumerate(zip(items, prompts, strict=True)):
      try:
        rows.append(self._inputs(item, prompt, blind))
        where.append(i)
      except video.VideoError as e:  # scored as wrong, like Video-R1's "error" answer
        outputs[i] = e
    if rows:
      # Every process runs the same batch; each gets all rows back.
      gen = sharding.host_get(self.sampler(self.state, self._batch(rows), jax.random.key(0)))
      for row, i in enumerate(where):
        tokens = np.asarray(gen.tokens[row])[: int(gen.lengths[row])]
        outputs[i] = self.tokenizer.decode(tokens.tolist(), skip_special_tokens=True)
    return outputs

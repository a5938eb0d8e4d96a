"""The synthetic world: rendered clips whose answers are known for both branches.

METHOD.md section 9. `python -m crpo_jax.data.synthetic --out DIR --num N --seed S`
writes `DIR/videos/*.mp4` (PyAV, libx264 yuv420p, NUM_FRAMES frames at FPS) and
`DIR/<split>.jsonl` in the `records` schema. Families (route, what T does):

  moving_direction     left/right: spatiotemporal (flip and reverse both swap it);
                       up/down: temporal (reverse swaps it, flip would not)
  reversible_dynamics  grow/shrink, fill/empty, appear/disappear: temporal
  event_order          which of two shapes flashes first: temporal
  spatial_relation     is A left or right of B: spatial (flip swaps it)
  static               colour, shape, count: static (nothing changes it)
  static_colour, static_shape, static_count: one kind of `static` each (only
                       when `--families` names them; the default world has the five above)

Rule for `answer_cf` (consistent with `transforms.counterfactual_answer`): a family
only gets a route all of whose transforms give the same counterfactual answer, so
`answer_cf` holds whichever transform the pipeline draws. With probability
`--null-cf` (training split, dynamic questions) the counterfactual answer's text is
left out of the options, so `answer_cf` names the appended null option.

`--shortcut P --split train`: with probability P the background colour encodes the
answer letter (a static cue GRPO can learn instead of the dynamics); any other
split refuses it. `--pairs` writes DyBench-style pairs instead: the original clip
and its transformed clip as two items sharing a `pair_id`, each with its answer.
Output is a pure function of the flags (per-clip RNG `default_rng([seed, index])`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np

from crpo_jax.data import transforms

SIZE, NUM_FRAMES, FPS = 64, 16, 4.0
COLOURS = {
  "red": (230, 40, 40),
  "green": (40, 200, 60),
  "blue": (40, 70, 235),
  "yellow": (235, 215, 40),
}
SHAPES = ("square", "circle", "triangle")
BACKGROUND = (128, 128, 128)
# Background per answer letter when the shortcut is on; far from every object colour.
SHORTCUT_BACKGROUNDS = ((20, 20, 20), (215, 215, 215), (100, 60, 20), (20, 80, 90), (90, 30, 90))
FAMILIES = (
  "moving_direction",
  "reversible_dynamics",
  "event_order",
  "spatial_relation",
  "static",
)
_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}

Draw = Callable[[np.ndarray, int], None]  # draws frame t onto an [H, W, 3] canvas
# A family renders (draw, question, options, truth text, counterfactual truth text, route)
# from (rng, number of frames, frame size).
Scene = tuple[Draw, str, list[str], str, str, str]


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
  """Boolean [size, size] mask of a shape centred at (cx, cy) with half-extent r."""
  y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
  if shape == "square":
    return (np.abs(x - cx) <= r) & (np.abs(y - cy) <= r)
  if shape == "circle":
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
  if shape == "triangle":  # apex up, mirror-symmetric so flip keeps the shape
    return (y >= cy - r) & (y <= cy + r) & (np.abs(x - cx) <= (y - (cy - r)) / 2)
  raise ValueError(f"unknown shape {shape!r}")


def _paint(canvas: np.ndarray, mask: np.ndarray, colour: str) -> None:
  canvas[mask] = COLOURS[colour]


def _obj(rng: np.random.Generator, k: int = 1) -> list[tuple[str, str]]:
  """k objects with distinct colours: (colour, shape)."""
  colours = rng.choice(list(COLOURS), size=k, replace=False)
  return [(str(c), str(rng.choice(SHAPES))) for c in colours]


def _moving_direction(rng: np.random.Generator, n: int, s: int) -> Scene:
  """One shape crossing the frame left, right, up or down."""
  (c, shp), direction = _obj(rng)[0], str(rng.choice(list(_OPPOSITE)))
  r, travel = 7.0, s - 2 * 7.0 - 8
  across = float(rng.uniform(r + 2, s - r - 2))
  dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[direction]

  def draw(canvas, t):
    f = t / (n - 1) - 0.5
    cx = s / 2 + dx * f * travel if dx else across
    cy = s / 2 + dy * f * travel if dy else across
    _paint(canvas, shape_mask(shp, cx, cy, r, s), c)

  route = "spatiotemporal" if dx else "temporal"
  q = f"In which direction does the {c} {shp} move?"
  return draw, q, ["left", "right", "up", "down"], direction, _OPPOSITE[direction], route


def _reversible_dynamics(rng: np.random.Generator, n: int, s: int) -> Scene:
  """A shape growing or shrinking, a box filling or emptying, a shape appearing or disappearing."""
  (c, shp), kind = _obj(rng)[0], str(rng.choice(["grow", "fill", "appear"]))
  forward = bool(rng.integers(2))
  cx, cy = float(rng.uniform(22, s - 22)), float(rng.uniform(22, s - 22))

  def draw(canvas, t):
    f = t / (n - 1) if forward else 1 - t / (n - 1)
    if kind == "grow":
      _paint(canvas, shape_mask(shp, cx, cy, 5 + 13 * f, s), c)
    elif kind == "fill":  # outline box whose contents rise (forward) or fall
      box = shape_mask("square", cx, cy, 16, s) & ~shape_mask("square", cx, cy, 14, s)
      _paint(canvas, box, c)
      top = cy + 14 - 28 * f
      inner = shape_mask("square", cx, cy, 14, s)
      _paint(canvas, inner & (np.arange(s)[:, None] + 0.5 >= top), c)
    elif (t >= n // 2) == forward:  # appear: visible in the second half only
      _paint(canvas, shape_mask(shp, cx, cy, 9, s), c)

  what = f"the {c} {shp}" if kind != "fill" else f"the {c} box"
  opts = {
    "grow": (["it grows", "it shrinks", "it stays the same size"], f"How does {what} change?"),
    "fill": (["it fills up", "it empties", "it stays the same"], f"What happens to {what}?"),
    "appear": (["it appears", "it disappears", "it stays visible"], f"What does {what} do?"),
  }[kind]
  truth, other = (opts[0][0], opts[0][1]) if forward else (opts[0][1], opts[0][0])
  return draw, opts[1], opts[0], truth, other, "temporal"


def _event_order(rng: np.random.Generator, n: int, s: int) -> Scene:
  """Two shapes flashing one after the other."""
  (ca, sa), (cb, sb) = _obj(rng, 2)
  a_first = bool(rng.integers(2))
  pos = [(s * 0.3, float(rng.uniform(14, s - 14))), (s * 0.7, float(rng.uniform(14, s - 14)))]
  rng.shuffle(pos)
  early, late = (0, n // 4), (n // 2, 3 * n // 4)

  def draw(canvas, t):
    for (c, shp), (x, y), (t0, t1) in zip(
      [(ca, sa), (cb, sb)], pos, [early, late] if a_first else [late, early]
    ):
      if t0 <= t < t1:
        _paint(canvas, shape_mask(shp, x, y, 8, s), c)

  a, b = f"the {ca} {sa}", f"the {cb} {sb}"
  truth, other = (a, b) if a_first else (b, a)
  return (
    draw,
    "Which shape flashes first?",
    [a, b, "both at the same time"],
    truth,
    other,
    "temporal",
  )


def _spatial_relation(rng: np.random.Generator, n: int, s: int) -> Scene:
  """Two shapes side by side, bobbing vertically."""
  (ca, sa), (cb, sb) = _obj(rng, 2)
  a_left = bool(rng.integers(2))
  xa, xb = (s * 0.27, s * 0.73) if a_left else (s * 0.73, s * 0.27)
  ya, yb = float(rng.uniform(12, s - 12)), float(rng.uniform(12, s - 12))
  wobble = float(rng.uniform(0, 2 * np.pi))

  def draw(canvas, t):  # a small vertical bob so the clip is not a still image
    bob = 3 * np.sin(wobble + 2 * np.pi * t / n)
    _paint(canvas, shape_mask(sa, xa, min(max(ya + bob, 10), s - 10), 8, s), ca)
    _paint(canvas, shape_mask(sb, xb, min(max(yb - bob, 10), s - 10), 8, s), cb)

  q = f"Where is the {ca} {sa} relative to the {cb} {sb}?"
  truth = "to the left of it" if a_left else "to the right of it"
  other = "to the right of it" if a_left else "to the left of it"
  return draw, q, ["to the left of it", "to the right of it"], truth, other, "spatial"


def _static(rng: np.random.Generator, n: int, s: int, kind: str | None = None) -> Scene:
  """The colour or shape of one object, or the count of same-coloured objects."""
  kind = kind or str(rng.choice(["colour", "shape", "count"]))
  (c, shp) = _obj(rng)[0]
  cells = rng.permutation(9)[: int(rng.integers(1, 5)) if kind == "count" else 1]
  centres = [((i % 3 + 0.5) * s / 3, (i // 3 + 0.5) * s / 3) for i in cells]

  def draw(canvas, t):
    for x, y in centres:
      _paint(canvas, shape_mask(shp, x, y, 7, s), c)

  if kind == "colour":
    return draw, f"What colour is the {shp}?", list(COLOURS), c, c, "static"
  if kind == "shape":
    return draw, f"What shape is the {c} object?", list(SHAPES), shp, shp, "static"
  q = f"How many {c} shapes are there?"
  return draw, q, ["1", "2", "3", "4"], str(len(centres)), str(len(centres)), "static"


_RENDER = dict(
  zip(FAMILIES, [_moving_direction, _reversible_dynamics, _event_order, _spatial_relation, _static])
)
# One question kind of `static` each, selectable with `families` (never in the default
# world): static colour is what a tiny random model learns first from pixels.
SUBFAMILIES = ("static_colour", "static_shape", "static_count")


def _static_kind(kind: str) -> Callable[..., Scene]:
  return lambda rng, n, s: _static(rng, n, s, kind)


_RENDER.update({name: _static_kind(name.split("_")[1]) for name in SUBFAMILIES})


def write_mp4(path: str, frames: np.ndarray, fps: float = FPS) -> None:
  """Encodes [T, H, W, 3] uint8 frames as H.264 yuv420p (single-threaded: deterministic)."""
  import av  # heavy optional dependency, imported where used

  with av.open(path, "w") as container:
    stream = container.add_stream("libx264", rate=int(fps), options={"crf": "8", "threads": "1"})
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = "yuv420p"
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def check_families(families: Sequence[str]) -> tuple[str, ...]:
  """The families as a tuple; raises on an empty list or an unknown name."""
  families = tuple(families)
  unknown = [f for f in families if f not in _RENDER]
  if not families or unknown:
    known = FAMILIES + SUBFAMILIES
    raise ValueError(f"synthetic families {list(families)}: unknown {unknown}; known {known}")
  return families


def make_clip(
  index: int,
  seed: int,
  *,
  split: str,
  shortcut: float = 0.0,
  null_cf: float = 0.0,
  families: Sequence[str] = FAMILIES,
  shuffle_options: bool = True,
  cue_conflict: bool = False,
):
  """Renders clip `index`: (frames [T, H, W, 3] uint8, record dict without `video`).

  `families` restricts the family draw (the default keeps every clip of the full
  world). `shuffle_options=False` keeps each family's own option order, so a word
  always has the same letter (one hop less to learn). `cue_conflict` paints the
  shortcut background of a *wrong* letter: an evaluation of shortcut-following.
  """
  rng = np.random.default_rng([seed, index])
  family = families[int(rng.integers(len(families)))]
  draw, question, options, truth, cf_truth, route = _RENDER[family](rng, NUM_FRAMES, SIZE)
  order = rng.permutation(len(options))  # drawn either way: later draws stay the same
  if shuffle_options:
    options = [options[i] for i in order]
  # Kept to >= 2 real options (a record needs two); only 3+ option families qualify.
  if null_cf and route != "static" and len(options) > 2 and rng.random() < null_cf:
    options.remove(cf_truth)  # the counterfactual answer becomes the null option
  answer = options.index(truth)
  cf = options.index(cf_truth) if cf_truth in options else len(options)
  bg = BACKGROUND
  if shortcut and rng.random() < shortcut:
    bg = SHORTCUT_BACKGROUNDS[answer % len(SHORTCUT_BACKGROUNDS)]
  cue = None
  if cue_conflict:  # the background of a letter that is neither answer nor cf answer
    wrong = [i for i in range(len(options)) if i not in (answer, cf)]
    cue = int(wrong[int(rng.integers(len(wrong)))]) if wrong else (answer + 1) % len(options)
    bg = SHORTCUT_BACKGROUNDS[cue % len(SHORTCUT_BACKGROUNDS)]
  frames = np.empty((NUM_FRAMES, SIZE, SIZE, 3), np.uint8)
  for t in range(NUM_FRAMES):
    frames[t] = bg
    draw(frames[t], t)
  uid = f"{split}-{seed}-{index:06d}"
  record = {
    "id": uid,
    "question": question,
    "options": options,
    "answer": transforms.letter(answer),
    "answer_cf": transforms.letter(cf),
    "pair_id": uid,
    "category": family,
    "route": route,
    "start": None,
    "end": None,
  }
  if cue is not None:
    record["cue"] = transforms.letter(cue)
  return frames, record


def generate(
  out: str,
  num: int,
  seed: int,
  *,
  split: str = "train",
  shortcut: float = 0.0,
  null_cf: float = 0.0,
  pairs: bool = False,
  families: Sequence[str] = FAMILIES,
  shuffle_options: bool = True,
  cue_conflict: bool = False,
) -> str:
  """Writes `num` clips (2 * num items with `pairs`) and returns the JSONL path."""
  families = check_families(families)
  if cue_conflict and (shortcut or split == "train"):
    raise ValueError("--cue-conflict is an evaluation split: no --shortcut, not --split train")
  if not 0 <= shortcut <= 1 or not 0 <= null_cf <= 1:
    raise ValueError(f"--shortcut ({shortcut}) and --null-cf ({null_cf}) must lie in [0, 1]")
  if shortcut and split != "train":
    raise ValueError(f"--shortcut is for the training split only, got --split {split}")
  if null_cf and pairs:
    raise ValueError("--null-cf cannot be combined with --pairs: each item needs its answer")
  os.makedirs(os.path.join(out, "videos"), exist_ok=True)
  path = os.path.join(out, f"{split}.jsonl")
  with open(path, "w", encoding="utf-8") as f:
    for i in range(num):
      frames, rec = make_clip(
        i,
        seed,
        split=split,
        shortcut=shortcut,
        null_cf=null_cf,
        families=families,
        shuffle_options=shuffle_options,
        cue_conflict=cue_conflict,
      )
      items = [(rec["id"], frames, rec)]
      if pairs:
        t = transforms.choose_transform(rec["route"], seed, rec["id"])
        swapped = dict(rec, id=f"{rec['id']}-{t}", answer=rec["answer_cf"], answer_cf=rec["answer"])
        items = [
          (f"{rec['id']}-orig", frames, dict(rec, id=f"{rec['id']}-orig")),
          (swapped["id"], transforms.apply_transform(frames, t), swapped),
        ]
      for name, clip, item in items:
        video = os.path.join("videos", f"{name}.mp4")
        write_mp4(os.path.join(out, video), clip)
        f.write(json.dumps(dict(item, video=video)) + "\n")
  return path


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m crpo_jax.data.synthetic",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--num", type=int, required=True, help="number of clips")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--split", default="train", help="split name; also the JSONL file name")
  p.add_argument("--shortcut", type=float, default=0.0, help="P(background encodes answer)")
  p.add_argument("--null-cf", type=float, default=0.0, help="P(cf answer is the null option)")
  p.add_argument("--pairs", action="store_true", help="DyBench-style original/transformed pairs")
  p.add_argument("--families", default=",".join(FAMILIES), help="comma-separated families")
  p.add_argument("--fixed-options", action="store_true", help="no per-clip option shuffle")
  p.add_argument("--cue-conflict", action="store_true", help="background of a wrong letter")
  a = p.parse_args(argv)
  try:
    path = generate(
      a.out,
      a.num,
      a.seed,
      split=a.split,
      shortcut=a.shortcut,
      null_cf=a.null_cf,
      pairs=a.pairs,
      families=a.families.split(","),
      shuffle_options=not a.fixed_options,
      cue_conflict=a.cue_conflict,
    )
  except ValueError as e:
    p.error(str(e))
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

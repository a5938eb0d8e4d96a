"""Per-rollout rewards of one prompt, host-side Python (METHOD.md sections 2, 5, 7).

The learner decodes completions, then calls `score_prompt` once per prompt with the
original-branch completions, the counterfactual-branch ones (CRPO), and whatever
extra rollouts the algorithm samples (T-GRPO's shuffled group, ArrowRL's greedy
reversed rollout). `terms` (from `algorithms.AlgorithmSpec.reward_terms`) says which
reward terms apply. Every term comes back separately, shaped [branches, G]
(branch 0 = original, branch 1 = counterfactual when given), so the learner can log
it per branch and per route. Each term lies in [0, 1]; weights live in
`RewardConfig` and only `total` applies them:

  total = w_acc * accuracy + w_fmt * format + w_crr * crr
          + w_t * temporal_bonus + w_rev * reverse_reward + w_len * length_bonus
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Sequence

import numpy as np

from crpo_jax.rl import crr as crr_lib

TERMS = ("accuracy", "format", "crr", "temporal_bonus", "reverse_reward", "length_bonus")

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# Video-R1's format regex, anchored at both ends (fullmatch): nothing may precede
# <think> or follow </answer>.
_FORMAT_RE = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  """Reward weights and variants.

  Attributes:
    accuracy_weight: weight of the accuracy term.
    format_weight: weight of the format term (METHOD.md default 1.0).
    crr_weight: weight of CRR (0.5, after ArrowGEV's alpha; ours).
    crr_variant: "expected", "majority" or "paired" (crr.py).
    crr_gate_on_correct: CRR only for rollouts whose accuracy term is 1 (ours). On a
      branch without an accuracy term (dynamic route, no y_cf) nothing is gated.
    temporal_weight: T-GRPO's alpha, added to correct ordered rollouts (0.3).
    temporal_mu: T-GRPO's condition p >= mu * p_shuffled (0.8).
    reverse_weight: ArrowRL's reverse reward weight (0.5; MCQ form is ours).
    length_weight: Video-R1's length bonus omega (0.2).
    length_min: shortest completion (tokens) that earns the length bonus.
    length_max: longest completion (tokens) that earns the length bonus.
  """

  accuracy_weight: float = 1.0
  format_weight: float = 1.0
  crr_weight: float = 0.5
  crr_variant: str = "expected"
  crr_gate_on_correct: bool = False
  temporal_weight: float = 0.3
  temporal_mu: float = 0.8
  reverse_weight: float = 0.5
  length_weight: float = 0.2
  length_min: int = 320
  length_max: int = 512

  def __post_init__(self):
    if self.crr_variant not in crr_lib.VARIANTS:
      raise ValueError(f"crr_variant {self.crr_variant!r} not in {crr_lib.VARIANTS}")


@dataclasses.dataclass(frozen=True)
class ExampleInfo:
  """What the reward needs to know about one training example.

  Attributes:
    route: "spatial", "temporal", "spatiotemporal" or "static" (any case; stored
      lower case as in data/records.py).
    answer: ground-truth letter y on the original video (never the null option).
    num_options: k + 1, the options including the trailing null option.
    cf_answer: y_cf, the ground truth on the counterfactual video, when known.
  """

  route: str
  answer: str
  num_options: int
  cf_answer: str | None = None

  def __post_init__(self):
    object.__setattr__(self, "route", crr_lib.normalize_route(self.route))
    letters = option_letters(self.num_options)
    if self.answer not in letters[:-1]:
      raise ValueError(
        f"answer {self.answer!r} must be one of {letters[:-1]} (not the null option)"
      )
    if self.cf_answer is not None and self.cf_answer not in letters:
      raise ValueError(f"cf_answer {self.cf_answer!r} must be one of {letters}")

  @property
  def cf_target(self) -> str | None:
    """The counterfactual branch's accuracy target, or None for no accuracy term.

    Static: y (the answer must not change). Otherwise y_cf when the data gives one,
    else no accuracy term on that branch (ours).
    """
    return self.answer if self.route == "static" else self.cf_answer


@dataclasses.dataclass(frozen=True)
class PromptRewards:
  """Rewards of one prompt; every array is float32 [branches, G] unless noted.

  Attributes:
    answers: extracted letters per branch (None = invalid answer).
    accuracy, format, crr, temporal_bonus, reverse_reward, length_bonus: the terms,
      unweighted, 0 where a term does not apply.
    total: the weighted sum (module docstring).
    accuracy_applies: bool [branches], False where a branch has no accuracy target.
    shuffled_accuracy: T-GRPO's p~ (mean accuracy of the shuffled group), or None.
    temporal_condition: whether T-GRPO's p >= mu * p~ held, or None.
  """

  answers: tuple[tuple[str | None, ...], ...]
  accuracy: np.ndarray
  format: np.ndarray
  crr: np.ndarray
  temporal_bonus: np.ndarray
  reverse_reward: np.ndarray
  length_bonus: np.ndarray
  total: np.ndarray
  accuracy_applies: np.ndarray
  shuffled_accuracy: float | None = None
  temporal_condition: bool | None = None

  def terms(self) -> dict[str, np.ndarray]:
    """Every term and the total by name, for logging."""
    return {name: getattr(self, name) for name in (*TERMS, "total")}


def option_letters(num_options: int) -> str:
  """The valid letters 'A'.. for `num_options` options (null option included)."""
  if not 2 <= num_options <= 26:
    raise ValueError(f"num_options must be in [2, 26], got {num_options}")
  return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:num_options]


def extract_answer(text: str) -> str | None:
  """The stripped content of the first <answer>...</answer> span, or None."""
  match = _ANSWER_RE.search(text)
  return match.group(1).strip() if match else None


def extract_letter(text: str, num_options: int) -> str | None:
  """The extracted answer if it names an option (null option included), else None."""
  answer = extract_answer(text)
  # Exactly one letter: a substring test would accept "" and "AB".
  valid = answer is not None and len(answer) == 1 and answer in option_letters(num_options)
  return answer if valid else None


def format_reward(text: str) -> float:
  """1 if the whole completion is <think>...</think> <answer>...</answer>, else 0."""
  return float(_FORMAT_RE.fullmatch(text) is not None)


def accuracy_reward(answers: Sequence[str | None], target: str | None) -> np.ndarray:
  """[a_i == target] per rollout; all zeros when the branch has no target."""
  return np.array([float(target is not None and a == target) for a in answers], np.float32)


def temporal_bonus(
  ordered_acc: np.ndarray, shuffled_acc: np.ndarray, mu: float
) -> tuple[np.ndarray, float, bool]:
  """T-GRPO: 1 for each correct ordered rollout if p >= mu * p~, else 0.

  Returns:
    (bonus [G], p~, whether the condition held).
  """
  if len(shuffled_acc) == 0:
    raise ValueError("temporal_bonus needs at least one shuffled rollout")
  p, p_shuffled = float(np.mean(ordered_acc)), float(np.mean(shuffled_acc))
  held = p >= mu * p_shuffled
  return (ordered_acc > 0.1).astype(np.float32) * float(held), p_shuffled, held


def reverse_reward(
  answers: Sequence[str | None], reversed_answer: str | None, route: str
) -> np.ndarray:
  """ArrowRL's reverse reward in MCQ form (ours).

  [a_i != b_rev] on Temporal and Spatiotemporal routes, [a_i == b_rev] otherwise,
  where b_rev is the greedy answer on the reversed video; invalid answers give 0.
  """
  dynamic = crr_lib.normalize_route(route) in ("temporal", "spatiotemporal")
  return np.array([crr_lib.relation(a, reversed_answer, dynamic) for a in answers], np.float32)


def length_bonus(acc: np.ndarray, lengths: Sequence[int], lo: int, hi: int) -> np.ndarray:
  """Video-R1's length control: if more than one rollout of the group is correct,
  each correct one whose length (tokens) lies in [lo, hi] gets 1."""
  lengths = np.asarray(lengths)
  if lengths.shape != acc.shape:
    raise ValueError(f"lengths shape {lengths.shape} != group shape {acc.shape}")
  correct = acc > 0.1
  if correct.sum() <= 1:
    return np.zeros_like(acc)
  return (correct & (lengths >= lo) & (lengths <= hi)).astype(np.float32)


def score_prompt(
  orig_completions: Sequence[str],
  cf_completions: Sequence[str] | None,
  info: ExampleInfo,
  cfg: RewardConfig,
  *,
  terms: Collection[str],
  cf_greedy: str | None = None,
  shuffled_completions: Sequence[str] | None = None,
  lengths: Sequence[int] | None = None,
  cf_lengths: Sequence[int] | None = None,
) -> PromptRewards:
  """Scores every rollout of one prompt.

  Args:
    orig_completions: G decoded completions on the original video.
    cf_completions: G completions on the counterfactual video T(V) (CRPO), or None.
    info: route, ground truth(s) and option count of the example.
    cfg: weights and variants.
    terms: reward terms that apply (a subset of TERMS); each one's inputs must be given.
    cf_greedy: ArrowRL's greedy completion on the reversed video (no gradient).
    shuffled_completions: T-GRPO's G/2 completions on shuffled frames (no gradient).
    lengths: token lengths of the original completions (length bonus).
    cf_lengths: token lengths of the counterfactual completions (length bonus).

  Returns:
    PromptRewards with arrays [branches, G], branches = 2 if cf_completions else 1.
  """
  unknown = set(terms) - set(TERMS)
  if unknown:
    raise ValueError(f"unknown reward terms {sorted(unknown)}; expected a subset of {TERMS}")
  if "crr" in terms and cf_completions is None:
    raise ValueError("the crr term needs cf_completions")
  if "temporal_bonus" in terms and shuffled_completions is None:
    raise ValueError("the temporal_bonus term needs shuffled_completions")
  if "reverse_reward" in terms and cf_greedy is None:
    raise ValueError("the reverse_reward term needs cf_greedy")
  if "length_bonus" in terms and (
    lengths is None or (cf_completions is not None and cf_lengths is None)
  ):
    raise ValueError("the length_bonus term needs lengths for every branch")

  branches = [list(orig_completions)]
  targets = [info.answer]
  if cf_completions is not None:
    if len(cf_completions) != len(orig_completions):
      raise ValueError(f"branches differ in G: {len(orig_completions)} vs {len(cf_completions)}")
    branches.append(list(cf_completions))
    targets.append(info.cf_target)
  shape = (len(branches), len(orig_completions))
  answers = [[extract_letter(c, info.num_options) for c in comps] for comps in branches]
  zeros = lambda: np.zeros(shape, np.float32)
  acc, fmt, crr, tb, rev, lb = zeros(), zeros(), zeros(), zeros(), zeros(), zeros()
  applies = np.array([t is not None for t in targets])

  if "accuracy" in terms:
    for k, (ans, target) in enumerate(zip(answers, targets)):
      acc[k] = accuracy_reward(ans, target)
  else:
    applies[:] = False
  if "format" in terms:
    fmt[:] = [[format_reward(c) for c in comps] for comps in branches]
  if "crr" in terms:
    crr[0], crr[1] = crr_lib.crr(answers[0], answers[1], info.route, cfg.crr_variant)
    if cfg.crr_gate_on_correct:
      # Gate only where "correct" is defined; a branch without a target keeps its CRR.
      crr = np.where(applies[:, None], crr * acc, crr)
  p_shuffled = held = None
  if "temporal_bonus" in terms:
    shuffled = [extract_letter(c, info.num_options) for c in shuffled_completions]
    tb[0], p_shuffled, held = temporal_bonus(
      acc[0], accuracy_reward(shuffled, info.answer), cfg.temporal_mu
    )
  if "reverse_reward" in terms:
    rev[0] = reverse_reward(answers[0], extract_letter(cf_greedy, info.num_options), info.route)
  if "length_bonus" in terms:
    for k, lens in enumerate([lengths, cf_lengths][: len(branches)]):
      lb[k] = length_bonus(acc[k], lens, cfg.length_min, cfg.length_max)

  total = (
    cfg.accuracy_weight * acc
    + cfg.format_weight * fmt
    + cfg.crr_weight * crr
    + cfg.temporal_weight * tb
    + cfg.reverse_weight * rev
    + cfg.length_weight * lb
  ).astype(np.float32)
  return PromptRewards(
    answers=tuple(tuple(a) for a in answers),
    accuracy=acc,
    format=fmt,
    crr=crr.astype(np.float32),
    temporal_bonus=tb,
    reverse_reward=rev,
    length_bonus=lb,
    total=total,
    accuracy_applies=applies,
    shuffled_accuracy=p_shuffled,
    temporal_condition=held,
  )

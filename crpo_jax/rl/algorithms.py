"""One switch for CRPO and its baselines (METHOD.md section 7).

An `AlgorithmSpec` tells the learner, for one prompt, which rollout groups to sample
(on which video, how many, greedy or not), which of them get policy gradients, which
reward terms apply and how advantages are grouped. The learner runs one code path:

  for branch in spec.branches: sample branch.num_rollouts(G) on branch.video(...)
  rewards = rewards.score_prompt(..., terms=spec.reward_terms)
  A = advantages.compute_advantages(R[:, spec.gradient_branch_indices], mode=...)

Video sources: "original" (V), "route" (the route's counterfactual transform T(V),
data/transforms.py), "shuffle" (T-GRPO's random frame permutation) and "reverse"
(ArrowRL's temporal reversal, whatever the route).
"""

from __future__ import annotations

import dataclasses

from crpo_jax.rl import advantages as adv_lib
from crpo_jax.rl import rewards as rewards_lib

VIDEO_SOURCES = ("original", "route", "shuffle", "reverse")
NAMES = ("crpo", "grpo", "tgrpo", "arrowrl")


@dataclasses.dataclass(frozen=True)
class BranchSpec:
  """One group of rollouts per prompt.

  Attributes:
    name: "original", "counterfactual", "shuffled" or "reversed"; the keyword the
      learner passes to `score_prompt` follows from it.
    video: one of VIDEO_SOURCES.
    size: rollouts as a fraction of G ("G" = 1.0, T-GRPO's G/2 = 0.5) when
      `fixed_size` is None.
    fixed_size: an absolute number of rollouts (ArrowRL's single greedy rollout).
    greedy: sample greedily instead of at the training temperature.
    gradient: whether the branch's rollouts enter the policy loss.
  """

  name: str
  video: str
  size: float = 1.0
  fixed_size: int | None = None
  greedy: bool = False
  gradient: bool = True

  def __post_init__(self):
    if self.video not in VIDEO_SOURCES:
      raise ValueError(f"video {self.video!r} not in {VIDEO_SOURCES}")

  def num_rollouts(self, g: int) -> int:
    """Rollouts to sample for a group size G (at least one)."""
    return self.fixed_size if self.fixed_size is not None else max(1, int(g * self.size))


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
  """Which branches, gradients, rewards and advantage grouping an algorithm uses.

  Attributes:
    name: one of NAMES.
    branches: rollout groups; gradient branches come first, original at index 0,
      in the order of `PromptRewards`' branch axis.
    reward_terms: the `rewards.TERMS` that apply.
    advantage_mode: default grouping for `advantages.compute_advantages`.
  """

  name: str
  branches: tuple[BranchSpec, ...]
  reward_terms: tuple[str, ...]
  advantage_mode: str = "group"

  def __post_init__(self):
    if self.branches[0].name != "original" or not self.branches[0].gradient:
      raise ValueError("branch 0 must be the original branch, with gradients")
    grads = [b.gradient for b in self.branches]
    if grads != sorted(grads, reverse=True):
      raise ValueError("gradient branches must precede no-gradient branches")
    unknown = set(self.reward_terms) - set(rewards_lib.TERMS)
    if unknown:
      raise ValueError(f"unknown reward terms {sorted(unknown)}")
    if self.advantage_mode not in adv_lib.MODES:
      raise ValueError(f"advantage_mode {self.advantage_mode!r} not in {adv_lib.MODES}")

  @property
  def gradient_branches(self) -> tuple[BranchSpec, ...]:
    """Branches whose rollouts enter the loss (the Bn axis of the advantages)."""
    return tuple(b for b in self.branches if b.gradient)

  @property
  def num_gradient_branches(self) -> int:
    return len(self.gradient_branches)

  def branch(self, name: str) -> BranchSpec | None:
    """The branch called `name`, or None if the algorithm does not sample it."""
    return next((b for b in self.branches if b.name == name), None)


_ORIGINAL = BranchSpec("original", "original")
_BASE_TERMS = ("accuracy", "format")


def get_algorithm(
  name: str, *, length_bonus: bool = False, advantage_mode: str | None = None
) -> AlgorithmSpec:
  """The spec of "crpo", "grpo", "tgrpo" or "arrowrl".

  Args:
    name: algorithm name.
    length_bonus: add Video-R1's length bonus to the reward terms.
    advantage_mode: override the default grouping ("group" for all four).
  """
  if name == "crpo":
    branches = (_ORIGINAL, BranchSpec("counterfactual", "route"))
    terms = (*_BASE_TERMS, "crr")
  elif name == "grpo":
    branches, terms = (_ORIGINAL,), _BASE_TERMS
  elif name == "tgrpo":
    # Video-R1: G/2 rollouts on shuffled frames, scored for accuracy only, no gradient.
    branches = (_ORIGINAL, BranchSpec("shuffled", "shuffle", size=0.5, gradient=False))
    terms = (*_BASE_TERMS, "temporal_bonus")
  elif name == "arrowrl":
    # ArrowGEV-style: one greedy rollout on the reversed video, shared by all G.
    branches = (
      _ORIGINAL,
      BranchSpec("reversed", "reverse", fixed_size=1, greedy=True, gradient=False),
    )
    terms = (*_BASE_TERMS, "reverse_reward")
  else:
    raise ValueError(f"unknown algorithm {name!r}; expected one of {NAMES}")
  if length_bonus:
    terms = (*terms, "length_bonus")
  return AlgorithmSpec(name, branches, terms, advantage_mode or "group")

"""The algorithm switch: branches, gradients and reward terms of each algorithm."""

import pathlib

import pytest

from crpo_jax.rl import algorithms, rewards


def test_crpo():
  spec = algorithms.get_algorithm("crpo")
  assert [b.name for b in spec.branches] == ["original", "counterfactual"]
  assert [b.video for b in spec.branches] == ["original", "route"]
  assert spec.num_gradient_branches == 2
  assert [b.num_rollouts(8) for b in spec.branches] == [8, 8]
  assert spec.reward_terms == ("accuracy", "format", "crr")


def test_grpo():
  spec = algorithms.get_algorithm("grpo")
  assert len(spec.branches) == 1 and spec.num_gradient_branches == 1
  assert spec.reward_terms == ("accuracy", "format")


def test_tgrpo_shuffled_half_group_without_gradient():
  spec = algorithms.get_algorithm("tgrpo")
  shuffled = spec.branch("shuffled")
  assert shuffled.video == "shuffle" and not shuffled.gradient and not shuffled.greedy
  assert shuffled.num_rollouts(8) == 4 and shuffled.num_rollouts(1) == 1
  assert spec.num_gradient_branches == 1
  assert "temporal_bonus" in spec.reward_terms


def test_arrowrl_one_greedy_reversed_rollout():
  spec = algorithms.get_algorithm("arrowrl")
  rev = spec.branch("reversed")
  assert rev.video == "reverse" and rev.greedy and not rev.gradient
  assert rev.num_rollouts(8) == 1
  assert "reverse_reward" in spec.reward_terms and "crr" not in spec.reward_terms


def test_options_and_errors():
  spec = algorithms.get_algorithm("grpo", length_bonus=True, advantage_mode="none")
  assert spec.reward_terms[-1] == "length_bonus" and spec.advantage_mode == "none"
  assert spec.branch("counterfactual") is None
  with pytest.raises(ValueError):
    algorithms.get_algorithm("ppo")
  with pytest.raises(ValueError):
    algorithms.AlgorithmSpec("x", (algorithms.BranchSpec("original", "original"),), ("bogus",))
  with pytest.raises(ValueError):
    algorithms.BranchSpec("original", "mirror")


@pytest.mark.parametrize("name", algorithms.NAMES)
def test_every_spec_drives_score_prompt(name):
  """The learner's one code path: each spec's branches feed score_prompt."""
  spec = algorithms.get_algorithm(name, length_bonus=True)
  g = 4
  done = "<think>t</think><answer>{}</answer>"
  sampled = {
    b.name: [done.format("AB"[i % 2]) for i in range(b.num_rollouts(g))] for b in spec.branches
  }
  out = rewards.score_prompt(
    sampled["original"],
    sampled.get("counterfactual"),
    rewards.ExampleInfo("Temporal", "A", 5),
    rewards.RewardConfig(),
    terms=spec.reward_terms,
    shuffled_completions=sampled.get("shuffled"),
    cf_greedy=sampled["reversed"][0] if "reversed" in sampled else None,
    lengths=[400] * g,
    cf_lengths=[400] * g if "counterfactual" in sampled else None,
  )
  assert out.total.shape == (spec.num_gradient_branches, g)


def test_rl_core_imports_without_heavy_dependencies():
  """crpo_jax.rl's maths must run on a bare accelerator image (jax, flax, optax, numpy)."""
  import subprocess
  import sys

  code = (
    "import sys\n"
    "from crpo_jax.rl import advantages, algorithms, crr, kl, logprobs, losses, rewards\n"
    "heavy = {'grain', 'av', 'ml_collections', 'clu', 'torch', 'transformers', 'tensorflow'}\n"
    "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
  )
  root = pathlib.Path(__file__).resolve().parents[2]
  out = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
  )
  assert out.stdout.strip() == "[]", out.stdout + out.stderr

"""Every experiment config loads, with overrides, and builds what the trainer reads."""

import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from configs import common, demo, qwen3vl_2b, qwen3vl_4b, qwen3vl_8b
from crpo_jax import distributed
from crpo_jax.model.config import get_preset
from crpo_jax.rl import algorithms
from crpo_jax.train import learner as learner_lib

SIZES = {"qwen3vl_2b": qwen3vl_2b, "qwen3vl_4b": qwen3vl_4b, "qwen3vl_8b": qwen3vl_8b}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_size_configs_paper_defaults(name):
  c = SIZES[name].get_config()
  assert c.model.preset == name
  get_preset(c.model.preset)
  assert c.mesh.data * c.mesh.fsdp * c.mesh.tensor == 8
  assert (c.sampling.num_generations, c.optim.lr, c.loss.beta) == (8, 1e-6, 0.04)
  assert (c.data.num_frames, c.data.fps, c.sampling.max_new_tokens) == (16, 2.0, 768)
  assert c.optim.schedule == "cosine"
  learner_lib.loss_config(c)
  learner_lib.reward_config(c)
  local = SIZES[name].get_config("runlocal")
  assert local.model.preset == "tiny" and local.train_steps == 2
  assert (local.mesh.data, local.mesh.fsdp, local.mesh.tensor) == (1, -1, 1)


@pytest.mark.parametrize("arg", [None, "test"])
def test_demo_config(arg):
  c = demo.get_config(arg)
  want = ("tiny", False) if arg == "test" else ("tiny_compact", True)
  assert (c.model.preset, c.data.compact_vocab) == want
  assert c.sft.steps > 0 and c.data.synthetic.num_train > 0 and c.sft.branches == "orig"
  with pytest.raises(ValueError):
    demo.get_config("nope")
  with pytest.raises(ValueError):
    common.apply_arg(common.get_base_config(), "nope")


@pytest.mark.parametrize("algo", algorithms.NAMES)
def test_overrides_through_config_flags(algo):
  argv = ["prog", "--config=configs/qwen3vl_4b.py:runlocal", f"--config.algo={algo}",
          "--config.loss.beta=0", "--config.sampling.num_generations=4"]  # fmt: skip
  fv = flags.FlagValues()
  # config_flags finds the --config.* overrides in argv (sys.argv in main.py).
  config_flags.DEFINE_config_file("config", None, flag_values=fv, sys_argv=argv)
  fv(argv)
  c = fv.config
  assert (c.algo, c.loss.beta, c.sampling.num_generations) == (algo, 0.0, 4)
  algorithms.get_algorithm(c.algo)
  assert learner_lib.loss_config(c).beta == 0


def test_multiprocess_detection():
  detect = lambda env, tpu_vm=False: distributed.multiprocess_env(env, tpu_vm=tpu_vm)
  assert detect({}) is None
  assert detect({"TPU_WORKER_HOSTNAMES": "w0"}) is None
  assert detect({"TPU_WORKER_HOSTNAMES": "w0,w1"}) == "tpu"
  # GCE TPU VMs set no variable: TPU chips on the PCI bus alone mean "initialise".
  assert detect({}, tpu_vm=True) == "tpu"
  assert detect({"SLURM_NTASKS": "16", "SLURM_STEP_NODELIST": "n[1-2]"}) == "slurm"
  assert detect({"SLURM_NTASKS": "1", "SLURM_STEP_NODELIST": "n1"}) is None
  assert detect({"JAX_COORDINATOR_ADDRESS": "h:1234"}) == "explicit"
  assert distributed.on_cloud_tpu_vm() is False  # this machine has no TPU chips


def test_slurm_one_task_per_node_drives_every_gpu():
  ids = distributed.slurm_local_device_ids
  node = {"SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS": "2"}
  assert ids({**node, "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}) == list(range(8))
  assert ids({**node, "CUDA_VISIBLE_DEVICES": "4,5"}) == [0, 1]  # renumbered from 0
  assert ids({**node, "SLURM_GPUS_ON_NODE": "4"}) == [0, 1, 2, 3]
  # One task per GPU (16 tasks on 2 nodes): JAX's own SLURM_LOCALID choice stays.
  assert (
    ids({"SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS": "16", "CUDA_VISIBLE_DEVICES": "0"}) is None
  )
  assert ids({**node, "CUDA_VISIBLE_DEVICES": "0"}) is None  # one GPU: nothing to add
  assert ids({}) is None


def test_main_help_lists_flags():
  out = subprocess.run(
    [sys.executable, "-m", "crpo_jax.main", "--helpfull"],
    check=False,
    capture_output=True,
    text=True,
  )
  assert "--workdir" in out.stdout and "--config" in out.stdout

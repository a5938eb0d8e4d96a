"""Shared builder for every crpo_jax experiment config.

`get_base_config()` returns a ConfigDict with every field the trainer reads, set to
the paper-spirit defaults (METHOD.md; reference/video_rl.md section 6.4). Experiment
files change only what differs. Choices the paper does not fix are ours.
"""

from __future__ import annotations

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  """Defaults for a Qwen3-VL CRPO run on 8 accelerators."""
  c = ml_collections.ConfigDict()
  c.algo = "crpo"  # crpo | grpo | tgrpo | arrowrl (rl/algorithms.py)
  c.seed = 0  # seeds parameter init (random init), sampling keys and data order

  c.model = ml_collections.ConfigDict()
  c.model.preset = "qwen3vl_2b"  # architecture preset (model/config.py) when not from HF
  c.model.init_from = ""  # local HF checkpoint directory; "" = random init (demo/tests)
  c.model.dtype = "bfloat16"  # compute dtype
  c.model.param_dtype = "float32"  # parameter storage dtype (optimizer moments follow)
  c.model.remat = "none"  # none | full | dots: recompute layers in the backward (memory)
  # masked | segments: the vision tower's attention. "segments" attends within each
  # temporal group only (bounds from data.max_pixels and data.num_frames), linear in
  # the videos of a call; "masked" scores every patch row of a call against every
  # other and masks, quadratic (the real-scale configs need "segments" to fit).
  c.model.vision_attention = "masked"

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = 1  # data-parallel replicas
  c.mesh.fsdp = -1  # parameter/optimizer sharding; -1 takes the remaining devices
  c.mesh.tensor = 1  # tensor parallelism over heads / MLP / vocab

  c.data = ml_collections.ConfigDict()
  c.data.train = ""  # training records (JSONL / Video-R1 JSON, data/records.py)
  c.data.eval = ""  # held-out paired records for periodic Acc / P-Acc / sensitivity
  c.data.video_root = ""  # root for relative video paths ("" = the records' directory)
  c.data.tokenizer = ""  # tokenizer dir; "" = the one in model.init_from
  # Built word tokenizer only: special tokens at ids 1..26 (needs a *_compact preset).
  c.data.compact_vocab = False
  c.data.num_frames = 16  # frames per clip (Video-R1's FPS_MAX_FRAMES)
  c.data.fps = 2.0  # sampling rate before the frame cap
  c.data.max_pixels = 128 * 32 * 32  # pixels per frame (~128 merged tokens; factor 32)
  c.data.shuffle = True  # shuffle training records each epoch (seeded)
  c.data.num_workers = 0  # grain worker processes (0 = in-process, deterministic)
  # Records skipped in a row without a batch before the run stops (bad data / video_root).
  c.data.max_consecutive_skips = 1000
  c.data.synthetic = ml_collections.ConfigDict()
  c.data.synthetic.num_train = 0  # >0: generate a synthetic world into workdir/data
  c.data.synthetic.num_eval = 0  # held-out synthetic examples (paired)
  c.data.synthetic.shortcut = 0.0  # train-only static-cue/answer correlation in [0, 1]
  c.data.synthetic.families = "all"  # comma-separated synthetic families, or "all"
  c.data.synthetic.shuffle_options = True  # False: each family keeps one option order

  c.batch = ml_collections.ConfigDict()
  c.batch.prompts = 8  # prompts per RL step, all hosts together (1 per device, Video-R1)
  c.batch.micro_rollouts = 8  # rollouts per gradient micro-batch (accumulated exactly)
  c.batch.require_divisible = True  # batch sizes must divide the mesh's batch shards

  c.sampling = ml_collections.ConfigDict()
  c.sampling.num_generations = 8  # G rollouts per branch per prompt
  c.sampling.max_new_tokens = 768  # completion budget (Video-R1)
  c.sampling.temperature = 1.0  # training rollouts
  c.sampling.top_p = 1.0  # nucleus mass (1 = off)
  c.sampling.top_k = 0  # 0 = off
  c.sampling.cache_dtype = "bfloat16"  # KV cache dtype
  # Layout of the rollout's bf16 copy of the policy: "fsdp" as the master weights
  # (least memory; every decode step gathers its layers' weights over FSDP) or
  # "decode" (gathered over FSDP once per step, split over tensor only: no weight
  # gathers while decoding, but the whole bf16 model / tensor on every chip).
  c.sampling.rollout_layout = "fsdp"

  c.reward = ml_collections.ConfigDict()  # mirrors rl/rewards.RewardConfig
  c.reward.accuracy_weight = 1.0  # accuracy term
  c.reward.format_weight = 1.0  # <think>...</think><answer>...</answer> term
  c.reward.crr_weight = 0.5  # Counterfactual Relation Reward (ours, ArrowGEV's alpha)
  c.reward.crr_variant = "expected"  # expected | majority | paired
  c.reward.crr_gate_on_correct = False  # CRR only for correct rollouts
  c.reward.temporal_weight = 0.3  # T-GRPO alpha
  c.reward.temporal_mu = 0.8  # T-GRPO condition p >= mu * p_shuffled
  c.reward.reverse_weight = 0.5  # ArrowRL reverse reward
  c.reward.length_weight = 0.2  # Video-R1 length bonus (when length_bonus)
  c.reward.length_min = 320  # length-bonus window, tokens
  c.reward.length_max = 512  # length-bonus window, tokens
  c.reward.length_bonus = False  # add the length bonus to the algorithm's terms

  c.advantages = ml_collections.ConfigDict()
  c.advantages.mode = "group"  # group (per branch) | joint (2G) | batch_std | none
  c.advantages.eps = 1e-4  # std epsilon (Video-R1 / TRL)

  c.loss = ml_collections.ConfigDict()  # mirrors rl/losses.LossConfig
  c.loss.ratio_level = "token"  # token | sequence (GSPO)
  c.loss.eps_low = 0.2  # clip 1 - eps_low
  c.loss.eps_high = 0.2  # clip 1 + eps_high
  c.loss.dual_clip_c = ml_collections.config_dict.placeholder(float)  # veRL dual clip
  c.loss.delta = ml_collections.config_dict.placeholder(float)  # two-sided ratio cap
  c.loss.beta = 0.04  # KL weight; 0 skips the reference model entirely
  c.loss.kl_estimator = "k3"  # k1 | k2 | k3 | k3+
  c.loss.kl_log_ratio_clamp = 20.0  # clamp on log(pi_ref / pi) inside the estimator
  c.loss.kl_value_clamp = 10.0  # clamp on the estimator's value
  c.loss.aggregation = "seq-mean-token-mean"  # token-mean | seq-mean-token-{mean,sum,sum-norm}
  c.loss.log_ratio_clamp = 20.0  # clamp on log w before exp
  c.loss.logprob_chunk = 128  # tokens per vocab-projection chunk (memory)

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-6  # peak learning rate (Video-R1)
  c.optim.warmup_steps = 0  # linear warmup updates
  c.optim.schedule = "cosine"  # cosine | constant
  c.optim.final_lr_fraction = 0.0  # cosine ends at lr * this
  c.optim.weight_decay = 0.01  # AdamW decoupled weight decay
  c.optim.b1 = 0.9  # Adam beta1
  c.optim.b2 = 0.999  # Adam beta2
  c.optim.eps = 1e-8  # Adam epsilon
  c.optim.max_grad_norm = 5.0  # global-norm clip (Video-R1 max_grad_norm)

  c.sft = ml_collections.ConfigDict()
  c.sft.steps = 0  # supervised warm-start steps before RL (0 = none)
  c.sft.lr = 1e-5  # peak learning rate of the warm start
  c.sft.warmup_steps = 0  # warmup of the warm start
  c.sft.think = "Let me watch the video."  # reasoning text in the SFT target (ours)
  # Branches the warm start trains on: "orig" (default, every algorithm: a GRPO baseline
  # must not inherit counterfactual supervision) or "orig,cf" (also the cf video on its
  # own target: y for Static routes, y_cf where the data gives one).
  c.sft.branches = "orig"

  c.train_steps = 1200  # RL steps (Video-R1 trains ~1.2k)
  c.log_every = 1  # steps between metric writes
  c.log_rollouts = 4  # prompts whose rollouts each logged RL step keeps in WORKDIR/rollouts/
  c.eval_every = 100  # RL steps between held-out evaluations (0 = only start/end)
  c.eval_max_examples = 256  # held-out examples per evaluation
  c.eval_max_new_tokens = 768  # greedy completion budget in evaluation
  c.ckpt_every = 100  # steps between checkpoints
  # Also save once this many seconds passed since the last save (0: off), so a hard
  # stop (a Spot TPU gets ~30 s of notice, too little to write 8B of state) loses at
  # most this much work. The save is asynchronous; every host takes the same decision.
  c.ckpt_every_s = 1800.0
  c.keep_ckpts = 3  # checkpoints kept on disk
  c.async_ckpt = True  # save in the background while training continues
  c.export_at_end = True  # write an HF directory into workdir/hf at the end
  c.max_nonfinite_steps = 3  # skipped (NaN/Inf) updates in a row before the run stops
  c.preempt_grace_s = 60.0  # after SIGTERM/SIGINT: exit unsaved if no step ends in this time
  c.allow_config_change = False  # resume even if the config changes what was trained
  return c


def apply_arg(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Applies the `:arg` suffix of `--config=configs/x.py:arg` shared by all sizes.

  "runlocal" shrinks any config to a CPU smoke run of the same code path. It trains
  on the synthetic world unless --config.data.train (and --config.data.eval) name
  the user's files, which are then used as given (train/setup.py:prepare_data).
  """
  if not arg:
    return config
  if arg != "runlocal":
    raise ValueError(f"unknown config arg {arg!r}; expected '' or 'runlocal'")
  config.model.preset = "tiny"
  config.model.init_from = ""
  config.model.dtype = "float32"
  config.mesh.data = 1
  config.mesh.fsdp = -1  # whatever devices there are (1 CPU, or 8 fake ones in tests)
  config.mesh.tensor = 1
  config.batch.prompts = 2
  config.batch.micro_rollouts = 4
  config.batch.require_divisible = False  # 2 prompts on 8 fake test devices replicate
  config.sampling.num_generations = 2
  config.sampling.max_new_tokens = 8
  config.sampling.cache_dtype = "float32"
  config.data.num_frames = 4
  config.data.max_pixels = 64 * 64
  config.data.synthetic.num_train = 16
  config.data.synthetic.num_eval = 8
  config.train_steps = 2
  config.eval_every = 0
  config.eval_max_new_tokens = 8
  config.ckpt_every = 1
  return config

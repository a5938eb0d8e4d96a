"""crpo_jax.eval: benchmark evaluation (`python -m crpo_jax.evaluate`, configs/eval.py).

items.py         EvalItem / Prompt, the benchmark-neutral item
loaders.py       released formats -> items (DyBench JSONL, TimeBlind, TempCompass,
                 MVBench, Video-MME); mvbench_tasks.py is MVBench's task table
prompts.py       each benchmark's official prompt (ours for DyBench)
extraction.py    each benchmark's official answer extraction
metrics.py       Acc, P-Acc, sensitivity, Q/V/I-Acc, per-aspect/task/duration
benchmarks.py    the registry tying the above together: get_benchmark(name)
baselines.py     constant-answer policies and the blind policy's blank video
predictions.py   per-item JSONL: append, resume, re-score
report.py        results.json and the markdown table
model_policy.py  greedy generation through crpo_jax's sampler (frames.py: frame folders)
runner.py        evaluate(cfg): resume, generate, score, baselines, report
"""

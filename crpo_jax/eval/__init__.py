"""crpo_jax.eval: benchmark evaluation (`python -m crpo_jax.evaluate`, configs/eval.py).

items.py         EvalItem / Prompt, the benchmark-neutral item
loaders.py       released formats -> items (DyBench JSONL, TimeBlind, TempCompass,
                 MVBench, Video-MME); mvbench_tasks.py is MVBench's task table
prompts.py       each benchmark's official prompt (ours for DyBench)
extraction.py    each benchmark's official answer rules, with the commits followed
metrics.py       the official aggregates (Acc, Q/V/I-Acc, per task/aspect/duration),
                 DyBench's P-Acc and sensitivity (ours); ours/... rows are ours
benchmarks.py    the registry tying the above together: get_benchmark(name), with
                 the official judge, `strict`/`think` variants and frame rules
frames.py        VideoChat2's frame placement, frame-folder videos
baselines.py     constant-answer policies and the blind policy's blank video
predictions.py   per-item JSONL: append, resume, re-score
report.py        results.json and the markdown table
model_policy.py  greedy generation through crpo_jax's sampler
runner.py        evaluate(cfg): resume, generate, score, baselines, report
"""

"""The paper's benchmarks: metadata readers, scores and reports (python -m mats_jax.evaluate).

benchmarks.py  each benchmark's metadata layout, task, tag and clip lookup
scoring.py     classification, captioning (coco-caption) and QA scores
report.py      report.json, report.md, predictions.jsonl, confusion matrix
"""

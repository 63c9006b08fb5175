"""Training MATS: the jitted step, the optimiser, checkpoints, metrics and the workdir.

steps.py        TrainState, Batch and the jitted train and eval steps with explicit shardings
optim.py        the paper's AdamW and learning-rate schedule
checkpoints.py  orbax checkpoints of the train state and the data position
metrics.py      TensorBoard, metrics.jsonl, progress bar, profiler traces
workdir.py      a run's folder: config.json, checkpoints, memory bank; restoring weights
interchange.py  a workdir to and from the original MATS .pth, and to a PEFT adapter
"""

"""Process-level plumbing that every other layer may use and that uses none of them.

distributed.py  joining a multi-process run; process-0-first and barrier helpers
sharding.py     logical axis names -> mesh axes; data-parallel helpers for inference
cli.py          flag parsing, argument types and one-line error reporting for the commands
fileio.py       atomic files and folders; the one error type for unreadable model files
assets.py       files shipped inside installed wheels (the embedded SmolLM2)
tpu.py          TPU chips and slices for ahead-of-time compilation; what XLA says of a program
"""

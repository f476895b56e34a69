"""Imported by the `exp` command before anything loads torch: torch's C++ logs that are the
profiler's internals, not the user's concern, stay off the terminal (issue 19, item 14).

- libkineto (torch.profiler's engine) prints `USDT: ... profiler_start/stop`, `STAGE:` lines and,
  on a machine without a GPU, `ERROR: ... gpuGetDeviceCount failed with code 35`. Its levels run
  0 (verbose) to 5 (USDT); 6 is the first that prints none of them (measured, torch 2.x CPU).
- c10 logs `[W ... CPUAllocator.cpp] Memory block of unknown size was allocated before the
  profiling started` under `profile_memory=True`; ERROR keeps c10's errors. c10 reads its level
  once, when torch loads, so this must run first. Python-level torch warnings are untouched.

A user's own setting of either variable wins; workers inherit the environment.
"""

from __future__ import annotations

import os

QUIET = {"KINETO_LOG_LEVEL": "6", "TORCH_CPP_LOG_LEVEL": "ERROR"}

for _key, _value in QUIET.items():
    os.environ.setdefault(_key, _value)

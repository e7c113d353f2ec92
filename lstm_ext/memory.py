"""The CPU buffer cache of the layer operators (csrc/cpu/buffers.h): large buffers' memory kept
for the next call, up to a limit that LSTM_EXT_CPU_CACHE_MB sets (see docs/memory.md)."""

import os

import torch

import lstm_ext.ops  # noqa: F401  (loads the operators)

CACHE_LIMIT_VARIABLE = "LSTM_EXT_CPU_CACHE_MB"

# In the order the operator returns them.
STAT_NAMES = (
    "cached_bytes",
    "cached_blocks",
    "in_use_bytes",
    "limit_bytes",
    "hits",
    "misses",
    "peak_in_use_bytes",
)


def memory_stats():
    """The CPU buffer cache's state, a dict of ints: cached_bytes and cached_blocks (kept for
    reuse, used by no tensor), in_use_bytes (the cache's blocks that tensors use), limit_bytes
    (the most it keeps while shapes change), hits and misses (buffers that took a kept block, new
    memory), peak_in_use_bytes (the most in use at a time since the shapes last changed: a step
    of repeated shapes keeps up to that many bytes, beyond the limit). Buffers under 4 MB come
    from torch's CPU allocator and count in none of these."""
    return dict(zip(STAT_NAMES, torch.ops.lstm_ext.cpu_buffer_cache_stats()))


def empty_cache():
    """Returns the memory the CPU buffer cache keeps to the operating system (as
    torch.cuda.empty_cache does for CUDA's); buffers that tensors still use stay theirs."""
    torch.ops.lstm_ext.empty_cpu_buffer_cache()


def apply_limit_from_environment():
    """Sets the cache's limit from LSTM_EXT_CPU_CACHE_MB (megabytes; 0 turns the cache off),
    where it is set."""
    value = os.environ.get(CACHE_LIMIT_VARIABLE)
    if value is None:
        return
    try:
        megabytes = int(value)
    except ValueError:
        megabytes = -1
    if megabytes < 0:
        raise ValueError(
            f"{CACHE_LIMIT_VARIABLE} must be a whole number of megabytes >= 0 "
            f"(0 turns the cache off), got {value!r}"
        )
    torch.ops.lstm_ext.set_cpu_buffer_cache_limit(megabytes << 20)

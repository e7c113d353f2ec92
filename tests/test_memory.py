"""The CPU buffer cache as users control it (docs/memory.md): lstm_ext.memory_stats(),
lstm_ext.empty_cache(), which returns the memory to the operating system, the limit from
LSTM_EXT_CPU_CACHE_MB, the eviction of the blocks kept longest beyond it, and the blocks of a
repeating step, kept beyond it up to the step's peak in use."""

import os

import pytest
import torch
from fresh_python import run_python

import lstm_ext

MB = 1 << 20


def layer_call(hidden_size):
    """Runs lstm_layer_forward on 1024 rows, saving its activations, whose gates (1024, 4H)
    float32 are the call's only buffer of 4 MB or more: a block of 4 MB at H=256, 6 MB at
    H=384. Returns the outputs (the gates block is in use until they are freed)."""
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=generator) * 0.3

    return torch.ops.lstm_ext.lstm_layer_forward(
        randn(1024, 16),
        torch.full((8,), 128, dtype=torch.int64),
        randn(128, hidden_size),
        randn(128, hidden_size),
        randn(4 * hidden_size, 16),
        randn(4 * hidden_size, hidden_size),
        None,
        None,
        None,
        False,
        True,
    )


@pytest.fixture
def cache_limit():
    """Sets the cache's limit (bytes) for a test on an empty cache; restores it after."""
    previous = lstm_ext.memory_stats()["limit_bytes"]
    lstm_ext.empty_cache()
    yield torch.ops.lstm_ext.set_cpu_buffer_cache_limit
    torch.ops.lstm_ext.set_cpu_buffer_cache_limit(previous)


def stats_change(before):
    after = lstm_ext.memory_stats()
    return {name: after[name] - before[name] for name in ("hits", "misses")}


def test_stats_count_blocks_in_use_kept_hits_and_misses(cache_limit):
    cache_limit(64 * MB)
    before = lstm_ext.memory_stats()
    outputs = layer_call(256)
    assert lstm_ext.memory_stats()["in_use_bytes"] - before["in_use_bytes"] == 4 * MB
    assert stats_change(before) == {"hits": 0, "misses": 1}
    del outputs
    stats = lstm_ext.memory_stats()
    assert (stats["cached_bytes"], stats["cached_blocks"]) == (4 * MB, 1)
    assert stats["in_use_bytes"] == before["in_use_bytes"]
    before = stats
    layer_call(256)
    assert stats_change(before) == {"hits": 1, "misses": 0}
    assert set(lstm_ext.memory_stats()) == {
        "cached_bytes",
        "cached_blocks",
        "in_use_bytes",
        "limit_bytes",
        "hits",
        "misses",
        "peak_in_use_bytes",
    }


def test_the_blocks_kept_longest_go_first_beyond_the_limit(cache_limit):
    cache_limit(6 * MB)
    layer_call(256)  # keeps 4 MB
    layer_call(384)  # keeps 6 MB: 10 MB in all, so the 4 MB block goes
    assert lstm_ext.memory_stats()["cached_bytes"] == 6 * MB
    before = lstm_ext.memory_stats()
    layer_call(384)
    assert stats_change(before) == {"hits": 1, "misses": 0}
    before = lstm_ext.memory_stats()
    layer_call(256)
    assert stats_change(before) == {"hits": 0, "misses": 1}
    assert lstm_ext.memory_stats()["cached_bytes"] == 4 * MB


def test_a_repeating_step_keeps_its_blocks_beyond_the_limit_until_shapes_change(cache_limit):
    """A step that holds 10 MB at once (4 and 6 MB blocks) repeats without a miss under a limit
    of 6 MB; a new shape's miss returns what is beyond the limit and starts the peak anew."""
    cache_limit(6 * MB)
    step = [layer_call(256), layer_call(384)]
    del step
    stats = lstm_ext.memory_stats()
    assert (stats["cached_bytes"], stats["peak_in_use_bytes"]) == (10 * MB, 10 * MB)
    for _ in range(3):
        before = lstm_ext.memory_stats()
        step = [layer_call(256), layer_call(384)]
        del step
        assert stats_change(before) == {"hits": 2, "misses": 0}
    before = lstm_ext.memory_stats()
    layer_call(448)  # gates of 7.3 MB, in an 8 MB block: no kept block fits
    stats = lstm_ext.memory_stats()
    assert stats_change(before) == {"hits": 0, "misses": 1}
    assert (stats["cached_bytes"], stats["peak_in_use_bytes"]) == (8 * MB, 8 * MB)


def resident_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_empty_cache_returns_the_memory_to_the_system(cache_limit):
    cache_limit(256 * MB)
    kept = [layer_call(hidden_size) for hidden_size in (1024, 1536, 2048)]
    for outputs in kept:
        outputs[3].fill_(1.0)  # the gates, 16, 24 and 32 MB, all resident
    del kept, outputs
    assert lstm_ext.memory_stats()["cached_bytes"] >= 72 * MB
    before = resident_bytes()
    lstm_ext.empty_cache()
    assert lstm_ext.memory_stats()["cached_bytes"] == 0
    assert before - resident_bytes() >= 64 * MB


def run_with_cache_limit(value, code):
    return run_python("import lstm_ext\n" + code, LSTM_EXT_CPU_CACHE_MB=value)


def test_a_limit_of_zero_keeps_nothing():
    code = (
        "from test_memory import layer_call\n"
        "layer_call(256)\nlayer_call(256)\nprint(lstm_ext.memory_stats())"
    )
    result = run_with_cache_limit("0", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(
        {
            "cached_bytes": 0,
            "cached_blocks": 0,
            "in_use_bytes": 0,
            "limit_bytes": 0,
            "hits": 0,
            "misses": 2,
            "peak_in_use_bytes": 4 * MB,
        }
    )


def test_the_limit_is_read_in_megabytes_and_checked():
    result = run_with_cache_limit("12", "print(lstm_ext.memory_stats()['limit_bytes'])")
    assert result.stdout.strip() == str(12 * MB), result.stderr
    result = run_with_cache_limit("-1", "")
    assert "LSTM_EXT_CPU_CACHE_MB must be a whole number of megabytes >= 0" in result.stderr

"""Small constant tensors that eager calls take over from the call before instead of making anew:
the zero initial states of hx=None and the batch sizes [B] * T of a padded batch.

Each tensor operation saved counts on the CPU right after a layer has run (its weights have pushed
the interpreter's working set out of the caches): a small layer's forward notices it. Only
tensors that the operators read and no caller ever sees qualify.
"""

import torch


def reused(cache, name, key, make):
    """make(), or in eager code what make() returned for cache[name] in the call before when
    `key` and the inference mode were the same. Traced code makes its own (a trace would record
    the cached tensor as a constant); a tensor made under inference mode cannot be saved for a
    backward outside it."""
    if (
        torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or torch.jit.is_tracing()
    ):
        return make()
    key = (key, torch.is_inference_mode_enabled())
    cached = cache.get(name)
    if cached is not None and cached[0] == key:
        return cached[1]
    value = make()
    cache[name] = (key, value)
    return value


def padded_batch_sizes(cache, steps, batch):
    """batch_sizes (T,) int64 of a padded batch: [B] * T."""
    return reused(
        cache,
        "_padded_batch_sizes_cache",
        (steps, batch),
        lambda: torch.full((steps,), batch, dtype=torch.int64),
    )

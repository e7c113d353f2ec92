"""Batching rules of the layer operators for torch.func.vmap: one operator call per sample of the
vmapped dimension, stacked. The packed layout has no room for a second batch dimension, and
vmap over the sequences' own batch is what the operators already do in one call."""

import torch


def _sample(value, dim, index):
    return value.select(dim, index) if dim is not None else value


def _call_per_sample(op, info, in_dims, args):
    batch_sizes_dim = in_dims[4] if op is torch.ops.lstm_ext.lstm_layer_backward else in_dims[1]
    if batch_sizes_dim is not None:
        raise RuntimeError(
            f"{op}: vmap over batch_sizes is not supported; vmap the sequences "
            "with batch_sizes shared"
        )
    results = [
        op(*(_sample(arg, dim, index) for arg, dim in zip(args, in_dims)))
        for index in range(info.batch_size)
    ]
    return tuple(torch.stack(outputs) for outputs in zip(*results)), (0,) * len(results[0])


@torch.library.register_vmap("lstm_ext::lstm_layer_forward")
def _lstm_layer_forward_vmap(info, in_dims, *args):
    return _call_per_sample(torch.ops.lstm_ext.lstm_layer_forward, info, in_dims, args)


@torch.library.register_vmap("lstm_ext::lstm_layer_backward")
def _lstm_layer_backward_vmap(info, in_dims, *args):
    return _call_per_sample(torch.ops.lstm_ext.lstm_layer_backward, info, in_dims, args)

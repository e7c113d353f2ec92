"""A small sequence tagger on lstm_ext.LSTM, the model that docs/deploy.md ships: a linear front
end, a two-layer bidirectional LSTM with a projection, and a linear head giving one score per
tag and step. Exported, compiled ahead of time, converted to ONNX and trained with DDP in the
tests, the benchmarks and the examples.
"""

from dataclasses import dataclass

import torch
from torch import nn

import lstm_ext


@dataclass(frozen=True)
class TaggerSizes:
    features: int = 10  # input features per step
    embedding: int = 16  # the front end's output, the LSTM's input size
    hidden: int = 24  # LSTM hidden size H
    proj: int = 12  # LSTM projection P (0: none)
    layers: int = 2
    bidirectional: bool = True
    tags: int = 5


class Tagger(nn.Module):
    """input (B, T, features) -> tag scores (B, T, tags)."""

    def __init__(self, sizes: TaggerSizes = TaggerSizes(), lstm_class=lstm_ext.LSTM, dtype=None):
        super().__init__()
        self.front = nn.Linear(sizes.features, sizes.embedding, dtype=dtype)
        self.lstm = lstm_class(
            sizes.embedding,
            sizes.hidden,
            num_layers=sizes.layers,
            bidirectional=sizes.bidirectional,
            proj_size=sizes.proj,
            batch_first=True,
            dtype=dtype,
        )
        directions = 2 if sizes.bidirectional else 1
        self.head = nn.Linear(directions * (sizes.proj or sizes.hidden), sizes.tags, dtype=dtype)

    def forward(self, input):
        output, _ = self.lstm(torch.relu(self.front(input)))
        return self.head(output)


def dynamic_shapes(max_batch: int = 1024, max_steps: int = 100_000):
    """torch.export's dynamic_shapes for Tagger.forward's input: batch and sequence length."""
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    steps = torch.export.Dim("steps", min=1, max=max_steps)
    return ({0: batch, 1: steps},)


def export(model: Tagger, example: torch.Tensor) -> torch.export.ExportedProgram:
    """The inference program of `model` with dynamic batch and sequence length. Traced without
    gradients, so the layers keep no activations for a backward pass."""
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes())


def aoti_package(model: Tagger, path) -> str:
    """Compiles `model`'s inference program (dynamic batch and length) with AOTInductor into a
    package at `path`, for torch._inductor.aoti_load_package or C++'s AOTIModelPackageLoader."""
    program = export(model, torch.randn(2, 3, model.front.in_features))
    return torch._inductor.aoti_compile_and_package(program, package_path=str(path))

"""The problem sizes the benchmark times: one `LstmSize` per configuration, grouped in presets."""

import dataclasses
import itertools


@dataclasses.dataclass(frozen=True)
class LstmSize:
    """One single-layer LSTM problem: batch B, steps T, input I, hidden H, projection P (0: none).

    With `packed`, the B sequences have different lengths (the longest has T steps) and are timed
    both as a PackedSequence and padded to T steps.
    """

    batch: int
    steps: int
    input_size: int
    hidden_size: int
    proj_size: int = 0
    packed: bool = False

    @property
    def recurrent_size(self) -> int:
        """R: the width of h_t, P with a projection, else H."""
        return self.proj_size or self.hidden_size

    @property
    def label(self) -> str:
        text = f"B={self.batch} T={self.steps} I={self.input_size} H={self.hidden_size}"
        if self.proj_size:
            text += f" P={self.proj_size}"
        if self.packed:
            text += " packed"
        return text

    def lengths(self) -> list[int]:
        """The sequence lengths, longest first: all T, or for `packed` evenly spread over
        [T/4, T] (deterministic, so every run times the same work)."""
        if not self.packed or self.batch == 1:
            return [self.steps] * self.batch
        shortest = max(1, self.steps // 4)
        span = self.steps - shortest
        return [self.steps - (span * b) // (self.batch - 1) for b in range(self.batch)]

    def rows(self) -> int:
        """N: the number of (sequence, step) pairs that carry data, T*B unless packed."""
        return sum(self.lengths())

    def forward_flops(self) -> int:
        """Multiply-adds x2 of one forward pass over the rows that carry data: the gate GEMMs
        8*N*H*(I+R) and the projection 2*N*P*H. Padding is not credited as work."""
        rows = self.rows()
        return (
            8 * rows * self.hidden_size * (self.input_size + self.recurrent_size)
            + 2 * rows * self.proj_size * self.hidden_size
        )

    def gemm_shape(self) -> tuple[int, int, int]:
        """(M, K, N) of one GEMM with the forward pass's gate FLOPs: (N rows, I+R) x (I+R, 4H)."""
        return self.rows(), self.input_size + self.recurrent_size, 4 * self.hidden_size


TRAIN_FLOPS_FACTOR = 3  # forward + backward: backward costs about twice the forward GEMMs.


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named list of sizes; `compile_reference` says whether torch.compile of the reference is
    tried (it compiles for seconds to minutes, so only where it is worth it)."""

    description: str
    sizes: tuple[LstmSize, ...]
    min_run_time: float
    compile_reference: bool


def _grid(batches, steps, hiddens, proj_divisors):
    return tuple(
        LstmSize(b, t, h, h, h // d if d else 0)
        for h, d, t, b in itertools.product(hiddens, proj_divisors, steps, batches)
    )


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        "a few seconds on a CPU: two small sizes, with and without projection",
        (LstmSize(16, 32, 128, 128), LstmSize(16, 32, 128, 256, 64)),
        min_run_time=0.1,
        compile_reference=False,
    ),
    "fastrnns": Preset(
        "PyTorch's fastrnns benchmark size: T=100, B=64, I=512, H=512, one layer",
        (LstmSize(64, 100, 512, 512),),
        min_run_time=1.0,
        compile_reference=True,
    ),
    "proj": Preset(
        "projection: T=100, B=64, I=512, H=1024, P=256",
        (LstmSize(64, 100, 512, 1024, 256),),
        min_run_time=1.0,
        compile_reference=True,
    ),
    "small-batch": Preset(
        "latency at small batches: B in 1, 2, 4, 8; T=100; I=H in 256, 512, 1024",
        _grid((1, 2, 4, 8), (100,), (256, 512, 1024), (0,)),
        min_run_time=0.5,
        compile_reference=True,
    ),
    "packed": Preset(
        "variable lengths (T/4..T): PackedSequence against padding, without and with projection",
        (LstmSize(64, 100, 512, 512, packed=True), LstmSize(64, 100, 512, 512, 128, packed=True)),
        min_run_time=0.5,
        compile_reference=False,
    ),
    "full": Preset(
        "a grid: B in 1, 16, 64; T in 25, 100; H = I in 256, 512, 1024; without and with P = H/4",
        _grid((1, 16, 64), (25, 100), (256, 512, 1024), (0, 4)),
        min_run_time=0.5,
        compile_reference=True,
    ),
}

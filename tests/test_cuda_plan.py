"""The persistent CUDA kernel's plan (csrc/cuda/persistent_plan.h), through
torch.ops.lstm_ext.cuda_persistent_plan, which every build registers: these tests need no GPU.
They check the plan on the figures of real devices: which layers fit on chip, which CTA owns
which hidden units and projection columns, and that no CTA needs more than the device gives."""

import dataclasses

import pytest
import torch

import lstm_ext  # noqa: F401  (registers torch.ops.lstm_ext)

FLOAT32 = 4
FITS, SHARED_MEMORY, REGISTERS, NO_MULTIPROCESSORS, EMPTY_LAYER = range(5)
STAGED_ROW_CHOICES = (32, 16, 8, 4)
THREADS = 256


@dataclasses.dataclass(frozen=True)
class Device:
    """What cudaDeviceGetAttribute reports, and the kernel's registers per thread (its launch
    bounds allow up to 255 at 256 threads; the compiled kernel needs fewer)."""

    name: str
    multiprocessors: int
    shared_bytes_per_multiprocessor: int
    shared_bytes_per_block: int  # opt-in maximum
    reserved_shared_bytes_per_block: int = 1024
    registers_per_multiprocessor: int = 65536
    registers_per_thread: int = 128

    def figures(self):
        return (
            self.multiprocessors,
            self.shared_bytes_per_multiprocessor,
            self.shared_bytes_per_block,
            self.reserved_shared_bytes_per_block,
            self.registers_per_multiprocessor,
            self.registers_per_thread,
        )

    @property
    def shared_budget(self):
        return min(
            self.shared_bytes_per_block,
            self.shared_bytes_per_multiprocessor - self.reserved_shared_bytes_per_block,
        )


# H100 SXM and H200 report the same figures: 132 SMs, 228 KB of shared memory per SM, 227 KB
# per block, 64K registers per SM. The A100 (108 SMs, 164/163 KB) shows that the edge moves.
H100 = Device("H100", 132, 228 * 1024, 227 * 1024)
H200 = Device("H200", 132, 228 * 1024, 227 * 1024)
A100 = Device("A100", 108, 164 * 1024, 163 * 1024)
DEVICES = [H100, H200, A100]


@dataclasses.dataclass
class Plan:
    verdict: int
    ctas: int
    threads: int
    units_per_cta: int
    columns_per_cta: int
    staged_rows: int
    shared_bytes: int
    cta_units: list  # (begin, end) per CTA
    cta_columns: list
    cta_shared_bytes: list

    @property
    def fits(self):
        return self.verdict == FITS


def plan(hidden_size, projection_size, device, element_size=FLOAT32):
    recurrent_size = projection_size or hidden_size
    answer = torch.ops.lstm_ext.cuda_persistent_plan(
        hidden_size, recurrent_size, projection_size, element_size, *device.figures()
    )
    head, per_cta = answer[:7], answer[7:]
    assert len(per_cta) == 5 * head[1]
    ctas = [per_cta[5 * c : 5 * c + 5] for c in range(head[1])]
    return Plan(
        *head,
        cta_units=[tuple(c[0:2]) for c in ctas],
        cta_columns=[tuple(c[2:4]) for c in ctas],
        cta_shared_bytes=[c[4] for c in ctas],
    )


def documented_shared_bytes(
    hidden_size, projection_size, device, staged_rows, element_size=FLOAT32
):
    """persistent_plan.h's rule, written out again: (4 U R + C H + rows max(R, H)) bytes, U and C
    the units and columns per CTA over min(SMs, H) CTAs (none left empty)."""
    recurrent_size = projection_size or hidden_size
    units = -(-hidden_size // min(device.multiprocessors, hidden_size))
    ctas = -(-hidden_size // units)
    columns = -(-projection_size // ctas)
    return element_size * (
        4 * units * recurrent_size
        + columns * hidden_size
        + staged_rows * max(recurrent_size, hidden_size)
    )


def documented_fit(hidden_size, projection_size, device):
    smallest_tile = documented_shared_bytes(
        hidden_size, projection_size, device, STAGED_ROW_CHOICES[-1]
    )
    return smallest_tile <= device.shared_budget


def assert_partition(ranges, total, what):
    """The ranges, in CTA order, cover [0, total) once each, in order, without overlap."""
    covered = [index for begin, end in ranges for index in range(begin, end)]
    assert covered == list(range(total)), f"{what} not owned exactly once: {ranges}"


LAYERS = [
    (1, 0),
    (17, 0),
    (17, 5),
    (1000, 0),
    (1000, 250),
    (1000, 999),
    (1024, 256),
    (512, 0),
    (133, 0),
    (264, 0),
]


@pytest.mark.parametrize("device", DEVICES, ids=lambda d: d.name)
@pytest.mark.parametrize("hidden_size,projection_size", LAYERS)
def test_every_unit_and_column_owned_once_and_no_cta_over_budget(
    device, hidden_size, projection_size
):
    """Whether or not the layer fits (H = 1000 does not on an A100), the split is a partition."""
    result = plan(hidden_size, projection_size, device)
    assert result.fits == documented_fit(hidden_size, projection_size, device)
    assert 1 <= result.ctas <= min(device.multiprocessors, hidden_size)
    assert result.threads == THREADS
    assert result.threads * device.registers_per_thread <= device.registers_per_multiprocessor
    assert_partition(result.cta_units, hidden_size, "hidden units")
    assert all(end > begin for begin, end in result.cta_units), "a CTA owns no hidden unit"
    assert all(end - begin <= result.units_per_cta for begin, end in result.cta_units)
    assert_partition(result.cta_columns, projection_size, "projection columns")
    assert all(end - begin <= result.columns_per_cta for begin, end in result.cta_columns)
    assert max(result.cta_shared_bytes) == result.shared_bytes
    assert (result.shared_bytes <= device.shared_budget) == result.fits
    assert result.shared_bytes == documented_shared_bytes(
        hidden_size, projection_size, device, result.staged_rows
    )


def test_small_layers_spread_one_unit_per_cta_and_large_ones_fill_the_device():
    assert plan(1, 0, H100).cta_units == [(0, 1)]
    assert plan(17, 0, H100).cta_units == [(u, u + 1) for u in range(17)]
    # 1000 units over 132 SMs: 8 per CTA, so 125 CTAs (none left with fewer than 1).
    large = plan(1000, 0, H100)
    assert (large.ctas, large.units_per_cta, large.cta_units[-1]) == (125, 8, (992, 1000))


def test_staging_tile_shrinks_before_the_layer_is_refused():
    """Small layers stage 32 rows of h per tile; near the edge the tile shrinks to 4 rows."""
    assert plan(256, 0, H100).staged_rows == 32
    assert plan(1000, 0, H100).staged_rows == 16
    assert plan(1320, 0, H100).staged_rows == 4


def largest_fitting_hidden_size(device, projection_of):
    """The largest H (up to 8192) that documented_fit accepts; fitting is monotone in H."""
    fitting = [h for h in range(2, 8192) if documented_fit(h, projection_of(h), device)]
    edge = fitting[-1]
    assert fitting == list(range(2, edge + 1)), "the fit is not monotone in H"
    return edge


PROJECTIONS = {"none": lambda h: 0, "quarter": lambda h: h // 4, "almost_h": lambda h: h - 1}


@pytest.mark.parametrize("device", DEVICES, ids=lambda d: d.name)
@pytest.mark.parametrize("projection", PROJECTIONS)
def test_budget_edge_just_inside_fits_and_just_outside_does_not(device, projection):
    projection_of = PROJECTIONS[projection]
    edge = largest_fitting_hidden_size(device, projection_of)
    inside = plan(edge, projection_of(edge), device)
    outside = plan(edge + 1, projection_of(edge + 1), device)
    assert inside.fits and inside.shared_bytes <= device.shared_budget
    assert outside.verdict == SHARED_MEMORY
    assert outside.shared_bytes > device.shared_budget
    assert outside.shared_bytes == documented_shared_bytes(
        edge + 1, projection_of(edge + 1), device, STAGED_ROW_CHOICES[-1]
    )


def test_h100_edge_without_projection_is_h_1320():
    """227 KB per CTA: 4 U H + 4 H floats fit while 16 H (U + 1) <= 232448 bytes; H = 1320
    (U = 10) needs 232320 bytes, H = 1321 (U = 11) 253632."""
    assert plan(1320, 0, H100).fits and plan(1320, 0, H100).shared_bytes == 232320
    assert not plan(1321, 0, H100).fits and plan(1321, 0, H100).shared_bytes == 253632
    assert plan(1320, 0, H200).fits and not plan(1321, 0, H200).fits


def test_a_device_without_the_registers_for_the_kernel_is_refused():
    starved = dataclasses.replace(H100, registers_per_thread=300)  # 256 x 300 > 65536
    assert plan(64, 0, starved).verdict == REGISTERS


def test_no_multiprocessors_and_empty_layers_are_refused():
    assert plan(64, 0, dataclasses.replace(H100, multiprocessors=0)).verdict == NO_MULTIPROCESSORS
    answer = torch.ops.lstm_ext.cuda_persistent_plan(0, 0, 0, FLOAT32, *H100.figures())
    assert answer[0] == EMPTY_LAYER and answer[1] == 0


def test_huge_layers_are_refused_without_overflow():
    assert plan(1 << 30, 0, H100).verdict == SHARED_MEMORY
    assert plan(1 << 20, 1 << 19, H100).verdict == SHARED_MEMORY


def test_element_size_scales_the_bytes():
    """A 2-byte layer needs half the bytes, so a layer just past the float32 edge fits."""
    assert not plan(1321, 0, H100).fits
    half = plan(1321, 0, H100, element_size=2)
    assert half.fits and half.shared_bytes == documented_shared_bytes(
        1321, 0, H100, half.staged_rows, element_size=2
    )

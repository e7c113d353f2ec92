"""Sample inputs shared by the tests: one LSTM layer's arguments and the equivalent nn.LSTM."""

import dataclasses

import torch


@dataclasses.dataclass
class LayerCase:
    """Arguments of lstm_ext.forward, batch-first, with every tensor a leaf requiring grad."""

    input: torch.Tensor  # (B, T, I)
    h0: torch.Tensor  # (B, R)
    c0: torch.Tensor  # (B, H)
    w_ih: torch.Tensor  # (4H, I)
    w_hh: torch.Tensor  # (4H, R)
    b_ih: torch.Tensor | None  # (4H)
    b_hh: torch.Tensor | None  # (4H)
    w_hr: torch.Tensor | None  # (P, H)

    def forward_args(self):
        return (
            self.input,
            (self.h0, self.c0),
            self.w_ih,
            self.w_hh,
            self.b_ih,
            self.b_hh,
            self.w_hr,
        )

    def leaves(self):
        """Every differentiable argument, in a fixed order."""
        return [
            t
            for t in (
                self.input,
                self.h0,
                self.c0,
                self.w_ih,
                self.w_hh,
                self.b_ih,
                self.b_hh,
                self.w_hr,
            )
            if t is not None
        ]

    def torch_lstm(self):
        """nn.LSTM (batch-first) holding the same weights, and its (h0, c0) of shape (1, B, .)."""
        hidden_size = self.w_ih.shape[0] // 4
        proj_size = self.w_hr.shape[0] if self.w_hr is not None else 0
        module = torch.nn.LSTM(
            self.input.shape[2],
            hidden_size,
            batch_first=True,
            bias=self.b_ih is not None,
            proj_size=proj_size,
            device=self.input.device,
            dtype=self.input.dtype,
        )
        with torch.no_grad():
            module.weight_ih_l0.copy_(self.w_ih)
            module.weight_hh_l0.copy_(self.w_hh)
            if self.b_ih is not None:
                module.bias_ih_l0.copy_(self.b_ih)
                module.bias_hh_l0.copy_(self.b_hh)
            if self.w_hr is not None:
                module.weight_hr_l0.copy_(self.w_hr)
        return module, (self.h0.unsqueeze(0), self.c0.unsqueeze(0))


def sample_inputs(
    device,
    dtype=torch.float32,
    batch=3,
    steps=4,
    input_size=5,
    hidden_size=7,
    proj_size=0,
    bias=True,
    seed=0,
    scale=0.5,
):
    """A LayerCase with random values (never zeros), reproducible from the seed."""
    generator = torch.Generator().manual_seed(seed)
    recurrent_size = proj_size or hidden_size

    def rand(*shape, magnitude=scale):
        value = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * magnitude
        return value.to(device=device, dtype=dtype).requires_grad_()

    return LayerCase(
        input=rand(batch, steps, input_size, magnitude=2 * scale),
        h0=rand(batch, recurrent_size),
        c0=rand(batch, hidden_size),
        w_ih=rand(4 * hidden_size, input_size),
        w_hh=rand(4 * hidden_size, recurrent_size),
        b_ih=rand(4 * hidden_size) if bias else None,
        b_hh=rand(4 * hidden_size) if bias else None,
        w_hr=rand(proj_size, hidden_size) if proj_size else None,
    )

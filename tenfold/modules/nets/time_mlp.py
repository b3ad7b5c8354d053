"""Time-conditioned MLPs: the networks of diffusion samplers and other time-indexed models.

The architecture follows Path Integral Sampler (Zhang & Chen, 2022, arXiv 2111.15141), which
the diffusion-sampler benchmark (Sendera et al., 2024, arXiv 2402.05098, Appendix B) uses for
every method: a Fourier embedding of the time with a learned phase, a linear embedding of the
state, their sum, then a GELU MLP whose output layer can be zero-initialized so that a fresh
network predicts exactly zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_hidden_layers: int) -> nn.Sequential:
    """GELU MLP ``in_dim -> hidden_dim (x num_hidden_layers) -> out_dim``.

    With ``num_hidden_layers = 0`` it is a single linear layer.
    """
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(num_hidden_layers):
        layers += [nn.Linear(width, hidden_dim), nn.GELU()]
        width = hidden_dim
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class FourierTimeEmbedding(nn.Module):
    """Embeds a time ``t`` as ``MLP([sin(w t + phi), cos(w t + phi)])``.

    The frequencies ``w`` are fixed and linearly spaced in ``[min_frequency, max_frequency]``;
    the phases ``phi`` are learned (PIS, arXiv 2111.15141).

    Args:
        num_frequencies: number of frequencies (the Fourier features have twice as many entries).
        out_dim: size of the embedding.
        hidden_dim: width of the MLP on the Fourier features (defaults to ``out_dim``).
        num_hidden_layers: hidden layers of that MLP.

    Shapes: ``t`` of any shape ``[*]`` -> ``[*, out_dim]``.
    """

    def __init__(
        self,
        num_frequencies: int,
        out_dim: int,
        hidden_dim: int | None = None,
        num_hidden_layers: int = 1,
        min_frequency: float = 0.1,
        max_frequency: float = 100.0,
    ) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.linspace(min_frequency, max_frequency, num_frequencies))
        self.phase = nn.Parameter(torch.randn(num_frequencies))
        self.net = mlp(2 * num_frequencies, hidden_dim or out_dim, out_dim, num_hidden_layers)

    def forward(self, t: Tensor) -> Tensor:
        angles = t.unsqueeze(-1) * self.frequencies + self.phase
        return self.net(torch.cat([angles.sin(), angles.cos()], dim=-1))


class TimeConditionedMLP(nn.Module):
    """``f(x, t) = MLP(GELU(W x + b + E(t)))`` with a Fourier time embedding ``E``.

    Args:
        in_dim: size of the state ``x``.
        out_dim: size of the output.
        hidden_dim: width of the state embedding, the time embedding and the MLP.
        num_hidden_layers: hidden layers of the MLP after the embeddings.
        num_frequencies: Fourier frequencies of the time embedding.
        zero_init: zero the output layer's weight and bias, so the network starts at ``f = 0``.

    Shapes: ``x`` ``[*, in_dim]`` and ``t`` broadcastable to ``[*]`` (a scalar time for a whole
    batch, or one time per row) -> ``[*, out_dim]``. The time embedding costs one row per entry
    of ``t``: a scalar ``t`` costs one row whatever the batch size.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 256,
        num_hidden_layers: int = 2,
        num_frequencies: int = 64,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        self.time_embedding = FourierTimeEmbedding(num_frequencies, hidden_dim)
        self.state_embedding = nn.Linear(in_dim, hidden_dim)
        self.head = nn.Sequential(nn.GELU(), mlp(hidden_dim, hidden_dim, out_dim, num_hidden_layers))
        if zero_init:
            nn.init.zeros_(self.head[-1][-1].weight)
            nn.init.zeros_(self.head[-1][-1].bias)

    def forward(self, x: Tensor, t: Tensor | None = None, time_embedding: Tensor | None = None) -> Tensor:
        """``f(x, t)``; pass ``time_embedding = self.time_embedding(t)`` instead of ``t`` to reuse
        an embedding computed once for many calls (e.g. every step of a fixed time grid)."""
        if time_embedding is None:
            if t is None:
                raise ValueError("give the time t or its embedding")
            time_embedding = self.time_embedding(t)
        if time_embedding.dim() == 1:
            # one time for the whole batch: the embedding joins the bias of the state embedding's
            # matmul (W x + (b + E(t))), saving an elementwise pass per call forward and backward
            embedded = nn.functional.linear(x, self.state_embedding.weight, self.state_embedding.bias + time_embedding)
        else:
            embedded = self.state_embedding(x) + time_embedding
        return self.head(embedded)


class TimeMLP(nn.Module):
    """``g(t) = MLP(FourierFeatures(t))``: a function of time only.

    Used for the learned scaling of the Langevin term of a sampler's drift (PIS). With
    ``init_bias`` set, the output layer starts with zero weight and that constant bias.

    Shapes: ``t`` ``[*]`` -> ``[*, out_dim]``.
    """

    def __init__(
        self,
        out_dim: int,
        hidden_dim: int = 256,
        num_hidden_layers: int = 3,
        num_frequencies: int = 64,
        init_bias: float | None = None,
    ) -> None:
        super().__init__()
        self.net = FourierTimeEmbedding(num_frequencies, out_dim, hidden_dim, num_hidden_layers)
        if init_bias is not None:
            nn.init.zeros_(self.net.net[-1].weight)
            nn.init.constant_(self.net.net[-1].bias, init_bias)

    def forward(self, t: Tensor) -> Tensor:
        return self.net(t)

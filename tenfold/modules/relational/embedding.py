"""The LSTM initialization of the ESBN code, shared by the relational family's recurrent nets (their
object embedding is :class:`tenfold.modules.nets.ObjectSequenceModel`)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["init_lstm_"]


def init_lstm_(weight_ih: Tensor, weight_hh: Tensor, biases: list[Tensor], hidden_size: int) -> None:
    """The ESBN code's LSTM initialization (emergent_symbols, ``models/LSTM.py`` and
    ``models/ESBN.py``): zero biases; Xavier-normal input and forget gates and output gate (rows
    ``[0, 2H)`` and ``[3H, 4H)``, followed by a sigmoid), Xavier-normal with gain 5/3 for the cell
    candidate (rows ``[2H, 3H)``, followed by tanh), for both the input and the recurrent weights."""
    for weight in (weight_ih, weight_hh):
        nn.init.xavier_normal_(weight.data[: 2 * hidden_size])
        nn.init.xavier_normal_(weight.data[3 * hidden_size :])
        nn.init.xavier_normal_(weight.data[2 * hidden_size : 3 * hidden_size], gain=5.0 / 3.0)
    for bias in biases:
        nn.init.zeros_(bias)

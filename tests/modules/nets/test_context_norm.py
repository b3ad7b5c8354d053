"""Context normalization (Webb et al., 2020, arXiv 2012.14601, Sec. 2.2) by hand with non-trivial
learned ``gamma`` and ``beta``: every feature standardized over the objects of its segment, then
scaled by ``gamma`` and shifted by ``beta``."""

from __future__ import annotations

import math

import torch

from tenfold.modules.nets import ContextNorm

torch.set_num_threads(1)


def test_context_norm_scales_and_shifts_the_standardized_features() -> None:
    """``out[b, i, d] = gamma_d (z[b, i, d] - mu) / sqrt(var + eps) + beta_d``, ``mu`` and the
    biased variance over the positions of ``i``'s segment, entry by entry."""
    torch.manual_seed(0)
    segments = [[0, 3], [1, 2, 4]]
    norm = ContextNorm(3, segments=segments)
    with torch.no_grad():
        norm.gamma.copy_(torch.tensor([2.0, -0.5, 3.0]))
        norm.beta.copy_(torch.tensor([1.0, 4.0, -2.0]))
    z = torch.randn(2, 5, 3) * 3 + 1
    with torch.no_grad():
        out = norm(z)
    expected = torch.empty_like(z)
    for b in range(2):
        for segment in segments:
            for d in range(3):
                values = [z[b, i, d].item() for i in segment]
                mean = sum(values) / len(values)
                variance = sum((v - mean) ** 2 for v in values) / len(values)
                for i, v in zip(segment, values, strict=True):
                    standardized = (v - mean) / math.sqrt(variance + norm.eps)
                    expected[b, i, d] = norm.gamma[d].item() * standardized + norm.beta[d].item()
    torch.testing.assert_close(out, expected)
    # every segment's features now have mean beta and standard deviation |gamma|
    for segment in segments:
        torch.testing.assert_close(out[:, segment].mean(1), norm.beta.detach().expand(2, 3), rtol=0, atol=1e-5)
        std = out[:, segment].var(1, unbiased=False).sqrt()
        torch.testing.assert_close(std, norm.gamma.detach().abs().expand(2, 3), rtol=1e-4, atol=1e-4)

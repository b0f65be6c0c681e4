"""Kernel discrepancies on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from onnx_run.ntk import DISCREPANCIES, kernel_discrepancy

D = torch.float64
KS2 = torch.tensor([[2.0, 0.0], [0.0, 2.0]], dtype=D)
KT2 = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=D)
KS3 = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=D))
KT3 = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 2.0]], dtype=D)


def test_hand_computed_2x2():
    # diff = [[1, -1], [-1, 1]] -> mean square 1
    assert kernel_discrepancy(KS2, KT2, "mse").item() == pytest.approx(1.0)
    # <Ks, Kt> = 4, |Ks| = sqrt(8), |Kt| = 2
    assert kernel_discrepancy(KS2, KT2, "alignment").item() == pytest.approx(1 - 1 / math.sqrt(2))
    # scaled to norm n = 2: Ks -> I*sqrt(2), Kt -> ones; diff^2 = (sqrt2-1)^2 twice, 1 twice
    assert kernel_discrepancy(KS2, KT2, "mse_normalized").item() == pytest.approx((2 * (math.sqrt(2) - 1) ** 2 + 2) / 4)


def test_hand_computed_3x3():
    # Ks - Kt = [[-1,-1,0],[-1,0,-1],[0,-1,1]]: six ones over nine entries
    assert kernel_discrepancy(KS3, KT3, "mse").item() == pytest.approx(6 / 9)
    # <Ks, Kt> = 2 + 4 + 6 = 12, |Ks| = sqrt(14), |Kt| = 4
    assert kernel_discrepancy(KS3, KT3, "alignment").item() == pytest.approx(1 - 12 / (4 * math.sqrt(14)))
    # 9 H Ks H = [[9,-3,-6],[-3,12,-9],[-6,-9,15]], 9 H Kt H = [[10,-2,-8],[-2,4,-2],[-8,-2,10]]:
    # inner product 432, squared norms 702 and 360 (common factor 81 cancels)
    assert kernel_discrepancy(KS3, KT3, "alignment_centered").item() == pytest.approx(1 - 432 / math.sqrt(702 * 360))


def test_identities_and_invariances():
    torch.manual_seed(0)
    a = torch.randn(5, 5, dtype=D)
    ks, kt = a @ a.T, (a + 0.3 * torch.randn(5, 5, dtype=D)) @ (a.T + 0.1)
    kt = 0.5 * (kt + kt.T)
    al = kernel_discrepancy(ks, kt, "alignment")
    assert kernel_discrepancy(ks, kt, "mse_normalized").item() == pytest.approx(2 * al.item())
    for kind in ("mse_normalized", "alignment", "alignment_centered"):
        assert kernel_discrepancy(1e6 * ks, 1e-3 * kt, kind).item() == pytest.approx(kernel_discrepancy(ks, kt, kind).item())
        assert kernel_discrepancy(ks, ks, kind).item() == pytest.approx(0.0, abs=1e-12)
    # centring ignores a constant offset, plain alignment does not
    assert kernel_discrepancy(ks + 50.0, kt, "alignment_centered").item() == pytest.approx(
        kernel_discrepancy(ks, kt, "alignment_centered").item()
    )
    assert kernel_discrepancy(ks + 50.0, kt, "alignment").item() != pytest.approx(al.item())


@pytest.mark.parametrize("kind", DISCREPANCIES)
def test_differentiable_in_both_kernels(kind):
    torch.manual_seed(1)
    a = torch.randn(4, 4, dtype=D)
    ks = (a @ a.T).requires_grad_(True)
    kt = (torch.eye(4, dtype=D) + 0.2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s, t: kernel_discrepancy(s, t, kind), (ks, kt))


def test_unknown_kind_and_bad_shapes():
    with pytest.raises(ValueError, match="'cosine'.*mse.*mse_normalized.*alignment.*alignment_centered"):
        kernel_discrepancy(KS2, KT2, "cosine")
    with pytest.raises(ValueError, match="same shape"):
        kernel_discrepancy(KS2, KT3)
    with pytest.raises(ValueError, match="square"):
        kernel_discrepancy(torch.ones(2, 3), torch.ones(2, 3))

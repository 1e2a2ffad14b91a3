"""associative_scan against sequential loops (cumulative sums and matrix products)."""

import pytest
import torch

from bayes_moe.kernels.scan import associative_scan


def _add(a, b):
    return (a[0] + b[0],)


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 7, 8, 9, 16, 33, 64, 100])
def test_prefix_sum_equals_cumsum(length):
    x = torch.randn(length, 3, dtype=torch.float64)
    (forward,) = associative_scan(_add, (x,))
    (backward,) = associative_scan(_add, (x,), reverse=True)
    torch.testing.assert_close(forward, x.cumsum(0))
    torch.testing.assert_close(backward, x.flip(0).cumsum(0).flip(0))


@pytest.mark.parametrize("length", [2, 3, 5, 38, 65])
def test_several_leaves_are_all_scanned(length):
    # Regression: every leaf must be scanned, not only the first (sum and product here).
    x = torch.randn(length, dtype=torch.float64)
    y = torch.rand(length, dtype=torch.float64) + 0.5
    s, p = associative_scan(lambda a, b: (a[0] + b[0], a[1] * b[1]), (x, y))
    torch.testing.assert_close(s, x.cumsum(0))
    torch.testing.assert_close(p, y.cumprod(0))


@pytest.mark.parametrize("length", [1, 6, 31])
def test_non_commutative_matrix_products_keep_order(length):
    mats = torch.randn(length, 3, 3, dtype=torch.float64) / 2
    (prefix,) = associative_scan(lambda a, b: (a[0] @ b[0],), (mats,))
    (suffix,) = associative_scan(lambda a, b: (a[0] @ b[0],), (mats,), reverse=True)
    acc = torch.eye(3, dtype=torch.float64)
    for t in range(length):
        acc = acc @ mats[t]
        torch.testing.assert_close(prefix[t], acc)
    acc = torch.eye(3, dtype=torch.float64)
    for t in reversed(range(length)):
        acc = mats[t] @ acc
        torch.testing.assert_close(suffix[t], acc)


def test_gradients_flow_through_the_scan():
    x = torch.randn(20, dtype=torch.float64, requires_grad=True)
    (s,) = associative_scan(_add, (x,))
    s.sum().backward()
    # d/dx_t sum_u cumsum_u = number of prefixes containing x_t = T - t
    torch.testing.assert_close(x.grad, torch.arange(20, 0, -1, dtype=torch.float64))


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="same length"):
        associative_scan(_add, (torch.zeros(3), torch.zeros(4)))

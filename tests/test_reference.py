"""The naive loop oracle (minicnn.reference) against hand-computed examples and finite differences.

If these fail, the oracle itself is wrong and every comparison against it is meaningless, so the
examples are small enough to check on paper; the expected values are worked out in comments.
"""
import numpy as np
import pytest

from minicnn import reference as R
from minicnn.gradcheck import kink_free_input, numerical_gradient, rel_error

X3 = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)     # [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def assert_equal_values(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12,
                               err_msg=f"reference {what} differs from the hand-computed values")


# ----------------------------------------------------------------------------- conv by hand

def test_conv_forward_2x2_kernel_on_3x3_input_by_hand():
    w = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    b = np.array([0.5])
    out, _ = R.conv2d_forward(X3, w, b)
    # out[0,0] = 0*1 + 1*2 + 3*3 + 4*4 = 27, out[0,1] = 1 + 4 + 12 + 20 = 37,
    # out[1,0] = 3 + 8 + 18 + 28 = 57,      out[1,1] = 4 + 10 + 21 + 32 = 67; plus the bias.
    assert_equal_values(out, [[[[27.5, 37.5], [57.5, 67.5]]]], "conv2d forward")


def test_conv_forward_3x3_ones_kernel_with_padding_sums_neighbourhoods():
    w = np.ones((1, 1, 3, 3))
    out, _ = R.conv2d_forward(X3, w, None, padding=1)
    # Each output is the sum of the 3x3 neighbourhood of the same cell (zeros outside).
    expected = [[8, 15, 12], [21, 36, 27], [20, 33, 24]]
    assert_equal_values(out[0, 0], expected, "conv2d forward with padding 1")


def test_conv_forward_stride_2_keeps_every_other_output():
    w = np.ones((1, 1, 3, 3))
    out, _ = R.conv2d_forward(X3, w, np.zeros(1), stride=2, padding=1)
    assert_equal_values(out[0, 0], [[8, 12], [20, 24]], "conv2d forward with stride 2, padding 1")


def test_conv_forward_sums_over_channels_and_adds_one_bias_per_filter():
    x = np.stack([X3[0, 0], 10 * X3[0, 0]])[None]          # (1, 2, 3, 3)
    w = np.array([[[[1.0]], [[2.0]]], [[[0.0]], [[-1.0]]]])  # (2 filters, 2 channels, 1, 1)
    b = np.array([1.0, -1.0])
    out, _ = R.conv2d_forward(x, w, b)
    # filter 0: 1*x + 2*(10x) + 1 = 21x + 1;  filter 1: -(10x) - 1
    assert_equal_values(out[0, 0], 21 * X3[0, 0] + 1, "conv2d forward, filter 0")
    assert_equal_values(out[0, 1], -10 * X3[0, 0] - 1, "conv2d forward, filter 1")


def test_conv_forward_non_square_kernel_and_stride():
    x = np.arange(20, dtype=np.float64).reshape(1, 1, 4, 5)
    w = np.array([[[[1.0, -1.0]]]])                         # (1, 1, 1, 2): x[h, w] - x[h, w+1]
    out, _ = R.conv2d_forward(x, w, None, stride=(2, 3))
    # rows 0 and 2, columns 0 and 3; each value is x[h, w] - x[h, w + 1] = -1
    assert out.shape == (1, 1, 2, 2), f"expected output (1, 1, 2, 2), got {out.shape}"
    assert_equal_values(out, -np.ones((1, 1, 2, 2)), "conv2d forward with a 1x2 kernel")


def test_conv_backward_2x2_kernel_on_3x3_input_by_hand():
    w = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    out, cache = R.conv2d_forward(X3, w, np.zeros(1))
    dx, dw, db = R.conv2d_backward(np.ones_like(out), cache)
    # db: four outputs, each with gradient 1.
    assert_equal_values(db, [4.0], "conv2d db")
    # dw[i, j] = sum of the 2x2 block of x starting at (i, j).
    assert_equal_values(dw[0, 0], [[0 + 1 + 3 + 4, 1 + 2 + 4 + 5], [3 + 4 + 6 + 7, 4 + 5 + 7 + 8]],
                        "conv2d dw")
    # dx[h, w] = sum of the kernel taps that touch (h, w): corners 1 tap, edges 2, centre 4.
    assert_equal_values(dx[0, 0], [[1, 3, 2], [4, 10, 6], [3, 7, 4]], "conv2d dx")


def test_conv_backward_drops_the_gradient_of_the_padding():
    w = np.ones((1, 1, 3, 3))
    out, cache = R.conv2d_forward(X3, w, None, padding=1)
    dx, _, db = R.conv2d_backward(np.ones_like(out), cache)
    assert db is None, "a forward without bias must give db None"
    # dx[h, w] = number of output windows covering (h, w): 4 at corners, 6 at edges, 9 centre.
    assert_equal_values(dx[0, 0], [[4, 6, 4], [6, 9, 6], [4, 6, 4]], "conv2d dx with padding 1")


# ----------------------------------------------------------------------------- pooling by hand

X4 = np.array([[[[1.0, 3.0, 2.0, 0.0],
                 [4.0, 2.0, 1.0, 5.0],
                 [0.0, 1.0, 7.0, 1.0],
                 [2.0, 2.0, 3.0, 3.0]]]])


def test_maxpool_forward_and_backward_2x2_by_hand():
    out, cache = R.maxpool2d_forward(X4, 2)
    assert_equal_values(out, [[[[4, 5], [2, 7]]]], "maxpool forward")
    dx = R.maxpool2d_backward(np.array([[[[10.0, 20.0], [30.0, 40.0]]]]), cache)
    # winners: 4 at (1, 0), 5 at (1, 3), 7 at (2, 2); the bottom-left window holds
    # (2,0)=0, (2,1)=1, (3,0)=2, (3,1)=2 in row-major order: a tie, won by the first 2, (3, 0).
    expected = np.zeros_like(X4)
    expected[0, 0, 1, 0], expected[0, 0, 1, 3] = 10, 20
    expected[0, 0, 3, 0], expected[0, 0, 2, 2] = 30, 40
    assert_equal_values(dx, expected, "maxpool backward")


def test_maxpool_ties_go_to_the_first_maximum_in_window_order():
    x = np.full((1, 1, 2, 2), 3.0)
    out, cache = R.maxpool2d_forward(x, 2)
    dx = R.maxpool2d_backward(np.ones_like(out), cache)
    assert_equal_values(dx[0, 0], [[1, 0], [0, 0]], "maxpool backward on a tie")


def test_maxpool_padded_cells_never_win_even_against_negative_values():
    x = -np.ones((1, 1, 2, 2))
    out, cache = R.maxpool2d_forward(x, 3, stride=1, padding=1)
    assert_equal_values(out, -np.ones((1, 1, 2, 2)), "maxpool forward with padding (-1 beats pad)")
    dx = R.maxpool2d_backward(np.ones_like(out), cache)
    # every window sees all four cells (ties): each goes to the first real one, (0, 0).
    assert_equal_values(dx[0, 0], [[4, 0], [0, 0]], "maxpool backward with padding")


def test_maxpool_overlapping_windows_with_one_winner_add_their_gradients():
    x = np.array([[[[1.0, 5.0, 2.0], [3.0, 0.0, 4.0]]]])
    out, cache = R.maxpool2d_forward(x, 2, stride=1)
    assert_equal_values(out, [[[[5, 5]]]], "maxpool forward, overlapping windows")
    dx = R.maxpool2d_backward(np.array([[[[1.0, 2.0]]]]), cache)
    assert_equal_values(dx[0, 0], [[0, 3, 0], [0, 0, 0]], "maxpool backward, shared winner")


def test_avgpool_forward_and_backward_2x2_by_hand():
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    out, cache = R.avgpool2d_forward(x, 2)
    # (0+1+4+5)/4 = 2.5, (2+3+6+7)/4 = 4.5, (8+9+12+13)/4 = 10.5, (10+11+14+15)/4 = 12.5
    assert_equal_values(out, [[[[2.5, 4.5], [10.5, 12.5]]]], "avgpool forward")
    dx = R.avgpool2d_backward(np.ones_like(out), cache)
    assert_equal_values(dx, np.full_like(x, 0.25), "avgpool backward")


def test_avgpool_zero_padding_counts_in_the_divisor():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    out, cache = R.avgpool2d_forward(x, 2, stride=2, padding=1)
    # each 2x2 window of the zero-padded 4x4 holds one real value: value / 4
    assert_equal_values(out, [[[[0.25, 0.5], [0.75, 1.0]]]], "avgpool forward with padding")
    dx = R.avgpool2d_backward(np.ones_like(out), cache)
    assert_equal_values(dx, np.full_like(x, 0.25), "avgpool backward with padding")


def test_linear_and_relu_by_hand():
    x = np.array([[1.0, -2.0]])
    w = np.array([[3.0, 1.0], [-1.0, 0.5]])
    out, cache = R.linear_forward(x, w, np.array([0.0, 10.0]))
    assert_equal_values(out, [[1.0, 8.0]], "linear forward")      # [3 - 2, -1 - 1 + 10]
    dx, dw, db = R.linear_backward(np.array([[1.0, 2.0]]), cache)
    assert_equal_values(dx, [[1.0, 2.0]], "linear dx")             # [3 - 2, 1 + 1]
    assert_equal_values(dw, [[1.0, -2.0], [2.0, -4.0]], "linear dw")
    assert_equal_values(db, [1.0, 2.0], "linear db")
    out, cache = R.relu_forward(np.array([[-1.0, 0.0, 2.0]]))
    assert_equal_values(out, [[0.0, 0.0, 2.0]], "relu forward")
    assert_equal_values(R.relu_backward(np.array([[5.0, 5.0, 5.0]]), cache), [[0.0, 0.0, 5.0]],
                        "relu backward (0 at x == 0)")


@pytest.mark.parametrize("op", ["conv", "maxpool", "avgpool", "linear", "relu"])
def test_reference_preserves_float32(op):
    x = kink_free_input((1, 2, 4, 4)).astype(np.float32)
    if op == "conv":
        out, cache = R.conv2d_forward(x, np.ones((3, 2, 2, 2), np.float32), np.ones(3, np.float32))
        grads = R.conv2d_backward(np.ones_like(out), cache)
    elif op in ("maxpool", "avgpool"):
        forward, backward = {"maxpool": (R.maxpool2d_forward, R.maxpool2d_backward),
                             "avgpool": (R.avgpool2d_forward, R.avgpool2d_backward)}[op]
        out, cache = forward(x, 2)
        grads = (backward(np.ones_like(out), cache),)
    elif op == "linear":
        out, cache = R.linear_forward(x.reshape(2, -1), np.ones((3, 16), np.float32), None)
        grads = R.linear_backward(np.ones_like(out), cache)[:2]
    else:
        out, cache = R.relu_forward(x)
        grads = (R.relu_backward(np.ones_like(out), cache),)
    dtypes = [out.dtype] + [g.dtype for g in grads]
    assert all(d == np.float32 for d in dtypes), f"reference {op} turned float32 into {dtypes}"


# ----------------------------------------------------------------------------- numerically

def _check(forward, backward, arrays, names, seed=0, tol=1e-8):
    out, cache = forward(*arrays)
    dout = np.random.default_rng(seed).standard_normal(out.shape)
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for name, array, grad in zip(names, arrays, grads):
        numeric = numerical_gradient(lambda _: forward(*arrays)[0], array, dout)
        err = rel_error(grad, numeric)
        assert err < tol, f"reference d{name}: relative error {err:.2e} against finite differences"


@pytest.mark.parametrize("stride, padding, kernel", [
    (1, 0, (3, 3)), (2, 1, (3, 3)), ((2, 1), (1, 0), (2, 3)), ((1, 3), (0, 2), (3, 1))])
def test_reference_conv_gradients_match_numerical_gradient(stride, padding, kernel):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 5, 6))
    w = rng.standard_normal((3, 2) + kernel)
    b = rng.standard_normal(3)
    _check(lambda x, w, b: R.conv2d_forward(x, w, b, stride, padding), R.conv2d_backward,
           [x, w, b], ["x", "w", "b"])


@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 1))])
def test_reference_pool_gradients_match_numerical_gradient(kernel, stride, padding):
    x = kink_free_input((2, 2, 5, 6), seed=3)
    _check(lambda x: R.maxpool2d_forward(x, kernel, stride, padding), R.maxpool2d_backward,
           [x], ["x (maxpool)"])
    _check(lambda x: R.avgpool2d_forward(x, kernel, stride, padding), R.avgpool2d_backward,
           [x], ["x (avgpool)"])


def test_reference_linear_and_relu_gradients_match_numerical_gradient():
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    _check(R.linear_forward, R.linear_backward, [x, w, b], ["x", "w", "b"])
    _check(R.relu_forward, R.relu_backward, [kink_free_input((3, 4))], ["x (relu)"])

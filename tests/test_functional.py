"""minicnn.functional against finite differences, against the loop oracle, and against its rules
(dtype preserved, non-contiguous input accepted, batchnorm running statistics, dropout masks,
stable softmax cross-entropy).

Ops that go through minicnn.kernels (conv, pooling) are run on every CPU kernel implementation:
"numpy" always, "c" when the extension is built (and then it must be: with MINICNN_REQUIRE_C=1
a missing extension fails these tests instead of skipping them).
"""
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minicnn.functional as F
from minicnn import kernels
from minicnn import reference as R
from minicnn.gradcheck import kink_free_input, numerical_gradient, rel_error

REQUIRE_C = os.environ.get("MINICNN_REQUIRE_C") == "1"
C_MARKS = [] if REQUIRE_C else [pytest.mark.skipif(not kernels.c_extension_available(),
                                                    reason="C extension not built")]
KERNELS = ["numpy", pytest.param("c", marks=C_MARKS)]

GRAD_TOL = 1e-7          # float64, h = 1e-5: see minicnn.gradcheck for why this is ample


def rng_for(seed):
    return np.random.default_rng(seed)


# ============================================================================ gradient checks

def grad_errors(forward, backward, arrays, names, seed=0):
    """{name: rel error} between backward's gradients and finite differences of forward.

    forward(*arrays) -> (out, cache); backward(dout, cache) -> gradients in the order of arrays.
    """
    out, cache = forward(*arrays)
    dout = rng_for(seed).standard_normal(out.shape)
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    return {name: rel_error(grad, numerical_gradient(lambda _: forward(*arrays)[0], array, dout))
            for name, array, grad in zip(names, arrays, grads)}


def _conv_case(x_shape, w_shape, stride, padding, bias=True, seed=0):
    rng = rng_for(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    arrays, names = [x, w], ["dx", "dw"]
    if bias:
        arrays.append(rng.standard_normal(w_shape[0]))
        names.append("db")
        forward = lambda x, w, b: F.conv2d_forward(x, w, b, stride, padding)   # noqa: E731
    else:
        forward = lambda x, w: F.conv2d_forward(x, w, None, stride, padding)   # noqa: E731
    return grad_errors(forward, F.conv2d_backward, arrays, names)


def _pool_case(pool, x_shape, kernel_size, stride, padding):
    forward, backward = {"max": (F.maxpool2d_forward, F.maxpool2d_backward),
                         "avg": (F.avgpool2d_forward, F.avgpool2d_backward)}[pool]
    x = kink_free_input(x_shape, seed=1)          # distinct values: no max-pool ties to cross
    return grad_errors(lambda x: forward(x, kernel_size, stride, padding), backward, [x], ["dx"])


def _unary_case(forward, backward, x):
    return grad_errors(forward, backward, [x], ["dx"])


def _linear_case():
    rng = rng_for(2)
    arrays = [rng.standard_normal((4, 5)), rng.standard_normal((3, 5)), rng.standard_normal(3)]
    return grad_errors(F.linear_forward, F.linear_backward, arrays, ["dx", "dw", "db"])


def _batchnorm_case(dims, training):
    forward = F.batchnorm2d_forward if dims == 2 else F.batchnorm1d_forward
    backward = F.batchnorm2d_backward if dims == 2 else F.batchnorm1d_backward
    rng = rng_for(3)
    x_shape = (3, 2, 3, 4) if dims == 2 else (5, 3)
    channels = x_shape[1]
    x = 2.0 * rng.standard_normal(x_shape) + 1.0
    gamma, beta = rng.standard_normal(channels), rng.standard_normal(channels)
    running_mean, running_var = rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels)

    def run(x, gamma, beta):
        # in training the running statistics change at every call but the output does not use them
        return forward(x, gamma, beta, running_mean, running_var, training=training)

    return grad_errors(run, backward, [x, gamma, beta], ["dx", "dgamma", "dbeta"])


def _dropout_case():
    x = rng_for(4).standard_normal((4, 6))
    # a new Generator with the same seed at every call: the same mask every time
    return grad_errors(lambda x: F.dropout_forward(x, 0.3, rng=np.random.default_rng(7)),
                       F.dropout_backward, [x], ["dx"])


def _cross_entropy_case(label_smoothing):
    rng = rng_for(5)
    logits, y = 3.0 * rng.standard_normal((4, 5)), np.array([0, 4, 2, 2])
    loss, dlogits = F.softmax_cross_entropy(logits, y, label_smoothing=label_smoothing)
    numeric = numerical_gradient(lambda z: F.softmax_cross_entropy(z, y, label_smoothing)[0], logits)
    return {"dlogits": rel_error(dlogits, numeric)}


def _mse_case():
    rng = rng_for(6)
    pred, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    loss, dpred = F.mse_loss(pred, target)
    return {"dpred": rel_error(dpred, numerical_gradient(lambda p: F.mse_loss(p, target)[0], pred))}


# name -> (goes through kernels?, function returning {gradient: rel error})
GRAD_CASES = {
    "conv2d 3x3 pad 1": (True, lambda: _conv_case((2, 3, 5, 5), (4, 3, 3, 3), 1, 1)),
    "conv2d 2x3 stride (2,3) pad (0,2)": (True, lambda: _conv_case((2, 2, 7, 8), (3, 2, 2, 3), (2, 3), (0, 2))),
    "conv2d 1x1 stride 2": (True, lambda: _conv_case((2, 3, 5, 4), (2, 3, 1, 1), 2, 0)),
    "conv2d kernel equal to input": (True, lambda: _conv_case((2, 2, 3, 4), (3, 2, 3, 4), 1, 0)),
    "conv2d no bias 3x1 pad (1,0)": (True, lambda: _conv_case((1, 2, 4, 3), (2, 2, 3, 1), 1, (1, 0), bias=False)),
    "maxpool2d 2x2": (True, lambda: _pool_case("max", (2, 2, 4, 6), 2, None, 0)),
    "maxpool2d 3x3 stride 2 pad 1 (overlapping)": (True, lambda: _pool_case("max", (2, 2, 7, 6), 3, 2, 1)),
    "maxpool2d 2x3 stride (1,2) pad (1,1)": (True, lambda: _pool_case("max", (1, 2, 5, 6), (2, 3), (1, 2), (1, 1))),
    "avgpool2d 2x2": (True, lambda: _pool_case("avg", (2, 2, 4, 6), 2, None, 0)),
    "avgpool2d 3x3 stride 2 pad 1 (overlapping)": (True, lambda: _pool_case("avg", (2, 2, 7, 6), 3, 2, 1)),
    "avgpool2d 2x3 stride (1,2) pad (1,1)": (True, lambda: _pool_case("avg", (1, 2, 5, 6), (2, 3), (1, 2), (1, 1))),
    "global_avgpool2d": (False, lambda: _unary_case(F.global_avgpool2d_forward, F.global_avgpool2d_backward,
                                                    rng_for(7).standard_normal((2, 3, 3, 4)))),
    "linear": (False, _linear_case),
    "relu": (False, lambda: _unary_case(F.relu_forward, F.relu_backward, kink_free_input((3, 8)))),
    "leaky_relu": (False, lambda: _unary_case(lambda x: F.leaky_relu_forward(x, 0.2), F.leaky_relu_backward,
                                              kink_free_input((3, 8)))),
    "sigmoid": (False, lambda: _unary_case(F.sigmoid_forward, F.sigmoid_backward,
                                           4 * rng_for(8).standard_normal((3, 8)))),
    "tanh": (False, lambda: _unary_case(F.tanh_forward, F.tanh_backward, 2 * rng_for(9).standard_normal((3, 8)))),
    "dropout p=0.3 (fixed mask)": (False, _dropout_case),
    "flatten": (False, lambda: _unary_case(F.flatten_forward, F.flatten_backward,
                                           rng_for(10).standard_normal((2, 3, 2, 2)))),
    "batchnorm2d train": (False, lambda: _batchnorm_case(2, True)),
    "batchnorm2d eval": (False, lambda: _batchnorm_case(2, False)),
    "batchnorm1d train": (False, lambda: _batchnorm_case(1, True)),
    "batchnorm1d eval": (False, lambda: _batchnorm_case(1, False)),
    "softmax_cross_entropy": (False, lambda: _cross_entropy_case(0.0)),
    "softmax_cross_entropy label_smoothing=0.1": (False, lambda: _cross_entropy_case(0.1)),
    "mse_loss": (False, _mse_case),
}


GRAD_PARAMS = [pytest.param(name, impl, id=f"{name} [{impl}]", marks=C_MARKS if impl == "c" else ())
               for name, (uses_kernels, _) in GRAD_CASES.items()
               for impl in (("numpy", "c") if uses_kernels else ("numpy",))]


@pytest.mark.parametrize("case, kernel_impl", GRAD_PARAMS)
def test_backward_matches_numerical_gradient_in_float64(case, kernel_impl):
    with kernels.use_kernels(kernel_impl):
        errors = GRAD_CASES[case][1]()
    worst = max(errors.values())
    assert worst < GRAD_TOL, (f"{case} [{kernel_impl} kernels]: analytic gradients differ from centered "
                              f"differences by {errors} (relative; bound {GRAD_TOL})")


def test_conv_backward_without_dx_gives_the_same_parameter_gradients():
    rng = rng_for(11)
    x, w, b = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    out, cache = F.conv2d_forward(x, w, b, 1, 1)
    dout = rng.standard_normal(out.shape)
    _, dw, db = F.conv2d_backward(dout, cache)
    dx_skipped, dw_skipped, db_skipped = F.conv2d_backward(dout, cache, need_dx=False)
    assert dx_skipped is None, "need_dx=False must return dx None"
    np.testing.assert_array_equal(dw_skipped, dw, err_msg="need_dx=False changed dw")
    np.testing.assert_array_equal(db_skipped, db, err_msg="need_dx=False changed db")


# ============================================================================ against the oracle

@st.composite
def conv_configs(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    return dict(
        n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)), f=draw(st.integers(1, 3)),
        h=draw(st.integers(max(1, kh - 2 * ph), 6)), w=draw(st.integers(max(1, kw - 2 * pw), 6)),
        kernel=(kh, kw), stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding=(ph, pw),
        bias=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)))


@pytest.mark.parametrize("kernel_impl", KERNELS)
@settings(max_examples=50, deadline=None)
@given(cfg=conv_configs())
def test_conv_matches_reference_on_random_shapes_strides_and_paddings(kernel_impl, cfg):
    rng = rng_for(cfg["seed"])
    x = rng.standard_normal((cfg["n"], cfg["c"], cfg["h"], cfg["w"]))
    w = rng.standard_normal((cfg["f"], cfg["c"]) + cfg["kernel"])
    b = rng.standard_normal(cfg["f"]) if cfg["bias"] else None
    stride, padding = cfg["stride"], cfg["padding"]
    with kernels.use_kernels(kernel_impl):
        out, cache = F.conv2d_forward(x, w, b, stride, padding)
        dout = rng.standard_normal(out.shape)
        grads = F.conv2d_backward(dout, cache)
    ref_out, ref_cache = R.conv2d_forward(x, w, b, stride, padding)
    ref_grads = R.conv2d_backward(dout, ref_cache)
    context = f"[{kernel_impl}] {cfg}"
    assert out.shape == ref_out.shape, f"conv output shape {out.shape} != {ref_out.shape} {context}"
    np.testing.assert_allclose(out, ref_out, rtol=1e-10, atol=1e-10, err_msg=f"conv forward {context}")
    for name, got, want in zip(("dx", "dw", "db"), grads, ref_grads):
        if want is None:                     # no bias: the oracle gives no db
            continue
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=f"conv {name} {context}")


@st.composite
def pool_configs(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    return dict(
        shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)),
               draw(st.integers(max(1, kh - 2 * ph), 7)), draw(st.integers(max(1, kw - 2 * pw), 7))),
        kernel=(kh, kw), stride=stride, padding=(ph, pw),
        ties=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)))


@pytest.mark.parametrize("kernel_impl", KERNELS)
@settings(max_examples=60, deadline=None)
@given(cfg=pool_configs())
def test_pooling_matches_reference_on_random_shapes_strides_paddings_and_ties(kernel_impl, cfg):
    rng = rng_for(cfg["seed"])
    if cfg["ties"]:     # small integers: many equal values, so the tie rule decides the winner
        x = rng.integers(-2, 3, cfg["shape"]).astype(np.float64)
    else:
        x = rng.standard_normal(cfg["shape"])
    args = (cfg["kernel"], cfg["stride"], cfg["padding"])
    context = f"[{kernel_impl}] {cfg}"
    for name, (forward, backward, ref_forward, ref_backward) in {
            "maxpool": (F.maxpool2d_forward, F.maxpool2d_backward, R.maxpool2d_forward, R.maxpool2d_backward),
            "avgpool": (F.avgpool2d_forward, F.avgpool2d_backward, R.avgpool2d_forward, R.avgpool2d_backward),
    }.items():
        with kernels.use_kernels(kernel_impl):
            out, cache = forward(x, *args)
            dout = rng.standard_normal(out.shape)
            dx = backward(dout, cache)
        ref_out, ref_cache = ref_forward(x, *args)
        assert out.shape == ref_out.shape, f"{name} output shape {out.shape} != {ref_out.shape} {context}"
        np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12, err_msg=f"{name} forward {context}")
        np.testing.assert_allclose(dx, ref_backward(dout, ref_cache), rtol=1e-12, atol=1e-12,
                                   err_msg=f"{name} backward {context} (max-pool: tie rule or routing)")


@pytest.mark.parametrize("kernel_impl", KERNELS)
def test_maxpool_padded_cells_never_win_even_when_the_window_is_all_minus_infinity(kernel_impl):
    x = np.full((1, 1, 3, 3), -np.inf)
    x[0, 0, 2, 2] = 1.0
    with kernels.use_kernels(kernel_impl):
        out, cache = F.maxpool2d_forward(x, 3, stride=2, padding=1)
        dx = F.maxpool2d_backward(np.ones_like(out), cache)
    ref_out, ref_cache = R.maxpool2d_forward(x, 3, stride=2, padding=1)
    ref_dx = R.maxpool2d_backward(np.ones_like(ref_out), ref_cache)
    np.testing.assert_array_equal(out, ref_out, err_msg="maxpool forward with -inf inputs")
    # the top-left window holds only -inf real cells and -inf padding: the gradient must go to a
    # real cell, the first one, (0, 0), never to the padding (which would be out of bounds).
    np.testing.assert_array_equal(dx, ref_dx, err_msg=f"maxpool backward routed the gradient of an "
                                  f"all -inf window wrongly [{kernel_impl}]")


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 3), d=st.integers(1, 4), m=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_linear_and_relu_match_reference(n, d, m, seed):
    rng = rng_for(seed)
    x, w, b = rng.standard_normal((n, d)), rng.standard_normal((m, d)), rng.standard_normal(m)
    out, cache = F.linear_forward(x, w, b)
    ref_out, ref_cache = R.linear_forward(x, w, b)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12, err_msg="linear forward")
    dout = rng.standard_normal(out.shape)
    for name, got, want in zip(("dx", "dw", "db"), F.linear_backward(dout, cache),
                               R.linear_backward(dout, ref_cache)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=f"linear {name}")
    out, cache = F.relu_forward(x)
    ref_out, ref_cache = R.relu_forward(x)
    np.testing.assert_array_equal(out, ref_out, err_msg="relu forward")
    np.testing.assert_array_equal(F.relu_backward(x, cache), R.relu_backward(x, ref_cache),
                                  err_msg="relu backward")


# ============================================================================ dtype and layout

def _run_all_ops(dtype, seed=0, make_view=lambda a: a):
    """{op: [forward output, gradients...]} for every op on inputs of ``dtype``.

    make_view turns each input (and dout) into another layout with the same values."""
    rng = rng_for(seed)

    def arr(*shape):
        return make_view(rng.standard_normal(shape).astype(dtype))

    def dout_like(out):
        return make_view(rng.standard_normal(out.shape).astype(dtype))

    results = {}

    def run(name, forward, backward, *inputs):
        out, cache = forward(*inputs)
        grads = backward(dout_like(out), cache)
        results[name] = [out] + list(grads if isinstance(grads, tuple) else (grads,))

    run("conv2d", lambda x, w, b: F.conv2d_forward(x, w, b, (2, 1), (1, 2)), F.conv2d_backward,
        arr(2, 3, 6, 5), arr(4, 3, 3, 2), arr(4))
    run("maxpool2d", lambda x: F.maxpool2d_forward(x, 3, 2, 1), F.maxpool2d_backward, arr(2, 3, 6, 5))
    run("avgpool2d", lambda x: F.avgpool2d_forward(x, (2, 3), 1, (1, 1)), F.avgpool2d_backward, arr(2, 3, 6, 5))
    run("global_avgpool2d", F.global_avgpool2d_forward, F.global_avgpool2d_backward, arr(2, 3, 4, 5))
    run("linear", F.linear_forward, F.linear_backward, arr(4, 6), arr(3, 6), arr(3))
    run("relu", F.relu_forward, F.relu_backward, arr(4, 6))
    run("leaky_relu", F.leaky_relu_forward, F.leaky_relu_backward, arr(4, 6))
    run("sigmoid", F.sigmoid_forward, F.sigmoid_backward, arr(4, 6))
    run("tanh", F.tanh_forward, F.tanh_backward, arr(4, 6))
    run("dropout", lambda x: F.dropout_forward(x, 0.5, rng=np.random.default_rng(0)), F.dropout_backward,
        arr(4, 6))
    run("flatten", F.flatten_forward, F.flatten_backward, arr(2, 3, 2, 2))
    for dims, forward, backward, shape in ((2, F.batchnorm2d_forward, F.batchnorm2d_backward, (3, 4, 3, 2)),
                                           (1, F.batchnorm1d_forward, F.batchnorm1d_backward, (5, 4))):
        for training in (True, False):
            stats = [np.zeros(4, dtype), np.ones(4, dtype)]
            run(f"batchnorm{dims}d {'train' if training else 'eval'}",
                lambda x, g, b: forward(x, g, b, *stats, training=training), backward,
                arr(*shape), arr(4), arr(4))
    logits = arr(4, 5)
    results["softmax_cross_entropy"] = list(F.softmax_cross_entropy(logits, np.array([0, 1, 4, 2]), 0.1))
    results["mse_loss"] = list(F.mse_loss(arr(3, 4), arr(3, 4)))
    return results


@pytest.mark.parametrize("kernel_impl", KERNELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_op_preserves_dtype_forward_and_backward(kernel_impl, dtype):
    with kernels.use_kernels(kernel_impl):
        results = _run_all_ops(dtype)
    wrong = {op: [str(np.asarray(a).dtype) for a in arrays] for op, arrays in results.items()
             if any(np.asarray(a).dtype != dtype for a in arrays)}
    assert not wrong, f"{np.dtype(dtype)} in, other dtypes out (op: [out, grads...]): {wrong}"


def _non_contiguous(a):
    """The same values in a non-contiguous layout: every other element of a twice-wider array."""
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    wide[..., ::2] = a
    view = wide[..., ::2]
    assert not view.flags.c_contiguous
    return view


def _reversed_strides(a):
    """The same values in Fortran (column-major) order."""
    view = np.asfortranarray(a)
    assert a.ndim < 2 or not view.flags.c_contiguous
    return view


@pytest.mark.parametrize("kernel_impl", KERNELS)
@pytest.mark.parametrize("layout", [_non_contiguous, _reversed_strides], ids=["strided", "fortran"])
def test_non_contiguous_inputs_give_the_same_results_as_contiguous_ones(kernel_impl, layout):
    with kernels.use_kernels(kernel_impl):
        expected = _run_all_ops(np.float64, seed=3)
        got = _run_all_ops(np.float64, seed=3, make_view=layout)
    for op in expected:
        for i, (g, e) in enumerate(zip(got[op], expected[op])):
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14,
                                       err_msg=f"{op}: result {i} changed with a {layout.__name__} input")


@pytest.mark.parametrize("kernel_impl", KERNELS)
@pytest.mark.parametrize("size", ["small", "large"])
def test_a_later_call_never_overwrites_an_earlier_output_or_cache(kernel_impl, size):
    """Workspaces may be reused across calls; arrays handed out or cached must not be.

    "large" makes conv's column matrix about 19 MB and relu's output 2 MB (float32), past the
    size where buffers nobody references any more are recycled."""
    rng = rng_for(12)
    shape, dtype = {"small": ((2, 3, 6, 6), np.float64), "large": ((32, 16, 32, 32), np.float32)}[size]
    n, c, h, w_ = shape
    x1, x2 = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    w, b = rng.standard_normal((4, c, 3, 3)).astype(dtype), rng.standard_normal(4).astype(dtype)
    dout_conv = rng.standard_normal((n, 4, h, w_)).astype(dtype)
    dout_pool = rng.standard_normal((n, c, h // 2, w_ // 2)).astype(dtype)
    ops = {
        "conv2d": (lambda x: F.conv2d_forward(x, w, b, 1, 1), F.conv2d_backward, dout_conv),
        "maxpool2d": (lambda x: F.maxpool2d_forward(x, 3, 2, 1), F.maxpool2d_backward, dout_pool),
        "avgpool2d": (lambda x: F.avgpool2d_forward(x, 3, 2, 1), F.avgpool2d_backward, dout_pool),
        "relu": (F.relu_forward, F.relu_backward, rng.standard_normal(shape).astype(dtype)),
    }

    def as_tuple(grads):
        return grads if isinstance(grads, tuple) else (grads,)

    with kernels.use_kernels(kernel_impl):
        for name, (forward, backward, dout) in ops.items():
            out1, cache1 = forward(x1)
            out1_copy = out1.copy()
            grads1 = [g.copy() for g in as_tuple(backward(dout, cache1))]
            out1b, cache1b = forward(x1)                  # kept alive across the calls below
            for _ in range(3):                            # same shapes: a reused buffer would clash
                out2, cache2 = forward(x2)
                backward(dout, cache2)
                del out2, cache2                          # now free for recycling
            assert np.array_equal(out1, out1_copy), f"{name}: a later forward overwrote an earlier output"
            assert np.array_equal(out1b, out1_copy), f"{name}: a later forward overwrote an earlier output"
            for i, (g, g1) in enumerate(zip(as_tuple(backward(dout, cache1b)), grads1)):
                assert np.array_equal(g, g1), f"{name}: gradient {i} changed: a later call corrupted a cache"


@pytest.mark.parametrize("kernel_impl", KERNELS)
def test_conv_of_a_batch_equals_conv_of_each_image(kernel_impl):
    """A batch large enough to be processed in several chunks gives per image what a batch of
    one gives (which the oracle tests pin down), and dw, db sum over the images."""
    rng = rng_for(22)
    x, w, b = rng.standard_normal((12, 16, 20, 20)), rng.standard_normal((8, 16, 3, 3)), rng.standard_normal(8)
    with kernels.use_kernels(kernel_impl):
        out, cache = F.conv2d_forward(x, w, b, 1, 1)
        dout = rng.standard_normal(out.shape)
        dx, dw, db = F.conv2d_backward(dout, cache)
        dw_sum, db_sum = np.zeros_like(dw), np.zeros_like(db)
        for i in range(len(x)):
            out_i, cache_i = F.conv2d_forward(x[i:i + 1], w, b, 1, 1)
            dx_i, dw_i, db_i = F.conv2d_backward(dout[i:i + 1], cache_i)
            np.testing.assert_allclose(out[i:i + 1], out_i, rtol=1e-12, atol=1e-12, err_msg=f"conv out, image {i}")
            np.testing.assert_allclose(dx[i:i + 1], dx_i, rtol=1e-12, atol=1e-12, err_msg=f"conv dx, image {i}")
            dw_sum += dw_i
            db_sum += db_i
    np.testing.assert_allclose(dw, dw_sum, rtol=1e-10, atol=1e-10, err_msg="conv dw of a batch != sum over images")
    np.testing.assert_allclose(db, db_sum, rtol=1e-10, atol=1e-10, err_msg="conv db of a batch != sum over images")


@pytest.mark.parametrize("kernel_impl", KERNELS)
def test_an_empty_batch_gives_empty_outputs_and_zero_parameter_gradients(kernel_impl):
    """N = 0 (e.g. the last, empty slice of a dataset) flows through every op like any batch:
    outputs of shape (0, ...), dx of the input's shape, and dw, db that sum over no images."""
    rng = rng_for(23)
    x, w, b = np.empty((0, 3, 9, 9)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    with kernels.use_kernels(kernel_impl):
        out, cache = F.conv2d_forward(x, w, b, 2, 1)
        assert out.shape == (0, 4, 5, 5)
        dx, dw, db = F.conv2d_backward(out, cache)
        assert dx.shape == x.shape
        assert np.array_equal(dw, np.zeros_like(w)) and np.array_equal(db, np.zeros_like(b))
        for forward, backward in [(F.maxpool2d_forward, F.maxpool2d_backward),
                                  (F.avgpool2d_forward, F.avgpool2d_backward)]:
            pooled, pool_cache = forward(x, 3, 2, 1)
            assert pooled.shape == (0, 3, 5, 5), forward.__name__
            assert backward(pooled, pool_cache).shape == x.shape, backward.__name__
    flat, flat_cache = F.flatten_forward(x)
    assert flat.shape == (0, 3 * 9 * 9)
    assert F.flatten_backward(flat, flat_cache).shape == x.shape


@pytest.mark.parametrize("kernel_impl", KERNELS)
def test_conv_and_pool_are_deterministic(kernel_impl):
    rng = rng_for(13)
    x, w = rng.standard_normal((2, 3, 9, 9)).astype(np.float32), rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    with kernels.use_kernels(kernel_impl):
        runs = []
        for _ in range(2):
            out, cache = F.conv2d_forward(x, w, None, 2, 1)
            dx = F.conv2d_backward(np.ones_like(out), cache)[0]
            pooled, pool_cache = F.maxpool2d_forward(x, 3, 2, 1)
            dpool = F.maxpool2d_backward(np.ones_like(pooled), pool_cache)
            runs.append([out, dx, pooled, dpool])
    for a, b, name in zip(runs[0], runs[1], ["conv out", "conv dx", "maxpool out", "maxpool dx"]):
        assert np.array_equal(a, b), f"{name} differs between two identical calls [{kernel_impl}]"


@pytest.mark.skipif(not kernels.c_extension_available(), reason="C extension not built")
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_c_and_numpy_kernels_agree(dtype, tol):
    with kernels.use_kernels("numpy"):
        expected = _run_all_ops(dtype, seed=4)
    with kernels.use_kernels("c"):
        got = _run_all_ops(dtype, seed=4)
    for op in ("conv2d", "maxpool2d", "avgpool2d"):
        for i, (g, e) in enumerate(zip(got[op], expected[op])):
            np.testing.assert_allclose(g, e, rtol=tol, atol=tol, err_msg=f"{op} result {i}: C vs NumPy kernels")


# ============================================================================ batchnorm statistics

@pytest.mark.parametrize("dims", [1, 2])
def test_batchnorm_running_statistics_follow_pytorch_momentum_and_unbiased_variance(dims):
    forward = F.batchnorm2d_forward if dims == 2 else F.batchnorm1d_forward
    axes = (0, 2, 3) if dims == 2 else (0,)
    rng = rng_for(14)
    channels = 3
    running_mean, running_var = np.zeros(channels), np.ones(channels)
    expected_mean, expected_var = running_mean.copy(), running_var.copy()
    for step, momentum in enumerate([0.1, 0.1, 0.5]):
        x = rng.standard_normal((4, channels, 3, 2) if dims == 2 else (6, channels)) * (step + 1) + step
        forward(x, np.ones(channels), np.zeros(channels), running_mean, running_var, momentum=momentum)
        expected_mean = (1 - momentum) * expected_mean + momentum * x.mean(axis=axes)
        expected_var = (1 - momentum) * expected_var + momentum * x.var(axis=axes, ddof=1)
        np.testing.assert_allclose(running_mean, expected_mean, rtol=1e-12,
                                   err_msg=f"running_mean after step {step} (momentum {momentum})")
        np.testing.assert_allclose(running_var, expected_var, rtol=1e-12,
                                   err_msg=f"running_var after step {step}: must use the unbiased variance")


@pytest.mark.parametrize("dims", [1, 2])
def test_batchnorm_train_normalises_with_batch_statistics_and_eval_with_running_ones(dims):
    forward = F.batchnorm2d_forward if dims == 2 else F.batchnorm1d_forward
    axes = (0, 2, 3) if dims == 2 else (0,)
    bshape = (1, 3, 1, 1) if dims == 2 else (1, 3)
    rng = rng_for(15)
    x = 3 * rng.standard_normal((4, 3, 3, 2) if dims == 2 else (8, 3)) + 5
    gamma, beta = np.array([1.0, 2.0, -1.0]), np.array([0.0, 1.0, 0.5])
    eps = 1e-5
    running_mean, running_var = np.array([1.0, -1.0, 0.0]), np.array([2.0, 0.5, 1.0])
    out, _ = forward(x, gamma, beta, running_mean.copy(), running_var.copy(), training=True, eps=eps)
    xhat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    np.testing.assert_allclose(out, gamma.reshape(bshape) * xhat + beta.reshape(bshape), rtol=1e-10, atol=1e-12,
                               err_msg="training batchnorm must normalise with the biased batch variance")
    frozen_mean, frozen_var = running_mean.copy(), running_var.copy()
    out, _ = forward(x, gamma, beta, running_mean, running_var, training=False, eps=eps)
    expected = gamma.reshape(bshape) * (x - frozen_mean.reshape(bshape)) / np.sqrt(
        frozen_var.reshape(bshape) + eps) + beta.reshape(bshape)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12,
                               err_msg="eval batchnorm must normalise with the running statistics")
    assert np.array_equal(running_mean, frozen_mean) and np.array_equal(running_var, frozen_var), \
        "eval mode must not change the running statistics"


# ============================================================================ dropout

def test_dropout_mask_comes_from_the_seeded_generator_with_inverted_scaling():
    x = rng_for(16).standard_normal((5, 7))
    p = 0.4
    out, cache = F.dropout_forward(x, p, training=True, rng=np.random.default_rng(42))
    keep = np.random.default_rng(42).random(x.shape) >= p      # the documented draw: u >= p keeps
    np.testing.assert_allclose(out, np.where(keep, x / (1 - p), 0.0), rtol=1e-15,
                               err_msg="dropout must keep u >= p and scale survivors by 1/(1-p)")
    dout = rng_for(17).standard_normal(x.shape)
    np.testing.assert_allclose(F.dropout_backward(dout, cache), np.where(keep, dout / (1 - p), 0.0),
                               rtol=1e-15, err_msg="dropout backward must reuse the forward's mask")


def test_dropout_same_seed_same_mask_and_a_moving_generator_gives_new_masks():
    x = np.ones((20, 20))
    a, _ = F.dropout_forward(x, 0.5, rng=np.random.default_rng(1))
    b, _ = F.dropout_forward(x, 0.5, rng=np.random.default_rng(1))
    assert np.array_equal(a, b), "the same seed must give the same mask"
    rng = np.random.default_rng(1)
    first, _ = F.dropout_forward(x, 0.5, rng=rng)
    second, _ = F.dropout_forward(x, 0.5, rng=rng)
    assert not np.array_equal(first, second), "consecutive draws from one Generator must differ"


def test_dropout_keeps_about_one_minus_p_and_preserves_the_mean():
    x = np.ones((200, 100))
    p = 0.3
    out, _ = F.dropout_forward(x, p, rng=np.random.default_rng(3))
    kept = np.mean(out != 0)
    sigma = np.sqrt(p * (1 - p) / x.size)
    assert abs(kept - (1 - p)) < 5 * sigma, f"kept fraction {kept:.4f}, expected {1 - p} +- {5 * sigma:.4f}"
    assert abs(out.mean() - 1.0) < 5 * sigma / (1 - p), f"inverted dropout should keep the mean at 1, got {out.mean()}"


def test_dropout_is_the_identity_in_eval_mode_and_for_p_zero():
    x = rng_for(18).standard_normal((3, 4))
    for kwargs in (dict(p=0.5, training=False), dict(p=0.0, training=True)):
        out, cache = F.dropout_forward(x, rng=None, **kwargs)
        assert np.array_equal(out, x), f"dropout {kwargs} must be the identity"
        dout = rng_for(19).standard_normal(x.shape)
        assert np.array_equal(F.dropout_backward(dout, cache), dout), f"dropout backward {kwargs} must be the identity"


def test_dropout_with_p_one_drops_everything():
    out, cache = F.dropout_forward(np.ones((3, 4)), 1.0, rng=np.random.default_rng(0))
    assert np.all(out == 0) and np.all(np.isfinite(out)), f"p=1 must zero everything (no inf/nan): {out}"
    assert np.all(F.dropout_backward(np.ones((3, 4)), cache) == 0), "p=1 backward must be zero"


# ============================================================================ losses

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_is_stable_for_logits_of_magnitude_1e4(dtype):
    logits = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4]], dtype=dtype)
    loss, dlogits = F.softmax_cross_entropy(logits, np.array([0, 0]))
    # row 0: p = (1, 0, 0), loss 0.  row 1: log-sum-exp = 1e4 + log 2, so -log p_0 = 2e4 + log 2.
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits)), f"overflow: loss {loss}, dlogits {dlogits}"
    np.testing.assert_allclose(loss, (2e4 + np.log(2)) / 2, rtol=1e-6, err_msg="loss for huge logits")
    np.testing.assert_allclose(dlogits, [[0, 0, 0], [-0.5, 0.25, 0.25]], atol=1e-6,
                               err_msg="dlogits for huge logits: (softmax - onehot) / N")


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.5, 1.0])
def test_softmax_cross_entropy_matches_the_label_smoothing_formula(label_smoothing):
    rng = rng_for(20)
    logits, y = 4 * rng.standard_normal((6, 5)), np.array([0, 1, 2, 3, 4, 0])
    n, k = logits.shape
    e = label_smoothing
    # log p computed independently with logaddexp; q = (1 - e) onehot + e / K
    log_p = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    q = np.full((n, k), e / k)
    q[np.arange(n), y] += 1 - e
    expected_loss = np.mean((1 - e) * -log_p[np.arange(n), y] + (e / k) * -log_p.sum(axis=1))
    loss, dlogits = F.softmax_cross_entropy(logits, y, label_smoothing=e)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-12,
                               err_msg=f"loss = mean[(1-e)(-log p_y) + (e/K) sum_k -log p_k], e={e}")
    np.testing.assert_allclose(dlogits, (np.exp(log_p) - q) / n, rtol=1e-10, atol=1e-15,
                               err_msg=f"dlogits = (softmax - q) / N, e={e}")
    np.testing.assert_allclose(dlogits.sum(axis=1), 0, atol=1e-15, err_msg="each row of dlogits sums to 0")


def test_mse_loss_matches_its_formula():
    rng = rng_for(21)
    pred, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    loss, dpred = F.mse_loss(pred, target)
    np.testing.assert_allclose(loss, np.mean((pred - target) ** 2), rtol=1e-14, err_msg="mse = mean of squares")
    np.testing.assert_allclose(dpred, 2 * (pred - target) / pred.size, rtol=1e-14,
                               err_msg="d mse / d pred = 2 (pred - target) / size")

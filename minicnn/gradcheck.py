"""Gradient checking: compare an analytic backward with centered finite differences.

For a function f and an upstream gradient df (the dL/dout a later layer would send back), the
scalar L(x) = sum(f(x) * df) has dL/dx equal to what ``backward(df)`` must return.  Its
centered difference along element i,

    dL/dx_i ~= (L(x + h e_i) - L(x - h e_i)) / (2h),

has error O(h^2) (truncation) + O(eps * |L| / h) (rounding); in float64 with h = 1e-5 both are
far below 1e-7 relative for smooth functions, which is why every check here runs in float64.

Kinks break the check: ReLU at 0, a max-pool window with two equal maxima.  If a perturbation of
size h crosses a kink, the difference quotient is meaningless there.  ``kink_free_input`` makes
inputs whose values are all distinct and far (relative to h) from 0 and from each other.

    numerical_gradient(f, x, df=None, h=1e-5)   -> array like x
    rel_error(a, b)                             -> max|a - b| / max(|a| + |b|)
    check_module(module, x, ...)                -> {'x': err, 'weight': err, ...}
"""
import math
import numbers
import types

import numpy as np

_TINY = np.finfo(np.float64).tiny


def numerical_gradient(f, x, df=None, h=1e-5):
    """Centered-difference gradient of L(x) = sum(f(x) * df) with respect to x.

    f: a function of x returning an array or a scalar; it is called with x itself, which is
       perturbed in place one element at a time (so f may also close over x, as a module's
       forward closes over its live parameters) and restored exactly after each element.
    df: the upstream gradient, same shape as f(x); default ones (the plain gradient of sum f).
    Returns grad (float64, x's shape) with grad[i] = sum((f(x + h e_i) - f(x - h e_i)) * df) / (2h).
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"numerical_gradient: x must be a numpy array (perturbed in place), "
                        f"got {type(x).__name__}")
    if x.dtype != np.float64:
        raise TypeError(f"numerical_gradient: x must be float64: in {x.dtype} a step of h={h} "
                        f"is lost or rounded away (x.shape={x.shape})")
    if not callable(f):
        raise TypeError(f"numerical_gradient: f must be callable, got {type(f).__name__}")
    if isinstance(h, bool) or not isinstance(h, numbers.Real) or not 0 < h < math.inf:
        raise ValueError(f"numerical_gradient: h must be a positive finite step, got {h!r}")
    grad = np.zeros(x.shape, dtype=np.float64)
    upstream = None if df is None else np.asarray(df, dtype=np.float64)
    out_shape = None
    for index in np.ndindex(*x.shape):
        original = x[index]
        try:
            x[index] = original + h
            f_plus = np.array(f(x), dtype=np.float64)      # copy: f may reuse its output buffer
            x[index] = original - h
            f_minus = np.array(f(x), dtype=np.float64)
        finally:
            x[index] = original
        if out_shape is None:                   # first element: f's output fixes the shapes
            out_shape = f_plus.shape
            if upstream is None:
                upstream = np.ones(out_shape)
            elif upstream.shape != out_shape:
                raise ValueError(f"numerical_gradient: df has shape {upstream.shape} but f(x) "
                                 f"has shape {out_shape}")
        if f_plus.shape != out_shape or f_minus.shape != out_shape:
            raise ValueError(f"numerical_gradient: f(x) changed shape from {out_shape} to "
                             f"{f_plus.shape} or {f_minus.shape} at x{list(index)}")
        grad[index] = np.sum((f_plus - f_minus) * upstream) / (2 * h)
    return grad


def rel_error(a, b):
    """max|a - b| / max(|a| + |b|): the largest difference relative to the largest magnitude.

    Normalising by the whole array's scale (not element by element) keeps near-zero entries,
    which carry only rounding noise, from dominating.  0 when both are all zeros.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    scale = np.max(np.abs(a) + np.abs(b))
    return float(np.max(np.abs(a - b)) / max(scale, _TINY))


def kink_free_input(shape, seed=0, scale=1.0):
    """A float64 array of ``shape`` whose values are a random permutation of evenly spaced
    numbers in (-scale, scale): all distinct, none zero.

    With E = size rounded up to even, the values are (k + 1/2 - E/2) * gap for k < size and
    gap = 2*scale/E: neighbours are gap apart and the nearest to 0 is gap/2 away.  Use it as
    the input of a gradient check through ReLU or max-pool: with h much smaller than gap/2 no
    finite-difference step crosses ReLU's kink at 0 or reorders two values of a pooling
    window.  (Kinks deeper in a network, after a conv for instance, are not controlled; in
    float64 they are rarely hit.)
    """
    size = int(np.prod(shape))
    if size == 0 or not scale > 0:
        raise ValueError(f"kink_free_input: needs a non-empty shape and scale > 0, got "
                         f"shape={shape!r}, scale={scale!r}")
    even = size + size % 2
    gap = 2.0 * scale / even
    values = (np.arange(size) + 0.5 - even / 2.0) * gap
    rng = np.random.default_rng(seed)
    return rng.permutation(values).reshape(shape)


# ----------------------------------------------------------------------------- modules

# attribute values that hold code, not state: never searched for arrays
_NOT_STATE = (type, types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType)


def _find_state(module):
    """Every numpy array and numpy Generator reachable from the module's attributes (through
    dicts, lists, tuples and objects' __dict__, such as child modules and caches)."""
    arrays, generators, seen = [], [], set()

    def visit(obj, depth):
        if id(obj) in seen or depth > 8:
            return
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            arrays.append(obj)
        elif isinstance(obj, np.random.Generator):
            generators.append(obj)
        elif isinstance(obj, dict):
            for value in obj.values():
                visit(value, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                visit(value, depth + 1)
        elif hasattr(obj, "__dict__") and not isinstance(obj, _NOT_STATE):
            for value in vars(obj).values():
                visit(value, depth + 1)

    visit(module, 0)
    return arrays, generators


def check_module(module, x, h=1e-5, seed=0, max_elements=2000, directions=3, verbose=True):
    """Check a module's backward (input gradient and every parameter's gradient) numerically.

    The module follows the minicnn.nn API: forward(x), backward(dout) -> dx, and parameters() /
    grads() returning dicts with the same keys of live arrays.  Its parameters must be float64
    (x is copied to float64).  What the check does:

    1. It runs the module in the mode it is in: call ``module.train()`` or ``module.eval()``
       first.  In train mode the function being differentiated must not change between calls,
       so every ``numpy.random.Generator`` reachable from the module's attributes is rewound to
       its starting state before each forward: dropout draws the same mask every time (a fixed
       mask), and the check is of the gradient for that mask.  Batchnorm in train mode uses the
       batch statistics, which is what its backward differentiates.
    2. It draws a fixed random upstream gradient dout ~ N(0, 1) from ``seed``, runs forward(x)
       and backward(dout) once (after zeroing grads(), so accumulating modules work too), and
       copies the analytic gradients.
    3. For each tensor T (the input, then each parameter) it differentiates
       L = sum(forward(x) * dout) by centered differences with step h.  A tensor of at most
       ``max_elements`` elements is checked element by element; a larger one along
       ``directions`` random unit directions v, comparing (L(T + h v) - L(T - h v)) / (2h)
       with sum(grad_T * v) (the directional derivative), and reporting the worst.
    4. When it ends, every array found in step 1 (parameters, running statistics, ...) holds
       the values it had before the check, except grads(), which hold the analytic gradients
       of step 2; the generators are rewound to where they were.

    Returns {name: relative error} with 'x' for the input gradient (left out when backward
    returns None) and the parameter names; prints a table when ``verbose``.  The table also
    shows max |grad|: a gradient that is exactly zero in theory (a conv bias before a
    training-mode batchnorm) is roundoff on both sides, and its relative error means nothing.
    """
    for name, value in (("max_elements", max_elements), ("directions", directions)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"check_module: {name} must be a positive int (with 0 nothing would "
                             f"be checked), got {value!r}")
    if not (hasattr(module, "parameters") and hasattr(module, "backward")):
        raise TypeError(f"check_module: module must follow the minicnn.nn API (forward, backward, "
                        f"parameters, grads), got {type(module).__name__}")
    x = np.array(x, dtype=np.float64)                            # our own copy, perturbed freely
    params = module.parameters()
    for name, p in params.items():
        if not (isinstance(p, np.ndarray) and p.dtype == np.float64):
            raise ValueError(f"check_module: parameter {name!r} must be a float64 numpy array "
                             f"(got {getattr(p, 'dtype', type(p).__name__)}, "
                             f"shape {getattr(p, 'shape', None)}); build the module in float64")

    arrays, generators = _find_state(module)
    grad_ids = {id(g) for g in module.grads().values()}
    saved_arrays = [(a, a.copy()) for a in arrays if id(a) not in grad_ids and a.flags.writeable]
    saved_states = [(g, g.bit_generator.state) for g in generators]

    def forward(inp):
        for generator, state in saved_states:
            generator.bit_generator.state = state
        return np.array(module.forward(inp), dtype=np.float64)

    rng = np.random.default_rng(seed)
    try:
        out = forward(x)
        dout = rng.standard_normal(out.shape)
        for g in module.grads().values():
            if isinstance(g, np.ndarray) and g.flags.writeable:
                g[...] = 0
        dx = module.backward(dout.copy())
        analytic = {} if dx is None else {"x": np.array(dx, dtype=np.float64)}
        grads = module.grads()
        for name in params:
            analytic[name] = np.array(grads[name], dtype=np.float64)

        targets = ([("x", x)] if dx is not None else []) + list(params.items())
        results, rows = {}, []
        for name, tensor in targets:
            if tensor.size <= max_elements:
                numeric = numerical_gradient(lambda _: forward(x), tensor, dout, h)
                err, how = rel_error(analytic[name], numeric), "every element"
            else:
                err = _directional_error(forward, x, tensor, analytic[name], dout, h, rng, directions)
                how = f"{directions} directions"
            results[name] = err
            rows.append((name, tuple(tensor.shape), how, np.max(np.abs(analytic[name]), initial=0.0), err))
    finally:
        for array, copy in saved_arrays:
            array[...] = copy
        for generator, state in saved_states:
            generator.bit_generator.state = state

    if verbose:
        print(f"{'tensor':<24} {'shape':<20} {'checked':<16} {'max |grad|':<12} rel error")
        for name, shape, how, magnitude, err in rows:
            print(f"{name:<24} {str(shape):<20} {how:<16} {magnitude:<12.3e} {err:.3e}")
    return results


def _directional_error(forward, x, tensor, grad, dout, h, rng, directions):
    """Worst relative error of d/dt L(T + t v) at t = 0 over random unit directions v."""
    original = tensor.copy()
    worst = 0.0
    for _ in range(directions):
        v = rng.standard_normal(tensor.shape)
        v /= np.linalg.norm(v)
        try:
            tensor += h * v
            loss_plus = np.sum(forward(x) * dout)
            tensor[...] = original - h * v
            loss_minus = np.sum(forward(x) * dout)
        finally:
            tensor[...] = original
        numeric = (loss_plus - loss_minus) / (2 * h)
        worst = max(worst, rel_error(np.sum(grad * v), numeric))
    return worst

"""Winograd convolution F(2x2, 3x3) (Lavin & Gray, 2016): 3x3 kernels, stride 1, any padding.

Each 2x2 block ("tile") of outputs is computed from the 4x4 input patch d under it:

    Y = A^T [ sum_c (G g_c G^T) * (B^T d_c B) ] A          (* elementwise, 4x4)

which needs 16 multiplies per tile and channel where the direct formula needs 4 x 9 = 36.
U = G g G^T is the filter transform, V = B^T d B the input transform; for each of the 16
positions (a, b) of the 4x4 matrices the sum over channels is a matrix product
M[a, b] = U[a, b] @ V[a, b], (F, C) @ (C, tiles).  The backward pass applies the transposes
of these linear maps in reverse order.

The C kernels (csrc/winograd_tmpl.h) run the transforms and the 16 products image by image;
this module holds the matrices, the filter transforms they take from Python, and
``conv2d_winograd`` / ``conv2d_winograd_backward``: the whole algorithm in NumPy, to read beside
the C code (tests check both against the direct convolution).
"""
import numpy as np

BT = np.array([[1, 0, -1, 0],
               [0, 1, 1, 0],
               [0, -1, 1, 0],
               [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0],
              [0.5, 0.5, 0.5],
              [0.5, -0.5, 0.5],
              [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0],
               [0, 1, -1, -1]], dtype=np.float64)


def filter_transform(w):
    """U[a, b, f, c] = (G w[f, c] G^T)[a, b] for w (F, C, 3, 3), as a contiguous (16, F, C).

    Computed as two matrix products over all F*C kernels at once (einsum took 4x longer)."""
    g = G.astype(w.dtype)
    f, c = w.shape[:2]
    kernels = np.ascontiguousarray(w.transpose(2, 3, 0, 1)).reshape(3, 3 * f * c)   # [i, (j, f, c)]
    gw = (g @ kernels).reshape(4, 3, f * c)             # (G w)[a, j] for every kernel
    return (g @ gw).reshape(16, f, c)                   # U[a, b] = sum_j (G w)[a, j] G[b, j]


def filter_transform_adjoint(du):
    """dL/dw (F, C, 3, 3) from dL/dU (16, F, C): dw[f, c] = G^T dU[:, :, f, c] G."""
    g = G.astype(du.dtype)
    f, c = du.shape[1:]
    gt_du = (g.T @ du.reshape(4, 4 * f * c)).reshape(3, 4, f * c)      # (G^T dU)[i, b]
    dw = g.T @ gt_du                                    # dw[i, j] = sum_b (G^T dU)[i, b] G[b, j]
    return np.ascontiguousarray(dw.reshape(3, 3, f, c).transpose(2, 3, 0, 1))


def _tiles(x, padding, tiles_y, tiles_x):
    """The 4x4 input patches (N, C, TY, TX, 4, 4) of every tile, as a view of a padded copy."""
    n, c, h, w = x.shape
    ph, pw = padding
    x_pad = np.zeros((n, c, 2 * tiles_y + 2, 2 * tiles_x + 2), x.dtype)
    x_pad[:, :, ph:ph + h, pw:pw + w] = x[:, :, :2 * tiles_y + 2 - ph, :2 * tiles_x + 2 - pw]
    s = x_pad.strides
    return np.lib.stride_tricks.as_strided(
        x_pad, (n, c, tiles_y, tiles_x, 4, 4), (s[0], s[1], 2 * s[2], 2 * s[3], s[2], s[3]),
        writeable=False)


def _geometry(x_shape, padding):
    out_h, out_w = x_shape[2] + 2 * padding[0] - 2, x_shape[3] + 2 * padding[1] - 2
    return out_h, out_w, (out_h + 1) // 2, (out_w + 1) // 2


def conv2d_winograd(x, w, b, padding):
    """out (N, F, OH, OW) of a 3x3, stride-1 convolution, by F(2x2, 3x3); padding (PH, PW)."""
    out_h, out_w, ty, tx = _geometry(x.shape, padding)
    bt, at = BT.astype(x.dtype), AT.astype(x.dtype)
    u = filter_transform(w).reshape(4, 4, *w.shape[:2])                          # (4, 4, F, C)
    v = np.einsum("ai,ncyxij,bj->abncyx", bt, _tiles(x, padding, ty, tx), bt, optimize=True)
    m = np.einsum("abfc,abncyx->abnfyx", u, v, optimize=True)                   # 16 products
    y = np.einsum("ia,abnfyx,jb->nfyixj", at, m, at, optimize=True)             # (N, F, TY, 2, TX, 2)
    out = y.reshape(x.shape[0], w.shape[0], 2 * ty, 2 * tx)[:, :, :out_h, :out_w]
    return out if b is None else out + b[:, None, None]


def conv2d_winograd_backward(dout, x, w, padding):
    """(dx, dw, db) of conv2d_winograd: the adjoint of each of its steps, in reverse order."""
    n, c, h, wd = x.shape
    f = w.shape[0]
    out_h, out_w, ty, tx = _geometry(x.shape, padding)
    bt, at = BT.astype(x.dtype), AT.astype(x.dtype)
    u = filter_transform(w).reshape(4, 4, f, c)
    v = np.einsum("ai,ncyxij,bj->abncyx", bt, _tiles(x, padding, ty, tx), bt, optimize=True)
    dy = np.zeros((n, f, 2 * ty, 2 * tx), x.dtype)
    dy[:, :, :out_h, :out_w] = dout
    dm = np.einsum("ia,nfyixj,jb->abnfyx", at, dy.reshape(n, f, ty, 2, tx, 2), at, optimize=True)
    du = np.einsum("abnfyx,abncyx->abfc", dm, v, optimize=True)
    dv = np.einsum("abfc,abnfyx->abncyx", u, dm, optimize=True)
    dd = np.einsum("ai,abncyx,bj->ncyxij", bt, dv, bt, optimize=True)           # (N, C, TY, TX, 4, 4)
    dx_pad = np.zeros((n, c, 2 * ty + 2, 2 * tx + 2), x.dtype)
    for i in range(4):                      # patches overlap: add them one offset at a time
        for j in range(4):
            dx_pad[:, :, i:i + 2 * ty:2, j:j + 2 * tx:2] += dd[..., i, j]
    ph, pw = padding
    dx = np.zeros_like(x)
    rows, cols = min(h, 2 * ty + 2 - ph), min(wd, 2 * tx + 2 - pw)
    dx[:, :, :rows, :cols] = dx_pad[:, :, ph:ph + rows, pw:pw + cols]
    dw = filter_transform_adjoint(du.reshape(16, f, c))
    return dx, dw, dout.sum(axis=(0, 2, 3))

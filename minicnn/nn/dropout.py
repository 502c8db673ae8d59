"""Inverted dropout; the formula is ``minicnn.functional.dropout_forward``."""
from minicnn import functional as F
from minicnn.init import as_generator
from minicnn.nn._args import probability
from minicnn.nn.module import Module


class Dropout(Module):
    """Training: zero each value with probability p, scale survivors by 1/(1-p). Eval: identity.

    The layer owns its random stream: ``rng`` is a numpy Generator or an int seed (None draws an
    unseeded one; models pass seeded generators). ``generators()`` exposes it for checkpoints.
    """

    def __init__(self, p=0.5, *, rng=None):
        super().__init__()
        self.p = probability(p, "p", "Dropout")
        self.rng = as_generator(rng)

    def forward(self, x):
        out, self._cache = F.dropout_forward(x, self.p, training=self.training, rng=self.rng)
        return out

    def backward(self, dout):
        return F.dropout_backward(dout, self._take_cache())

    def extra_repr(self):
        return f"p={self.p}"

    def config_args(self):
        return {"p": self.p}

"""The one initialisation both model families use for parameters trained from scratch."""
from __future__ import annotations

import warnings
from typing import Sequence

import mxnet as mx


class ScratchInit(mx.init.Xavier):
    """He (MSRA) initialisation, Gaussian with variance 2 / fan-in, for weights; zeros for vectors.

    MXNet's default, ``Uniform(0.07)``, is too wide for the 2048-4608-input convolutions of deep ResNet stages
    and too narrow for the stem; with BatchNorm after each, the former shrinks the effective step size there.
    Vectors: Gluon hands a parameter without an initialiser of its own the default one whatever its shape, and
    the biases of the convolutions GluonCV builds as symbols (FPN's lateral and output convs) have none.
    """

    def __init__(self) -> None:
        super().__init__(rnd_type="gaussian", factor_type="in", magnitude=2)

    def _init_weight(self, name: str, arr: mx.nd.NDArray) -> None:
        if len(arr.shape) < 2:
            arr[:] = 0
        else:
            super()._init_weight(name, arr)


def initialize_params(params: mx.gluon.ParameterDict, ctx: Sequence[mx.Context], force: bool = True) -> None:
    """Initialise ``params`` on ``ctx`` with :class:`ScratchInit`; parameters that carry their own
    initialiser (GluonCV's head layers, BatchNorm scale/shift/statistics, biases) keep it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "already initialised" when ``force`` re-initialises
        params.initialize(ScratchInit(), ctx=list(ctx), force_reinit=force)

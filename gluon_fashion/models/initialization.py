"""The one initialisation both model families use for parameters trained from scratch."""
from __future__ import annotations

import warnings
from typing import Sequence

import mxnet as mx


def scratch_initializer() -> mx.init.Initializer:
    """He (MSRA) initialisation: Gaussian, variance 2 / fan-in, for ReLU networks trained from random weights.

    MXNet's default, ``Uniform(0.07)``, is too wide for the 2048-4608-input convolutions of deep ResNet stages
    and too narrow for the stem; with BatchNorm after each, the former shrinks the effective step size there.
    """
    return mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)


def initialize_params(params: mx.gluon.ParameterDict, ctx: Sequence[mx.Context], force: bool = True) -> None:
    """Initialise ``params`` on ``ctx`` with :func:`scratch_initializer`; parameters that carry their own
    initialiser (GluonCV's head layers, BatchNorm scale/shift/statistics, biases) keep it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "already initialised" when ``force`` re-initialises
        params.initialize(scratch_initializer(), ctx=list(ctx), force_reinit=force)

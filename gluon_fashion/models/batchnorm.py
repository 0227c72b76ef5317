"""Switching a network's BatchNorm layers between learning their statistics and using the stored ones."""
from __future__ import annotations

from typing import List

from mxnet.gluon import SymbolBlock, nn

from ..compat import set_batchnorm_global_stats, set_symbol_batchnorm_global_stats


def batchnorm_layers(net: nn.Block) -> List[nn.BatchNorm]:
    """Every BatchNorm block inside ``net`` (SyncBatchNorm included: it subclasses BatchNorm)."""
    found: List[nn.BatchNorm] = []

    def collect(block: nn.Block) -> None:
        if isinstance(block, nn.BatchNorm):
            found.append(block)

    net.apply(collect)
    return found


def freeze_batchnorm(net: nn.Block) -> int:
    """Use running statistics in every BatchNorm and stop training their scale/shift; returns how many."""
    layers = batchnorm_layers(net)
    for layer in layers:
        set_batchnorm_global_stats(layer, True)
        for param in layer.params.values():
            param.grad_req = "null"
    return len(layers)


def learn_batchnorm_statistics(net: nn.Block) -> int:
    """Make every BatchNorm normalise with batch statistics in training (and update its running ones), as
    when training from scratch; returns how many, the BatchNorm nodes of SymbolBlocks (GluonCV's FPN
    backbones) included. Call before hybridising: the flag is baked into the graph."""
    layers = batchnorm_layers(net)
    for layer in layers:
        set_batchnorm_global_stats(layer, False)
    symbol_blocks: List[SymbolBlock] = []
    net.apply(lambda block: symbol_blocks.append(block) if isinstance(block, SymbolBlock) else None)
    return len(layers) + sum(set_symbol_batchnorm_global_stats(block, False) for block in symbol_blocks)

"""tracegrad.nn: neural-network modules, init and functional ops, shaped like torch.nn.

    import tracegrad.nn as nn
    model = nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Linear(16, 1))
    print(model)                          # Sequential((0): Linear(in_features=4, ...) ...)
"""
from ..surface import missing as _missing
from . import functional, init, parallel, utils
from .containers import ModuleDict, ModuleList, Sequential
from .conv import AdaptiveAvgPool2d, AvgPool2d, Conv2d, MaxPool2d
from .layers import (GELU, CrossEntropyLoss, Dropout, Embedding, Flatten, Identity, L1Loss, LeakyReLU, Linear,
                     LogSoftmax, MSELoss, NLLLoss, ReLU, Sigmoid, SiLU, Softmax, Tanh, Unflatten)
from .module import Module, Parameter
from .activations import ELU, GLU, Hardsigmoid, Hardswish, Hardtanh, LogSigmoid, Mish, ReLU6, Softplus, Softsign
from .attention import MultiheadAttention
from .losses import BCELoss, BCEWithLogitsLoss, HuberLoss, KLDivLoss, SmoothL1Loss
from .param_containers import ParameterDict, ParameterList
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .transformer import (Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
                          TransformerEncoderLayer)
from .parallel import DataParallel
from .norm import BatchNorm1d, BatchNorm2d, LayerNorm, RMSNorm

__all__ = ["Module", "Parameter", "Sequential", "ModuleList", "ModuleDict", "Linear", "Embedding", "LayerNorm",
           "RMSNorm", "BatchNorm1d", "BatchNorm2d", "Dropout", "GELU", "SiLU", "ReLU", "LeakyReLU", "Tanh",
           "Sigmoid", "Softmax", "LogSoftmax", "Identity", "Flatten", "Unflatten", "Conv2d", "MaxPool2d",
           "AvgPool2d", "AdaptiveAvgPool2d", "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss",
           "DataParallel", "ELU", "GLU", "Hardsigmoid", "Hardswish", "Hardtanh", "LogSigmoid", "Mish", "ReLU6",
           "Softplus", "Softsign", "MultiheadAttention", "BCELoss", "BCEWithLogitsLoss", "HuberLoss", "KLDivLoss",
           "SmoothL1Loss", "ParameterDict", "ParameterList", "GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNCell",
           "Transformer", "TransformerDecoder", "TransformerDecoderLayer", "TransformerEncoder",
           "TransformerEncoderLayer", "functional", "init", "parallel", "utils"]


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    raise _missing("tracegrad.nn", name, [n for n in globals() if not n.startswith("_")])

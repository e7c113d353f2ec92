"""lstm_ext: fused CPU and CUDA LSTM layers for PyTorch, numerically those of torch.nn.LSTM."""

from lstm_ext import reference
from lstm_ext.functional import forward
from lstm_ext.isa import cpu_isa, select_cpu_isa, supported_cpu_isas
from lstm_ext.memory import apply_limit_from_environment, empty_cache, memory_stats
from lstm_ext.module import LSTM
from lstm_ext.ops import cuda_available, lstm_layer
from lstm_ext.streaming import StreamingLSTM

__all__ = [
    "LSTM",
    "StreamingLSTM",
    "forward",
    "lstm_layer",
    "cuda_available",
    "cpu_isa",
    "supported_cpu_isas",
    "select_cpu_isa",
    "empty_cache",
    "memory_stats",
    "reference",
]
__version__ = "0.1.0"

apply_limit_from_environment()

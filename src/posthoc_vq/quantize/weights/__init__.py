"""Post-training weight quantization: INT8 / INT4 quantizers, real packing, the packed file."""

from posthoc_vq.quantize.weights.artifact import load_packed, save_packed
from posthoc_vq.quantize.weights.folding import fold_batchnorm
from posthoc_vq.quantize.weights.network import QuantizedNetwork, output_axis, quantizable_layers, quantize_network
from posthoc_vq.quantize.weights.packing import pack, packed_size, unpack
from posthoc_vq.quantize.weights.qtensor import QTensor
from posthoc_vq.quantize.weights.quantizer import IntQuantizer

__all__ = [
    "IntQuantizer", "QTensor", "QuantizedNetwork", "fold_batchnorm", "load_packed", "output_axis", "pack", "packed_size",
    "quantizable_layers", "quantize_network", "save_packed", "unpack",
]

"""Fake quantization of timm vision transformers: ``quantize_`` then ``calibration``."""

from psaq.quant.config import QuantConfig
from psaq.quant.observers import OBSERVERS
from psaq.quant.quantize import calibrate, calibration, is_quantized, quantize_, require_calibrated, uncalibrated



def quantized_copy(model, config: QuantConfig, images, device, batch_size: int = 64):
    """A calibrated fake-quantized copy; the float model is left untouched."""
    import copy

    return calibrate(quantize_(copy.deepcopy(model), config), images, batch_size=batch_size, device=device)


__all__ = ["quantized_copy", "OBSERVERS", "QuantConfig", "calibrate", "calibration", "is_quantized", "quantize_", "require_calibrated", "uncalibrated"]

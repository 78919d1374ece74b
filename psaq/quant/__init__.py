"""Fake quantization of timm vision transformers: ``quantize_`` then ``calibration``."""

from psaq.quant.config import QuantConfig
from psaq.quant.observers import OBSERVERS
from psaq.quant.quantize import calibrate, calibration, is_quantized, quantize_, require_calibrated, uncalibrated

__all__ = ["OBSERVERS", "QuantConfig", "calibrate", "calibration", "is_quantized", "quantize_", "require_calibrated", "uncalibrated"]

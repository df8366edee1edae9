"""Numeric precision of the training step and of inference: moved to :mod:`suprem_auto.utils.precision` (one
detection below both training and inference); re-exported here for existing imports."""
from suprem_auto.utils.precision import (INFERENCE_PRECISIONS, NATIVE_BF16_FLAGS, autocast_context,  # noqa: F401
                                         choose_precision, inference_precision, native_cpu_bf16, read_cpu_flags,
                                         to_memory_format, torch_cpu_bf16_supported, use_channels_last)

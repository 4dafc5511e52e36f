"""The library's calls behind the command line, in one place: encode_file (encoder.py),
decode_file and inspect (decoder.py), and the pieces tools and tests reach for.

The codec itself lives along its data path: video.py (I/O) -> model.py, quantizer.py (the float
network, training) -> exact.py (the exact networks) -> motion.py (prediction) -> entropy.py
(context model and coder) -> bitstream.py (bytes) -> reconstruct.py (the shared decoding loop) ->
encoder.py / decoder.py.
"""
from __future__ import annotations

from .decoder import (DecodeReport, SegmentDecoder, decode_bytes, decode_file, decoded_frames,  # noqa: F401
                      frames_from_bytes, inspect, inspect_header)
from .encoder import (DEFAULT_BATCH, DEFAULT_QUALITY, DEFAULT_SEGMENT_FRAMES, LAMBDA, TARGET_FROM,  # noqa: F401
                      EncodeReport, SegmentCoder, encode_file, encode_frames, fit_model_tables, pad_planes, target_steps)
from .files import atomic_output, check_output, resolve_device  # noqa: F401
from .modelfile import inspect_model  # noqa: F401
from .reconstruct import (PREDICTION_STEPS, QUALITY_LEVELS, stages_for_quality, step_for_quality,  # noqa: F401
                          to_frames)

__all__ = ["DecodeReport", "SegmentDecoder", "decode_bytes", "decode_file", "decoded_frames", "frames_from_bytes",
           "inspect", "inspect_header", "DEFAULT_BATCH", "DEFAULT_QUALITY", "DEFAULT_SEGMENT_FRAMES", "LAMBDA",
           "TARGET_FROM", "EncodeReport", "SegmentCoder", "encode_file", "encode_frames", "fit_model_tables",
           "pad_planes", "target_steps", "atomic_output", "check_output", "resolve_device", "inspect_model",
           "PREDICTION_STEPS", "QUALITY_LEVELS", "stages_for_quality", "step_for_quality", "to_frames"]

"""INT8 post-training quantization of classifiers with real or synthetic calibration images.

``sources``: calibration sets (real, student, teacher, noise, noise-pixel, uniform, a folder).
``ptq``: OpenVINO conversion, ``nncf.quantize`` (optionally with accuracy control), accuracy and
throughput. ``train``: training the zoo classifiers (``distilgan train-classifier``).
OpenVINO and NNCF come with ``pip install distilgan[deploy]``; they are imported only when used.
"""

from distilgan.calibration.sources import BUILTIN_SOURCES, CalibrationSet, calibration_set

__all__ = ["BUILTIN_SOURCES", "CalibrationSet", "calibration_set"]

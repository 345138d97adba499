"""Run an exported pipeline (``vehicle-cls export --format onnx``) with numpy, pillow and onnxruntime
only: no torch. ``Pipeline.load(EXPORT_DIR)(images)`` gives the same ``Result`` objects as
``vehicle_cls.Pipeline`` (``pip install vehicle-cls[onnx]`` without torch is enough)."""

from vehicle_cls.onnx.pipeline import Pipeline

__all__ = ["Pipeline"]

"""Export for other runtimes: the classifier (ONNX, TorchScript), the detector (ONNX) and the whole
pipeline as one directory that ``vehicle_cls.onnx`` runs without torch.

onnx/onnxruntime are imported only when an export or a check runs (``pip install vehicle-cls[export]``).
"""

from vehicle_cls.export.classifier import FORMATS, ExportCheck, check_export, export_classifier, import_onnx, run_export

__all__ = ["FORMATS", "ExportCheck", "check_export", "export_classifier", "import_onnx", "run_export"]

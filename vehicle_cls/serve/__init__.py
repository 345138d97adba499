"""HTTP inference service (``vehicle-cls serve``): FastAPI app + a request batcher.

``batcher`` is plain asyncio (no web framework); ``app`` imports FastAPI, so it needs the
``serve`` extra (``pip install vehicle-cls[serve]``). Nothing here is imported by ``import vehicle_cls``.
"""

"""The Keras trainer: ``model.backend: keras`` in a training recipe (``vehicle-cls train``).

The same recipe, splits (``train/splits.py``), run directory, history, non-finite rules and reports
as the torch trainer; the model is a ``keras.applications`` backbone with a Dropout + Dense head,
fed through ``tf.data``, and ``best/`` is a ``KerasBackend`` bundle. TensorFlow is imported only
when a Keras run starts (``import vehicle_cls`` never imports it).
"""

from __future__ import annotations

from typing import Any


def train(cfg: Any, **kwargs: Any) -> Any:
    """Train per ``cfg`` with Keras; see ``vehicle_cls.train.keras.trainer.KerasTrainer``."""
    from vehicle_cls.train.keras.trainer import train as _train

    return _train(cfg, **kwargs)


__all__ = ["train"]

"""Classifiers trained the Keras way behind the bundle interface: ``settings`` (the config.json section),
``preprocessing`` (keras.applications ``preprocess_input`` on numpy), ``loading`` (TensorFlow imported
lazily, model files read with clear errors) and ``backend`` (``KerasBackend``). Importing this package
does not import TensorFlow."""

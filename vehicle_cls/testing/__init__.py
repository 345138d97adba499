"""Fixtures for tests, benchmarks and examples, kept out of the runtime packages: deterministic
synthetic detectron2 weights (``synthetic``) that stand in for the model zoo's, which may not be shipped."""

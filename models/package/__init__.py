"""Packaging models: the MLflow pyfunc bundle, tracking, the registry and promotion."""

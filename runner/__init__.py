"""runner: declarative, config-driven PyTorch experiments logged to MLflow."""

__version__ = "0.1.0"

"""Puente: one OpenAI-compatible endpoint for local vLLM models, cloud vendors and personas."""

from server.app import create_app
from server.config import Config, ConfigError, Settings, load_config

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "Settings", "__version__", "create_app", "load_config"]

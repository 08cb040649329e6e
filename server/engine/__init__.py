"""The local engine: its supervised process and the embedded default model."""

"""initbench: measure which weight initialisation keeps a network trainable."""

__version__ = "0.1.0"

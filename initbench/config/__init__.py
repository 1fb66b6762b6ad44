"""Torch-free configuration: the spec, its runs, and every catalogue a spec names."""

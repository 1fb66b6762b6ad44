"""The networks: instrumented models and the watched-layer protocol."""

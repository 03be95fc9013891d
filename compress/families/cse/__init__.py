"""Continuous Surface Embeddings (DensePose CSE): a per-pixel 16-D embedding matched to mesh-vertex embeddings."""

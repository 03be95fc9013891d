"""The CSE family (Continuous Surface Embeddings): each pixel of a person crop to a vertex of a template mesh."""

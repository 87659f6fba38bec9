"""Scores for generated images: the built-in attribute classifier (prompt fidelity and
Frechet distance in its features)."""

"""Evaluation: the seed's figures, an attribute judge, and the metrics built on it."""

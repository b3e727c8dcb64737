"""Collect, clean, deduplicate and split custom image datasets (TensorFlow-free)."""

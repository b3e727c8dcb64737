"""Collect, clean, deduplicate and split custom image datasets (TensorFlow-free)."""

import logging

# A library logs; the application decides where to (without a handler Python would print warnings).
logging.getLogger(__name__).addHandler(logging.NullHandler())

"""Network-facing helpers: which addresses may be probed, and how fast."""

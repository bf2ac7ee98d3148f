"""Thin Ray layers (Data, Train, Serve) over the plain-Python domain code."""

"""The extractor: one structured extraction per finished conversation (see handler.py)."""

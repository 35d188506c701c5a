"""Adapters: each owns its prompt format, its whole-reply parse and its incremental field parser."""

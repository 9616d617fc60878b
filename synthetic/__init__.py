"""Synthetic datasets with known answers (the needle videos), importing only the runtime."""

"""Engines behind one small interface; backends import lazily."""
from .base import Engine

__all__ = ["Engine"]

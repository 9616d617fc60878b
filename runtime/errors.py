"""Errors the runtime raises. Each message names the input, what is wrong and what to do."""


class DyTokError(Exception):
    """Base class: every error the toolkit raises on bad input or state."""


class VideoError(DyTokError):
    """A video file is missing, corrupt, empty, or has fewer frames than asked."""


class PreprocessError(DyTokError):
    """Frames or preprocessing parameters cannot be turned into patches."""


class BudgetError(DyTokError):
    """Frame weights or token budgets are invalid or cannot be met."""


class ShapeError(DyTokError):
    """Array shapes or dtypes do not match what a function expects."""


class ManifestError(DyTokError):
    """An artifact manifest is missing, from another schema, or does not match its files."""


class EngineError(DyTokError):
    """An engine cannot be loaded or run (missing backend, wrong GPU, wrong manifest)."""


class PromptError(DyTokError):
    """A prompt cannot be built or does not fit the context."""

"""Exceptions with messages meant for people: every one says what is wrong and with what."""
from __future__ import annotations


class PneumoError(Exception):
    """Base class: anything pneumo_core raises on purpose for bad input or a missing resource."""


class ImageLoadError(PneumoError):
    """An image could not be read."""


class EmptyFileError(ImageLoadError):
    pass


class TruncatedImageError(ImageLoadError):
    pass


class NotAnImageError(ImageLoadError):
    pass


class UnsupportedDicomError(ImageLoadError):
    pass


class ImageTooLargeError(ImageLoadError):
    pass


class ImageTooSmallError(ImageLoadError):
    pass


class UnsafeImageError(ImageLoadError):
    """The decoder worker died or ran out of its memory or time on a file: refused."""


class NotARegularFileError(ImageLoadError):
    """A device, FIFO, socket or a link to one: never read."""


class DatasetError(PneumoError):
    """A dataset folder or label file is missing or malformed."""


class ModelError(PneumoError):
    """An unknown architecture or an initialisation that cannot be had."""


class WeightsUnavailableError(ModelError):
    pass


class IncompatibleModelsError(PneumoError):
    """Two models that cannot be compared (e.g. different classes)."""


class CheckpointError(PneumoError):
    """A checkpoint cannot be loaded."""


class UnsafeCheckpointError(CheckpointError):
    pass


class ArchitectureMismatchError(CheckpointError):
    pass


class SourceUnavailableError(PneumoError):
    """A checkpoint source (Hub repo, local folder) cannot be reached or holds nothing."""


class PredictionFileError(PneumoError):
    """A prediction file is malformed."""


class InferenceError(PneumoError):
    """A model could not give a usable answer for an input."""


class NonFiniteOutputError(InferenceError):
    """A model's logits or probabilities hold NaN or infinity."""


class OutputError(PneumoError):
    """An output path cannot be written (a folder where a file is asked, a file where a folder is, no
    permission, a full disk)."""


class LimitError(PneumoError):
    """A request would cost more time or memory than we agree to spend."""

"""User-facing errors: the CLI prints these as one line, the web server answers 4xx."""


class TinyChameleonError(Exception):
    """An error caused by the user's input or environment, with a message meant for them."""


class PromptError(TinyChameleonError, ValueError):
    """A caption prompt that the word tokenizer cannot read."""


class CheckpointError(TinyChameleonError):
    """A checkpoint directory that is missing, incomplete or corrupt."""


class DataError(TinyChameleonError):
    """The MNIST source file cannot be fetched or does not verify."""


class ImageInputError(TinyChameleonError, ValueError):
    """An image file that cannot be read as a picture."""


class ImageTooLargeError(ImageInputError):
    """An image with more pixels than allowed (e.g. a decompression bomb)."""


class ConfigError(TinyChameleonError, ValueError):
    """A run config, sampling setting or flag of the wrong type or out of its range."""


class OutputError(TinyChameleonError):
    """An output location that cannot be written."""


class DeadlineExceeded(TinyChameleonError):
    """Work abandoned because its time limit passed (the server's request timeout)."""


def stop_if_expired(expired, work: str = "work") -> None:
    """Raise DeadlineExceeded when the caller's `expired()` (None: no deadline) says its time limit has passed:
    the one check every decoding loop makes between steps and batches."""
    if expired is not None and expired():
        raise DeadlineExceeded(f"{work} stopped: the time limit passed")


class MemoryFolderError(TinyChameleonError, ValueError):
    """A --memory folder that cannot serve as a memory bank (no manifest, missing files, bad captions)."""

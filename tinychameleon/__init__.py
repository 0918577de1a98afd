"""tinychameleon: one decoder-only transformer over text and image tokens (colored MNIST)."""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so that `import tinychameleon` stays cheap for the CLI's error paths.
    if name == "Pipeline":
        from .pipeline import Pipeline

        return Pipeline
    raise AttributeError(name)

"""The error every checkpoint reader raises (fit checkpoints and SVI states alike)."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed, foreign or of an unsupported version."""

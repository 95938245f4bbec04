"""theraloop: evaluation as a control signal for therapeutic response generation."""

__version__ = "0.1.0"

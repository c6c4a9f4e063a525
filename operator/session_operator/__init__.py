"""session-operator: at most one active Session per target, kept by a Kubernetes operator."""

__version__ = "0.1.0"

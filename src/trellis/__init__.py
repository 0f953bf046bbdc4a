"""trellis: Kubernetes pod networking with policy-based security."""
__version__ = "0.1.0"

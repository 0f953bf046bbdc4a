"""The lab's images: programs that stand in for container images (catalog.py)."""
from __future__ import annotations

import os
import signal


def exit_on_sigterm() -> None:
    """Exit at SIGTERM, as the Go programs these images stand for do (the Go runtime does so by
    default). A container's command is PID 1 of its PID namespace, which a signal without a
    handler never reaches: without this the kubelet would wait the whole grace period. Exit status
    143, the runtime's for a process SIGTERM ended (128 + 15)."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))

"""``make demo`` (``python -m demo``): session-operator against the API emulator.

Part of the repository, not of the installed package: it runs the installed
``session_operator`` against ``kube_emulator`` and the repository's CRD and examples.
"""

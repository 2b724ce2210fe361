"""The store's refusals: one base class, one subclass a reason."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of the store's refusals."""


class RunActiveError(StoreError):
    """A live run holds what the new one would read: a scope of it (``scope``: "scope KEY", or
    "the whole inventory"), or the run itself (``scope`` None: its lease)."""

    def __init__(self, run_id: str, detail: str, scope: str | None = None):
        if scope is None:
            message = f"run {run_id} is active ({detail}); refusing to start another run"
        else:
            message = (
                f"{scope} is being read by run {run_id} ({detail}); refusing to start "
                "another run over it"
            )
        super().__init__(message)
        self.run_id = run_id
        self.scope = scope


class UnknownRunError(StoreError):
    """No ``run_state`` row for that run id."""


class AmbiguousRunError(StoreError):
    """A run id prefix that more than one run id begins with."""


class RunNotActiveError(StoreError):
    """The run is not ``active``; it cannot stage or flush."""


class FlushVerificationError(StoreError):
    """What the run staged is not what ``projects`` holds after the flush."""


class CleanupRefusedError(StoreError):
    """The run is not a completed, flush-verified run."""


class PlanChangedError(StoreError):
    """An approval named a plan that is not the run's blocked plan now."""

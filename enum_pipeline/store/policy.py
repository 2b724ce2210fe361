"""Cleanup policy: the deletion guard and the grace before a missing project is removed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CleanupPolicy(BaseModel):
    """How much one cleanup may remove before it is held back for an operator.

    Like rsync's ``--max-delete``, Argo CD's ``allowEmpty`` and Entra Connect's
    accidental-delete threshold, the guard holds back the *whole* cleanup when any scope trips it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_delete_count: int | None = Field(
        500, ge=0, description="Most removals one cleanup may make in a scope (None: no limit)."
    )
    max_delete_fraction: float | None = Field(
        0.5,
        ge=0,
        le=1,
        description="A cleanup removing this share of a scope or more is held back "
        "(counted against the scope's projects before the run).",
    )
    fraction_min_scope_size: int = Field(
        20, ge=0, description="The share rule applies to scopes holding at least this many."
    )
    allow_empty: bool = Field(
        False, description="Allow a cleanup that would remove every project of a scope."
    )
    missing_runs_before_delete: int = Field(
        1, ge=1, description="Complete runs that must miss a project before it is removed."
    )
    confirm_budget: int = Field(
        1000,
        ge=0,
        description="Most absences one cleanup asks its sources to confirm (a direct look "
        "each); candidates beyond it are kept, unremoved, for a later run.",
    )

    def guard(self, scope_key: str, removals: int, scope_size: int) -> str | None:
        """Why removing ``removals`` of ``scope_size`` projects (the scope's population before
        the run) must wait for approval, if so."""
        if removals <= 0:
            return None
        if not self.allow_empty and removals >= scope_size:
            return (
                f"{scope_key}: would remove all {scope_size} projects of the scope "
                "(allow_empty is off)"
            )
        if self.max_delete_count is not None and removals > self.max_delete_count:
            return (
                f"{scope_key}: would remove {removals} projects, more than "
                f"max_delete_count={self.max_delete_count}"
            )
        if (
            self.max_delete_fraction is not None
            and scope_size >= self.fraction_min_scope_size
            and removals / scope_size >= self.max_delete_fraction
        ):
            return (
                f"{scope_key}: would remove {removals} of {scope_size} projects "
                f"({removals / scope_size:.0%}), at least "
                f"max_delete_fraction={self.max_delete_fraction:.0%}"
            )
        return None

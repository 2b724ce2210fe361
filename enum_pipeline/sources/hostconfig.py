"""What every code host's configuration shares (its base models); each host's own model lives
in its source module, beside the source it builds (``CONFIG``; see ``sources.kinds``).

``token_env`` names an environment variable, it never holds a token; every other key is the
source class's keyword of the same name.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from enum_pipeline.sources.http import is_env_name


class CodeHostConfig(BaseModel):
    """The keys every code host takes; ``source`` is the class the model builds."""

    model_config = ConfigDict(extra="forbid")

    source: ClassVar[type]
    token_env: str | None = None
    request_deadline_seconds: float = Field(
        60.0,
        gt=0,
        description="Wall-clock bound of one HTTP request (headers and body), however slowly "
        "the host answers; a page ends within (max_retries + 1) x this + the wait budget.",
    )
    reserve_requests: int = Field(
        0,
        ge=0,
        description="Stop a listing before the token's rate limit falls to this many requests "
        "(left to other tools); the scope is then incomplete and read again next run.",
    )
    include: list[str] | None = Field(
        None,
        description="Keep only repositories whose path below the owner matches one of "
        "these shell patterns (case-insensitive).",
    )
    exclude: list[str] | None = Field(
        None, description="Leave out repositories whose path matches one of these patterns."
    )
    topics: list[str] | None = Field(
        None, description="Keep only repositories carrying at least one of these topics."
    )

    @field_validator("include", "exclude", "topics")
    @classmethod
    def _no_empty_filter(cls, values: list[str] | None) -> list[str] | None:
        if values is not None and any(not str(v).strip() for v in values):
            raise ValueError("an empty pattern or topic matches nothing useful: remove it")
        return values

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not is_env_name(value):
            # never echo it: a value that is not a variable name may be the token itself
            raise ValueError(
                "must be the name of an environment variable (letters, digits and _, not "
                "starting with a digit) that holds the token, not the token itself (the value "
                "is not shown)"
            )
        return value

    def build(self) -> list[Any]:
        """The one source this entry configures."""
        return [self.source(**self.model_dump(exclude={"kind"}))]


class OwnedCodeHostConfig(CodeHostConfig):
    """A host listed by one organisation or user (GitHub, Gitea)."""

    owner: str = Field(min_length=1)
    owner_type: Literal["org", "user"] = "org"

"""What every source's configuration shares: strict models, ``placement`` (where its runs go,
see docs/DEPLOYMENT.md), the code hosts' keys. Each host's own model lives in its source
module, beside the source it builds (``CONFIG``; see ``sources.kinds``).

``token_env`` names an environment variable, it never holds a token; every other key is the
source class's keyword of the same name.
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from enum_pipeline.sources.http import is_env_name


class StrictConfig(BaseModel):
    """A configuration model that refuses keys it does not know."""

    model_config = ConfigDict(extra="forbid")


#: A Kubernetes node name or label value; a label key (an optional DNS prefix and ``/``, a name).
_K8S_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
_LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"


class Placement(StrictConfig):
    """Where a source's runs go (``placement:``; see docs/DEPLOYMENT.md): a Kubernetes node
    (name or labels) and the Docker networks of its container."""

    node: str | None = Field(
        None, pattern=_K8S_NAME, description="Kubernetes node name (kubernetes.io/hostname)."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Kubernetes node labels the run's pod requires."
    )
    docker_networks: list[str] = Field(
        default_factory=list,
        description="Docker networks the run's container joins besides the launcher's own.",
    )

    @field_validator("node_selector")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            if not re.match(_LABEL_KEY, key):
                raise ValueError(f"{key!r} is not a Kubernetes label key")
            if not re.match(_LABEL_VALUE, value):
                raise ValueError(f"{value!r} (label {key}) is not a Kubernetes label value")
        return labels


class FilesystemPlacement(Placement):
    """A filesystem root's placement: also the folder that holds the root on that host."""

    host_path: str | None = Field(
        None, description="The root's folder on the node or Docker host (default: the root)."
    )

    @field_validator("host_path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not os.path.isabs(value):
            raise ValueError("must be an absolute path")
        return value


def placed(sources: list[Any], placement: Placement | None) -> list[Any]:
    """``sources``, each carrying ``placement`` (read by ``defs.placement``)."""
    for source in sources:
        source.placement = placement  # type: ignore[attr-defined]
    return sources


class CodeHostConfig(StrictConfig):
    """The keys every code host takes; ``source`` is the class the model builds."""

    source: ClassVar[type]
    token_env: str | None = None
    placement: Placement | None = None
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
        return placed(
            [self.source(**self.model_dump(exclude={"kind", "placement"}))], self.placement
        )


class OwnedCodeHostConfig(CodeHostConfig):
    """A host listed by one organisation or user (GitHub, Gitea)."""

    owner: str = Field(min_length=1)
    owner_type: Literal["org", "user"] = "org"

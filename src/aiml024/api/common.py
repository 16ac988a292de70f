"""Shared pieces of every aiml024 object: metadata, conditions and the strict base model."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

GROUP = "aiml024.io"
VERSION = "v1alpha1"
API_VERSION: Final[Literal["aiml024.io/v1alpha1"]] = "aiml024.io/v1alpha1"

# Annotations that carry identity; set by the admission webhook (or the embedded control
# plane), never trusted from what a user writes.
APPLIED_BY = f"{GROUP}/applied-by"  # who created an Experiment: the author of its Models
APPROVE = f"{GROUP}/approve"  # a request to approve a Model for a stage
APPROVALS = f"{GROUP}/approvals"  # the recorded approvals, immutable once written

# RFC 1123 subdomain name, as Kubernetes requires for object names.
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class Strict(BaseModel):
    """Base for spec models: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=_camel,
        populate_by_name=True,
        validate_assignment=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as it is stored and sent to the API server (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ObjectMeta(Strict):
    """The subset of Kubernetes ObjectMeta that aiml024 reads and writes."""

    # Kubernetes owns the rest of metadata (managedFields, finalizers, ...): keep it verbatim.
    model_config = ConfigDict(extra="allow", alias_generator=_camel, populate_by_name=True)

    name: str = Field(max_length=63)
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: datetime | None = None

    @field_validator("name")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        if not _DNS_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid name: use lower-case letters, digits and '-', "
                "starting and ending with a letter or digit"
            )
        return value


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Strict):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str
    status: ConditionStatus
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None


class StatusBase(Strict):
    """Fields every aiml024 status carries, per the Kubernetes API conventions."""

    model_config = ConfigDict(extra="forbid", alias_generator=_camel, populate_by_name=True)

    observed_generation: int | None = None
    phase: str | None = None
    conditions: list[Condition] = Field(default_factory=list)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    observed_generation: int | None = None,
) -> list[Condition]:
    """Return conditions with `type_` set; lastTransitionTime only moves when status changes."""
    previous = next((c for c in conditions if c.type == type_), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=observed_generation,
    )
    return [c for c in conditions if c.type != type_] + [updated]


class ResourceRef(Strict):
    """A reference to a Kubernetes Secret key (for credentials such as SQL passwords)."""

    name: str
    key: str

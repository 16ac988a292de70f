"""Shared pieces of every aiml024 object: metadata, conditions and the strict base model."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

GROUP = "aiml024.io"
VERSION = "v1alpha1"
API_VERSION: Final[Literal["aiml024.io/v1alpha1"]] = "aiml024.io/v1alpha1"
DEFAULT_NAMESPACE = "default"  # where objects without a namespace live, as in kubectl

# Annotations that carry identity; set by the admission webhook (or the embedded control
# plane), never trusted from what a user writes.
APPLIED_BY = f"{GROUP}/applied-by"  # who created an Experiment: the author of its Models
APPROVE = f"{GROUP}/approve"  # a request to approve a Model for a stage
APPROVALS = f"{GROUP}/approvals"  # the recorded approvals, immutable once written
BREAK_GLASS = f"{GROUP}/break-glass"  # a request to break glass: its justification
BREAK_GLASS_RECORDS = f"{GROUP}/break-glass-records"  # the recorded break-glass, immutable

# Labels on what aiml024 creates: which Experiment / Deployment, which generation of it.
EXPERIMENT_LABEL = f"{GROUP}/experiment"
DEPLOYMENT_LABEL = f"{GROUP}/deployment"
GENERATION_LABEL = f"{GROUP}/generation"
# A namespace label that allows `requireStage: any` (see policies/deployment.rego).
ENVIRONMENT_LABEL = f"{GROUP}/environment"

# RFC 1123 subdomain name, as Kubernetes requires for object names; a label for namespaces.
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def dns_problem(value: str, label: bool = False) -> str | None:
    """Why `value` is not a valid object name (RFC 1123 subdomain, at most 253 characters) or,
    with `label`, namespace (RFC 1123 label, at most 63), as the API server checks; None if ok."""
    pattern, limit = (_DNS_LABEL, 63) if label else (_DNS_NAME, 253)
    if len(value) > limit or not pattern.match(value):
        return (
            f"{value!r} is not valid: use at most {limit} lower-case letters, digits and '-'"
            + ("" if label else " or '.'")
            + ", starting and ending with a letter or digit"
        )
    return None


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

    @field_validator("namespace")
    @classmethod
    def _dns_namespace(cls, value: str | None) -> str | None:
        problem = dns_problem(value, label=True) if value is not None else None
        if problem:
            raise ValueError(problem)
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

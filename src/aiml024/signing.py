"""Signed approvals: an approval is an Ed25519 signature, not "who applied the object".

Under Argo CD every object is applied by Argo CD's service account, so the API server's
userInfo identifies nobody. An approval is therefore a statement signed by a person's key:

    aiml024.io/approval/v1\\n{"at":...,"comment":...,"model":...,"namespace":...,"sha256":...,"stage":...}

The key must be listed in the approvers registry (a ConfigMap owned by the risk team in a
cluster, a YAML file locally), which maps key ids to people and groups. Anyone may carry the
signed statement to the cluster (kubectl, Argo CD): it is stored on the Model as one
annotation per key, and the webhook and the operator verify it against the registry and the
Model's artifact digest. An approval binds to the digest it signed: a retrained Model under
the same name needs new signatures.

Pure functions plus small file helpers; no kopf, no Kubernetes client. The caller passes
`now`. Verification never raises on what is in an annotation: it reports why it does not count.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, NamedTuple, cast

import yaml
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from .api import describe_validation_error
from .api.common import API_VERSION, GROUP, Strict, dns_problem
from .api.model import Approval, Stage
from .files import write_atomic

# --- constants -------------------------------------------------------------------------------

DOMAIN: Final = f"{GROUP}/approval/v1"  # the signed bytes start with this line
APPROVAL_ANNOTATION_PREFIX: Final = f"approval.{GROUP}/"  # + the key id's hex part
KEY_ID_PREFIX: Final = "ed25519:"
APPROVABLE_STAGES: Final = ("staging", "production", "archived")

APPROVERS_CONFIGMAP: Final = "aiml024-approvers"
APPROVERS_NAMESPACE: Final = "aiml024-system"
APPROVERS_KEY: Final = "approvers.yaml"  # the ConfigMap data key, and the local file's name

KEYS_DIR_ENV: Final = "AIML024_KEYS_DIR"
APPROVERS_FILE_ENV: Final = "AIML024_APPROVERS_FILE"

MAX_COMMENT: Final = 2000
# How far in the future an approval may be dated (clock skew between machines).
MAX_CLOCK_SKEW: Final = timedelta(minutes=5)

_AT_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
_AT_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_KEY_ID_PATTERN = re.compile(r"^ed25519:[0-9a-f]{16}$")
_SHA256_PATTERN = r"^[0-9a-f]{64}$"
_ANNOTATION_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


class SigningError(Exception):
    """A key, a registry or a statement cannot be used; the message says which and why."""


class KeyFileError(SigningError):
    """A private key file is missing, unreadable or not an Ed25519 key."""


class RegistryError(SigningError):
    """The approvers registry is missing or invalid; the message names the file and entry."""


def format_at(at: datetime) -> str:
    """The one textual form of a statement's time: UTC, whole seconds, `Z`."""
    return at.astimezone(UTC).strftime(_AT_FORMAT)


def _utc_seconds(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must be a timezone-aware time (UTC)")
    return value.astimezone(UTC).replace(microsecond=0)


# --- the statement -----------------------------------------------------------------------------


class ApprovalStatement(Strict):
    """What an approver signs: this Model, in this namespace, with this artifact, for this stage."""

    model_config = ConfigDict(frozen=True)

    model: str = Field(max_length=253)
    namespace: str = Field(max_length=63)
    sha256: str = Field(pattern=_SHA256_PATTERN)
    # Any string here so that a statement with a wrong stage can still be parsed and reported;
    # `sign` refuses it and `verify` does not count it.
    stage: str = Field(max_length=63)
    at: datetime
    comment: str = Field(default="", max_length=MAX_COMMENT)

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if dns_problem(value):
            raise ValueError(f"{value!r} is not a valid Model name")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if dns_problem(value, label=True):
            raise ValueError(f"{value!r} is not a valid namespace")
        return value

    @field_validator("at")
    @classmethod
    def _at(cls, value: datetime) -> datetime:
        return _utc_seconds(value)

    def statement_fields(self) -> dict[str, str]:
        return {
            "at": format_at(self.at),
            "comment": self.comment,
            "model": self.model,
            "namespace": self.namespace,
            "sha256": self.sha256,
            "stage": self.stage,
        }

    def canonical_bytes(self) -> bytes:
        """The exact bytes signed: a domain line, then canonical JSON (sorted keys, no spaces,
        ASCII only). The domain line keeps the signature from meaning anything else; every
        field is inside, so it cannot be replayed for another model, namespace, digest or stage."""
        body = json.dumps(
            self.statement_fields(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        )
        return f"{DOMAIN}\n{body}".encode("ascii")


class SignedApproval(ApprovalStatement):
    """A statement with the id of the key that signed it and the signature (base64). Its
    `canonical_bytes` are the statement's alone: the key id and signature are not signed."""

    key_id: str = Field(max_length=64)
    signature: str = Field(max_length=128)


# --- keys ------------------------------------------------------------------------------------


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def encode_public_key(public_key: Ed25519PublicKey) -> str:
    """The registry's form of a public key: base64 of the raw 32 bytes."""
    return base64.b64encode(public_key_bytes(public_key)).decode("ascii")


def decode_public_key(text: str) -> Ed25519PublicKey:
    """The inverse of `encode_public_key`; ValueError when it is not 32 bytes of base64."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("publicKey is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"publicKey must be 32 bytes (an Ed25519 key), not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(public_key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """`ed25519:` + the first 16 hex digits of the SHA-256 of the raw public key."""
    if isinstance(public_key, Ed25519PrivateKey):
        public_key = public_key.public_key()
    return KEY_ID_PREFIX + hashlib.sha256(public_key_bytes(public_key)).hexdigest()[:16]


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` (never more permissive), refusing to replace a file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; not overwriting it") from None
    except OSError as error:
        raise KeyFileError(f"cannot create {path}: {error.strerror or error}") from None
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits; never added any
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def save_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write `key` as unencrypted PEM PKCS#8, mode 0600; refuse to overwrite. The directory is
    created with mode 0700 when missing."""
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new_file(path, pem, 0o600)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM (PKCS#8) or OpenSSH file, or KeyFileError saying why."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except OSError as error:
        raise KeyFileError(f"cannot read key file {path}: {error.strerror or error}") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
            key: object = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(
            f"key file {path} is encrypted; aiml024 needs an unencrypted key file (mode 0600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(
            f"key file {path} is not a PEM private key (make one with: aiml024 keys create)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(
            f"key file {path} holds a {type(key).__name__.removeprefix('_')}, not an Ed25519 key"
        )
    return key


def default_keys_dir() -> Path:
    """`$AIML024_KEYS_DIR`, else `$XDG_CONFIG_HOME/aiml024/keys`, else `~/.config/aiml024/keys`."""
    env = os.environ.get(KEYS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME")
    base = Path(config).expanduser() if config else Path.home() / ".config"
    return base / "aiml024" / "keys"


def key_file_name(kid: str) -> str:
    """`ed25519-<hex>.pem`: the key id with its colon replaced (portable file names)."""
    return kid.replace(":", "-") + ".pem"


def create_key(keys_dir: Path | None = None) -> tuple[Ed25519PrivateKey, Path]:
    """Generate a key and save it as `<keys dir>/ed25519-<hex>.pem` (dir 0700, file 0600)."""
    directory = Path(keys_dir) if keys_dir is not None else default_keys_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = generate_key()
    path = directory / key_file_name(key_id(key))
    save_private_key(key, path)
    return key, path


class LocalKey(NamedTuple):
    path: Path
    key_id: str | None  # None when the file is not a usable key
    problem: str | None


def local_keys(keys_dir: Path | None = None) -> list[LocalKey]:
    """Every `*.pem` in the keys dir with its key id (read from the key, not the file name)."""
    directory = Path(keys_dir) if keys_dir is not None else default_keys_dir()
    if not directory.is_dir():
        return []
    found: list[LocalKey] = []
    for path in sorted(directory.glob("*.pem")):
        try:
            found.append(LocalKey(path, key_id(load_private_key(path)), None))
        except KeyFileError as error:
            found.append(LocalKey(path, None, str(error)))
    return found


def find_key(ref: str | None, keys_dir: Path | None = None) -> tuple[Ed25519PrivateKey, Path]:
    """The signing key: `ref` is a key file path or a key id (`ed25519:<hex>` or the hex, or a
    unique prefix of it); None means the only key in the keys dir."""
    directory = Path(keys_dir) if keys_dir is not None else default_keys_dir()
    if ref is not None and (Path(ref).expanduser().is_file() or "/" in ref or ref.endswith(".pem")):
        path = Path(ref).expanduser()
        return load_private_key(path), path
    usable = [k for k in local_keys(directory) if k.key_id is not None]
    if ref is None:
        if not usable:
            raise KeyFileError(f"no signing key in {directory}; make one with: aiml024 keys create")
        if len(usable) > 1:
            ids = ", ".join(str(k.key_id) for k in usable)
            raise KeyFileError(f"several keys in {directory} ({ids}); choose one with --key")
        chosen = usable[0]
    else:
        wanted = ref.strip().lower().removeprefix(KEY_ID_PREFIX)
        matches = [
            k for k in usable if str(k.key_id).removeprefix(KEY_ID_PREFIX).startswith(wanted)
        ]
        if not wanted or not matches:
            raise KeyFileError(f"no key {ref!r} in {directory} (see: aiml024 keys list)")
        if len(matches) > 1:
            raise KeyFileError(f"{ref!r} matches several keys in {directory}; give more of the id")
        chosen = matches[0]
    return load_private_key(chosen.path), chosen.path


# --- signing and the annotation form -----------------------------------------------------------


def sign(statement: ApprovalStatement, private_key: Ed25519PrivateKey) -> SignedApproval:
    if statement.stage not in APPROVABLE_STAGES:
        raise SigningError(
            f"cannot approve stage {statement.stage!r}: use staging, production or archived"
        )
    signature = private_key.sign(statement.canonical_bytes())
    return SignedApproval(
        **statement.model_dump(),
        key_id=key_id(private_key),
        signature=base64.b64encode(signature).decode("ascii"),
    )


def annotation_key(kid: str) -> str:
    """`approval.aiml024.io/<hex>`: one annotation per signing key."""
    return APPROVAL_ANNOTATION_PREFIX + kid.removeprefix(KEY_ID_PREFIX)


def is_approval_annotation(key: str) -> bool:
    return key.startswith(APPROVAL_ANNOTATION_PREFIX)


def valid_annotation_key(key: str) -> bool:
    """Kubernetes' rule for annotation keys: an optional DNS-subdomain prefix (<= 253) and `/`,
    then a name of <= 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or dns_problem(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_ANNOTATION_NAME.match(name))


def annotation_value(signed: SignedApproval) -> str:
    """Compact JSON of what is signed, less the model and namespace: those are the object's."""
    fields = signed.statement_fields()
    value = {
        "at": fields["at"],
        "comment": fields["comment"],
        "keyId": signed.key_id,
        "sha256": fields["sha256"],
        "signature": signed.signature,
        "stage": fields["stage"],
    }
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def annotation_for(signed: SignedApproval) -> tuple[str, str]:
    """(annotation key, value) that carry `signed` on its Model."""
    return annotation_key(signed.key_id), annotation_value(signed)


_ANNOTATION_FIELDS = frozenset({"at", "comment", "keyId", "sha256", "signature", "stage"})


def _parse_annotation(key: str, value: str, model_name: str, namespace: str) -> SignedApproval:
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        raise ValueError("the value is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("the value is not a JSON object")
    unknown = sorted(str(k) for k in set(data) - _ANNOTATION_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}")
    missing = sorted(_ANNOTATION_FIELDS - {"comment"} - set(data))
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    for name in _ANNOTATION_FIELDS & set(data):
        if not isinstance(data[name], str):
            raise ValueError(f"{name} must be a string")
    if not _AT_PATTERN.match(data["at"]):
        raise ValueError("at must be a UTC time like 2025-01-31T12:00:00Z")
    if not _KEY_ID_PATTERN.match(data["keyId"]):
        raise ValueError("keyId must look like ed25519:<16 hex digits>")
    if annotation_key(data["keyId"]) != key:
        raise ValueError(f"it carries keyId {data['keyId']}, which belongs under another key")
    try:
        at = datetime.strptime(data["at"], _AT_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError("at is not a valid time") from None
    try:
        return SignedApproval(
            model=model_name,
            namespace=namespace,
            sha256=data["sha256"],
            stage=data["stage"],
            at=at,
            comment=data.get("comment", ""),
            key_id=data["keyId"],
            signature=data["signature"],
        )
    except ValidationError as error:
        raise ValueError("; ".join(describe_validation_error(error))) from None


def signed_approvals_from(
    annotations: Mapping[str, str], model_name: str, namespace: str
) -> list[tuple[SignedApproval | None, str]]:
    """The signed approvals on a Model, one per `approval.aiml024.io/*` annotation, in key
    order: (approval, "") or (None, why the annotation cannot be read). Model and namespace are
    the object's own, so an annotation copied to another Model no longer verifies."""
    found: list[tuple[SignedApproval | None, str]] = []
    for key in sorted(k for k in annotations if isinstance(k, str) and is_approval_annotation(k)):
        value = annotations[key]
        try:
            if not isinstance(value, str):
                raise ValueError("the value is not a string")
            found.append((_parse_annotation(key, value, model_name, namespace), ""))
        except ValueError as error:
            found.append((None, f"annotation {key}: {error}"))
    return found


# --- the approvers registry --------------------------------------------------------------------


class ApproverEntry(Strict):
    """One key the risk team trusts: whose it is, their groups, until when."""

    key_id: str
    user: str = Field(min_length=1, max_length=253)
    groups: list[str] = Field(default_factory=list)
    public_key: str
    expires: datetime | None = None

    @field_validator("expires", mode="before")
    @classmethod
    def _date_is_midnight_utc(cls, value: Any) -> Any:
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # YAML times without a zone are UTC
        return value

    @field_validator("expires")
    @classmethod
    def _expires_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc_seconds(value)

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        if any(not g.strip() for g in value):
            raise ValueError("group names must not be empty")
        return value

    @model_validator(mode="after")
    def _key_matches(self) -> ApproverEntry:
        public = decode_public_key(self.public_key)
        expected = key_id(public)
        if self.key_id != expected:
            raise ValueError(
                f"keyId {self.key_id} does not match publicKey (whose key id is {expected})"
            )
        return self

    def public(self) -> Ed25519PublicKey:
        return decode_public_key(self.public_key)


class ApproverRegistry(Strict):
    """Key id -> person and groups. In a cluster: data key `approvers.yaml` of the ConfigMap
    `aiml024-approvers` in `aiml024-system`, owned by the risk team; locally a YAML file."""

    approvers: list[ApproverEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ApproverRegistry:
        seen: set[str] = set()
        for index, entry in enumerate(self.approvers):
            if entry.key_id in seen:
                raise ValueError(f"approvers[{index}]: duplicate keyId {entry.key_id}")
            seen.add(entry.key_id)
        return self

    def get(self, kid: str) -> ApproverEntry | None:
        return next((e for e in self.approvers if e.key_id == kid), None)


def entry_for(
    private_or_public: Ed25519PrivateKey | Ed25519PublicKey,
    user: str,
    groups: Iterable[str] = (),
    expires: datetime | None = None,
) -> ApproverEntry:
    public = (
        private_or_public.public_key()
        if isinstance(private_or_public, Ed25519PrivateKey)
        else private_or_public
    )
    return ApproverEntry(
        key_id=key_id(public),
        user=user,
        groups=list(groups),
        public_key=encode_public_key(public),
        expires=expires,
    )


def entry_yaml(entry: ApproverEntry) -> str:
    """The entry as a YAML list item, to paste under `approvers:`."""
    return yaml.safe_dump([entry.wire()], sort_keys=False, default_flow_style=False)


def _registry_from_document(document: Any, source: str) -> ApproverRegistry:
    if document is None:
        return ApproverRegistry()
    if not isinstance(document, dict):
        raise RegistryError(f"{source}: must be a mapping with an `approvers:` list")
    unknown = sorted(str(k) for k in document if k != "approvers")
    if unknown:
        raise RegistryError(f"{source}: unknown field(s) {', '.join(unknown)}")
    items = document.get("approvers")
    items = [] if items is None else items
    if not isinstance(items, list):
        raise RegistryError(f"{source}: approvers must be a list")
    entries: list[ApproverEntry] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        label = f"approvers[{index}]"
        if isinstance(item, dict) and isinstance(item.get("keyId"), str):
            label += f" (keyId {item['keyId']})"
        try:
            entry = ApproverEntry.model_validate(item)
        except ValidationError as error:
            problems = "; ".join(describe_validation_error(error))
            raise RegistryError(f"{source}: {label}: {problems}") from None
        except ValueError as error:  # cryptography's, from a malformed key
            raise RegistryError(f"{source}: {label}: {error}") from None
        if entry.key_id in seen:
            raise RegistryError(
                f"{source}: {label}: duplicate keyId, already at approvers[{seen[entry.key_id]}]"
            )
        seen[entry.key_id] = index
        entries.append(entry)
    return ApproverRegistry(approvers=entries)


def parse_registry(text: str, source: str = "<approvers>") -> ApproverRegistry:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RegistryError(f"{source}: not valid YAML: {error}") from None
    return _registry_from_document(document, source)


def load_registry(path: Path) -> ApproverRegistry:
    """The registry in a YAML file, or RegistryError naming the file (and the entry)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryError(f"approvers registry {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RegistryError(f"cannot read approvers registry {path}: {error}") from None
    return parse_registry(text, f"approvers registry {path}")


def registry_from_configmap(data: Mapping[str, str] | None) -> ApproverRegistry:
    """The registry in the `data` of ConfigMap aiml024-system/aiml024-approvers."""
    source = f"ConfigMap {APPROVERS_NAMESPACE}/{APPROVERS_CONFIGMAP}"
    text = (data or {}).get(APPROVERS_KEY)
    if text is None:
        raise RegistryError(f"{source} has no data key {APPROVERS_KEY}")
    return parse_registry(text, f"{source} ({APPROVERS_KEY})")


def default_registry_path(policy_dir: Path) -> Path:
    """`$AIML024_APPROVERS_FILE`, else `<policy dir>/approvers.yaml`."""
    env = os.environ.get(APPROVERS_FILE_ENV)
    return Path(env).expanduser() if env else Path(policy_dir) / APPROVERS_KEY


def register(path: Path, entry: ApproverEntry) -> ApproverRegistry:
    """Add `entry` to the registry file (created when missing), atomically. Refuses a keyId
    already there and an invalid file. The entry is appended as text when that keeps the file
    valid (comments stay); otherwise the file is rewritten."""
    path = Path(path)
    source = f"approvers registry {path}"
    old_text = path.read_text(encoding="utf-8") if path.exists() else ""
    registry = parse_registry(old_text, source)
    if registry.get(entry.key_id) is not None:
        raise RegistryError(f"{source} already lists keyId {entry.key_id}")
    wanted = ApproverRegistry(approvers=[*registry.approvers, entry])
    item = entry_yaml(entry)
    candidates: list[str] = []
    if old_text.strip() and registry.approvers:
        base = old_text if old_text.endswith("\n") else old_text + "\n"
        for indent in (0, 2, 4):
            pad = " " * indent
            candidates.append(base + "".join(pad + line + "\n" for line in item.splitlines()))
    candidates.append(yaml.safe_dump(wanted.wire(), sort_keys=False, default_flow_style=False))
    for text in candidates:
        try:
            if parse_registry(text, source) == wanted:
                write_atomic(path, text)
                return wanted
        except RegistryError:
            continue
    raise RegistryError(f"{source}: cannot add keyId {entry.key_id} and keep the file valid")


# --- verification ----------------------------------------------------------------------------


def verify(
    signed: SignedApproval,
    registry: ApproverRegistry,
    model_name: str,
    namespace: str,
    sha256: str | None,
    now: datetime,
) -> tuple[Approval | None, str | None]:
    """(the approval, None) when `signed` counts for this Model and artifact, else (None, why).
    User and groups come from the registry. Never raises on a malformed or hostile `signed`."""
    try:
        return _verify(signed, registry, model_name, namespace, sha256, now)
    except Exception as error:  # a hostile input must never crash the caller
        return None, f"approval by key {getattr(signed, 'key_id', '?')} is malformed: {error}"


def _verify(
    signed: SignedApproval,
    registry: ApproverRegistry,
    model_name: str,
    namespace: str,
    sha256: str | None,
    now: datetime,
) -> tuple[Approval | None, str | None]:
    kid = signed.key_id
    if signed.stage not in APPROVABLE_STAGES:
        return None, (
            f"approval by key {kid} is for stage {signed.stage!r}, "
            "not staging, production or archived"
        )
    entry = registry.get(kid)
    if entry is None:
        return None, f"approval by key {kid}: the key is not in the approvers registry"
    who = f"{entry.user}'s approval (key {kid})"
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    if entry.expires is not None and now >= entry.expires:
        return None, f"{who}: the key expired at {format_at(entry.expires)}"
    try:
        raw = base64.b64decode(signed.signature, validate=True)
    except (binascii.Error, ValueError):
        return None, f"{who}: the signature is not base64"
    if len(raw) != 64:
        return None, f"{who}: the signature is not an Ed25519 signature"
    try:
        entry.public().verify(raw, signed.canonical_bytes())
    except InvalidSignature:
        return None, (
            f"{who}: bad signature for model {signed.namespace}/{signed.model}, "
            f"stage {signed.stage}: it was altered, copied from another Model, "
            "or not made with this key"
        )
    if (signed.model, signed.namespace) != (model_name, namespace):
        return None, (
            f"{who} was signed for model {signed.namespace}/{signed.model}, "
            f"not {namespace}/{model_name}"
        )
    if sha256 is None:
        return None, f"{who}: model {namespace}/{model_name} has no artifact digest yet"
    if signed.sha256 != sha256:
        return None, (
            f"{who} was signed for artifact sha256:{signed.sha256}, but model {model_name}'s "
            f"artifact is sha256:{sha256}: an approval binds to the digest it signed"
        )
    if signed.at > now + MAX_CLOCK_SKEW:
        return None, f"{who} is dated {format_at(signed.at)}, in the future"
    approval = Approval(
        user=entry.user,
        stage=cast(Stage, signed.stage),
        at=signed.at,
        comment=signed.comment,
        groups=list(entry.groups),
        key_id=kid,
        sha256=signed.sha256,
    )
    return approval, None


def verified_approvals(
    annotations: Mapping[str, str],
    registry: ApproverRegistry,
    model_name: str,
    namespace: str,
    sha256: str | None,
    now: datetime,
) -> tuple[list[Approval], list[str]]:
    """(approvals that verify, why the others do not) for a Model's annotations. Four-eyes
    rules (the author cannot approve, one approval per person and stage) are the caller's."""
    counted: list[Approval] = []
    ignored: list[str] = []
    for signed, problem in signed_approvals_from(annotations, model_name, namespace):
        if signed is None:
            ignored.append(problem)
            continue
        approval, why = verify(signed, registry, model_name, namespace, sha256, now)
        if approval is None:
            ignored.append(why or "does not verify")
        else:
            counted.append(approval)
    return counted, ignored


def sign_approval(
    model: str,
    namespace: str,
    sha256: str,
    stage: str,
    comment: str,
    key: str | None,
    keys_dir: Path | None = None,
    now: datetime | None = None,
) -> SignedApproval:
    """Sign an approval with the user's key: `key` is `--key` (a key id or a key file); by
    default the only key in the keys dir. Raises SigningError with a one-line message (no key,
    several keys, unreadable key, a stage that cannot be approved)."""
    private, _ = find_key(key, keys_dir)
    try:
        statement = ApprovalStatement(
            model=model,
            namespace=namespace,
            sha256=sha256,
            stage=stage,
            at=now or datetime.now(UTC),
            comment=comment,
        )
    except ValidationError as error:
        problems = "; ".join(describe_validation_error(error))
        raise SigningError(f"cannot sign this approval: {problems}") from None
    return sign(statement, private)


# --- carrying an approval to the cluster -------------------------------------------------------


def _as_list(signed: SignedApproval | Iterable[SignedApproval]) -> list[SignedApproval]:
    return [signed] if isinstance(signed, SignedApproval) else list(signed)


def field_manager(signed: SignedApproval) -> str:
    """A server-side-apply field manager per key, so that applying one approver's annotation
    never removes another's (a manager's apply drops the fields it owned and left out)."""
    return "aiml024-approval-" + signed.key_id.removeprefix(KEY_ID_PREFIX)


def approval_patch(
    model_name: str,
    namespace: str,
    signed: SignedApproval | Iterable[SignedApproval],
    *,
    argocd: bool = False,
) -> dict[str, Any]:
    """A partial Model (name, namespace, approval annotations only) to apply server-side:
    `kubectl apply --server-side --field-manager=<field_manager(signed)> -f FILE`, or from git
    by Argo CD with `ServerSideApply=true`. `argocd=True` adds that sync option and
    `Prune=false`, so that removing the file from git never deletes the Model."""
    approvals = _as_list(signed)
    annotations: dict[str, str] = {}
    for item in approvals:
        if (item.model, item.namespace) != (model_name, namespace):
            raise SigningError(
                f"the approval by key {item.key_id} is for model {item.namespace}/{item.model}, "
                f"not {namespace}/{model_name}"
            )
        key, value = annotation_for(item)
        annotations[key] = value
    if argocd:
        annotations["argocd.argoproj.io/sync-options"] = "ServerSideApply=true,Prune=false"
    return {
        "apiVersion": API_VERSION,
        "kind": "Model",
        "metadata": {"name": model_name, "namespace": namespace, "annotations": annotations},
    }


def kubectl_annotate_command(signed: SignedApproval) -> str:
    """The equivalent `kubectl annotate` command line (shell-quoted)."""
    key, value = annotation_for(signed)
    return shlex.join([
        "kubectl", "annotate", "--overwrite", "-n", signed.namespace,
        f"models.{GROUP}/{signed.model}", f"{key}={value}",
    ])  # fmt: skip


def kubectl_apply_command(signed: SignedApproval, filename: str = "-") -> str:
    """The `kubectl apply --server-side` command line for `approval_patch(...)` in `filename`."""
    return shlex.join([
        "kubectl", "apply", "--server-side", f"--field-manager={field_manager(signed)}",
        "-f", filename,
    ])  # fmt: skip

"""The audit log: every decision, appended to a hash chain that shows when it was tampered with.

Each namespace has its own chain, one write-once object per entry, under a root URI (fsspec):

    {root}/audit/{namespace}/{seq:012d}.json    one entry; never replaced
    {root}/audit/{namespace}/head.json          {seq, hash, at} of the newest entry (overwritten)

The root is the state directory on one machine (`.aiml024/`, or `$AIML024_HOME`) and, in a
cluster, the artifact store (`$AIML024_AUDIT_STORE`, else `$AIML024_ARTIFACT_STORE`). Each entry
is also mirrored as an `AuditRecorded` event on its subject (Kubernetes Events in a cluster,
`events.jsonl` locally), whose message carries its seq and hash: Events expire, so they are not
the log, but they are a record of the head that the store's writers cannot rewrite.

An entry (`make_entry`):

    {"seq": 3, "at": "2026-01-01T12:00:00Z", "kind": "policy", "actor": "alice",
     "subject": {"kind": "Model", "namespace": "default", "name": "churn-model-v1"},
     "details": {"decision": "require_approval", "stage": "production", "violations": [...],
                 "digest": "<artifact sha256>", "bundleDigest": "sha256:..."},
     "prev": "<hash of entry 2; 64 zeros for entry 1>",
     "hash": "<sha256 of the canonical JSON of this entry without `hash`>"}

Kinds: `policy` (a new decision), `approval` (an approval that counts), `promotion` (the actual
stage moved), `rollback` (an SLO rollback of a canary), `break-glass` (a break-glass that counts:
its user, justification, the violations it overrode, the stage and artifact digest).

What `verify` detects: an entry edited (its hash no longer matches its content), entries
reordered or moved (an object holds another seq than its name), an entry deleted in the middle
(a gap in the seqs, or a prev that does not match), the newest entries deleted (the head object,
or a head seen elsewhere with `--head` such as the newest AuditRecorded Event, names a later
entry or another hash), a missing head object, an unreadable entry. What it cannot detect:
the chain has no secret, so whoever can write the store can rewrite every entry from some point
on, with recomputed hashes, and the head object with them; or delete the newest entries and set
the head back; or delete a whole namespace's log. Only a head recorded elsewhere catches those
(`aiml024 audit verify --head SEQ:HASH`, from the Events), and only while that record lasts.
Keep the store's `audit/` prefix writable by the operator alone (and, better, on a bucket with
object versioning or object lock), so that a rewrite needs the operator's own credentials.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import tempfile
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .api import ModelStatus
from .api.common import dns_problem
from .files import write_atomic
from .reconcile.break_glass import newly_counted
from .reconcile.clock import now as _now

KINDS = ("policy", "approval", "promotion", "rollback", "break-glass", "rollout", "retrain")
GENESIS = "0" * 64  # the prev of entry 1
FIELDS = ("seq", "at", "kind", "actor", "subject", "details", "prev", "hash")
HEAD = "head.json"
ENTRY_NAME = re.compile(r"(\d{12})\.json")
EVENT_REASON = "AuditRecorded"
_RETRIES = 50  # a concurrent writer took the seq: chain onto its entry and try the next one

Entry = dict[str, Any]


class AuditError(RuntimeError):
    """The audit log cannot be read or appended to."""


# --- the chain (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """What one entry says, before it has its place (seq, prev) in the chain."""

    kind: str
    actor: str
    subject: dict[str, str]
    details: dict[str, Any] = field(default_factory=dict)


def canonical(obj: Any) -> bytes:
    """The one byte form that is hashed: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: Entry) -> str:
    """sha256 (hex) of the canonical JSON of `entry` without its `hash`."""
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def timestamp(at: datetime) -> str:
    """UTC, to the second (a naive time is taken as UTC)."""
    return (at.astimezone(UTC) if at.tzinfo else at).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_entry(seq: int, prev: str, record: Record, at: datetime) -> Entry:
    if record.kind not in KINDS:
        raise ValueError(f"unknown audit kind {record.kind!r} (one of {', '.join(KINDS)})")
    entry: Entry = {
        "seq": seq,
        "at": timestamp(at),
        "kind": record.kind,
        "actor": record.actor,
        "subject": dict(record.subject),
        "details": json.loads(json.dumps(record.details, default=_jsonable)),
        "prev": prev,
    }
    entry["hash"] = entry_hash(entry)
    return entry


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return timestamp(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def subject_of(obj: dict[str, Any]) -> dict[str, str]:
    """kind/namespace/name of an object in wire form (a Model, a Deployment)."""
    meta = obj["metadata"]
    return {
        "kind": obj["kind"],
        "namespace": meta.get("namespace") or "default",
        "name": meta["name"],
    }


@dataclass(frozen=True)
class Problem:
    """The first thing wrong at one object of the log, and why."""

    where: str  # the object's name under the namespace: 000000000003.json, head.json
    why: str

    def __str__(self) -> str:
        return f"{self.where}: {self.why}"


def entry_name(seq: int) -> str:
    return f"{seq:012d}.json"


def verify(
    objects: Iterable[tuple[str, bytes]],
    head: bytes | None = None,
    expected_head: tuple[int, str | None] | None = None,
    expected_from: str = "the head given (--head)",
) -> list[Problem]:
    """Check one namespace's chain: `objects` are (name, content) of its entries, `head` the
    head object's content (None: absent), `expected_head` (seq, hash or None) a head recorded
    elsewhere, `expected_from` says where. Returns the problems in log order, the first bad
    entry first; [] when intact."""
    problems: list[Problem] = []
    hashes: dict[int, str] = {}
    last_seq, last_hash = 0, GENESIS
    for name, raw in sorted(objects):
        match = ENTRY_NAME.fullmatch(name)
        if not match:
            continue
        seq = int(match.group(1))
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = None
        missing = [f for f in FIELDS if f not in entry] if isinstance(entry, dict) else None
        if entry is None or missing is None:
            problems.append(Problem(name, "unreadable: not a JSON object (edited or truncated)"))
        elif missing:
            problems.append(Problem(name, f"edited: field(s) {', '.join(missing)} are missing"))
        elif entry["hash"] != (computed := entry_hash(entry)):
            problems.append(
                Problem(
                    name,
                    f"edited: its content does not match its hash (recorded "
                    f"{str(entry['hash'])[:12]}..., computed {computed[:12]}...)",
                )
            )
        elif entry["seq"] != seq:
            problems.append(
                Problem(
                    name,
                    f"holds entry {entry['seq']}, not {seq}: entries were reordered or moved",
                )
            )
        elif seq != last_seq + 1:
            gap = f"{last_seq + 1}" if seq == last_seq + 2 else f"{last_seq + 1} to {seq - 1}"
            problems.append(
                Problem(
                    entry_name(last_seq + 1),
                    f"missing: the log goes from entry {last_seq} to entry {seq}, so entry "
                    f"{gap} was deleted",
                )
            )
        elif entry["prev"] != last_hash:
            problems.append(
                Problem(
                    name,
                    f"its prev does not match the hash of entry {last_seq}: an entry before it "
                    "was replaced, or entries were reordered",
                )
            )
        recorded = entry.get("hash") if isinstance(entry, dict) else None
        last_seq = seq
        last_hash = recorded if isinstance(recorded, str) else hashlib.sha256(raw).hexdigest()
        hashes[seq] = last_hash
    if head is None:
        if hashes:
            problems.append(
                Problem(
                    HEAD, "missing: the head record was deleted (it is written with every entry)"
                )
            )
    else:
        try:
            recorded_head = json.loads(head)
            head_at = (int(recorded_head["seq"]), str(recorded_head["hash"]))
        except (ValueError, KeyError, TypeError):
            problems.append(Problem(HEAD, "unreadable: not a head record (edited or truncated)"))
        else:
            problems += _against_head(head_at, hashes, last_seq, "the head record")
    if expected_head is not None:
        problems += _against_head(expected_head, hashes, last_seq, expected_from)
    return problems


def _against_head(
    head: tuple[int, str | None], hashes: dict[int, str], last_seq: int, source: str
) -> list[Problem]:
    seq, hash_ = head
    if seq > last_seq:
        ends = f"ends at entry {last_seq}" if last_seq else "is empty"
        return [
            Problem(
                entry_name(seq),
                f"missing: {source} names entry {seq} but the log {ends}: the newest entries "
                "were deleted",
            )
        ]
    if seq in hashes and hash_ is not None and hashes[seq] != hash_:
        return [
            Problem(
                entry_name(seq),
                f"replaced: its hash {hashes[seq][:12]}... is not the {hash_[:12]}... that "
                f"{source} names (the log was rewritten from here or before)",
            )
        ]
    return []


def parse(objects: Iterable[tuple[str, bytes]]) -> list[Entry]:
    """The entries among `objects` that parse as JSON objects, in the order given."""
    parsed = []
    for _name, raw in objects:
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict):
            parsed.append(entry)
    return parsed


def parse_head(text: str) -> tuple[int, str | None]:
    """`SEQ` or `SEQ:HASH` (as an AuditRecorded event shows it)."""
    seq, _, hash_ = text.strip().partition(":")
    if not seq.isdigit() or (hash_ and not re.fullmatch(r"[0-9a-f]{64}", hash_)):
        raise ValueError(f"--head takes SEQ or SEQ:HASH (64 hex digits), not {text!r}")
    return int(seq), hash_ or None


# --- what each decision records (pure) ------------------------------------------------------


def gate_records(
    subject: dict[str, str],
    before: ModelStatus,
    after: ModelStatus,
    actor: str,
    break_glass: dict[str, Any] | None = None,
    overridden: list[str] | None = None,
) -> list[Record]:
    """The entries one Model gate makes: each approval that newly counts (by its approver), a
    break-glass that newly counts (by its user; `break_glass` is the record the policy saw,
    `overridden` the violations the policy says it overrode, None when it did not count), a
    new policy decision, and the actual stage moving (by `actor`: the operator's identity in a
    cluster, the user running the command on one machine). Re-evaluating to the same decision
    records nothing."""
    records = [
        Record(
            "approval",
            approval.user,
            subject,
            {
                "stage": approval.stage,
                "digest": approval.sha256,
                "groups": approval.groups,
                "keyId": approval.key_id,
                "comment": approval.comment,
                "approvedAt": approval.at,
            },
        )
        for approval in after.approvals
        if approval not in before.approvals
    ]
    if break_glass is not None and overridden is not None and newly_counted(before, after):
        records.append(break_glass_entry(subject, break_glass, overridden))
    new, old = after.policy, before.policy
    decided = (new.decision, new.violations, new.stage, new.sha256) if new else None
    if new is not None and (
        old is None or (old.decision, old.violations, old.stage, old.sha256) != decided
    ):
        details = {
            "decision": new.decision,
            "stage": new.stage,
            "violations": new.violations,
            "digest": new.sha256,
            "bundleDigest": new.bundle_digest,
        }
        records.append(Record("policy", actor, subject, details))
    if after.stage != before.stage:
        details = {
            "from": before.stage,
            "to": after.stage,
            "digest": after.sha256,
            "decision": new.decision if new else None,
        }
        records.append(Record("promotion", actor, subject, details))
    return records


def break_glass_entry(
    subject: dict[str, str], record: dict[str, Any], overridden: list[str]
) -> Record:
    """A break-glass that counted: who, why, for which stage and artifact digest, and the
    violations it let through (the rule ids and their figures, as the policy wrote them)."""
    details = {
        "stage": record.get("stage"),
        "digest": record.get("sha256"),
        "justification": record.get("justification"),
        "overridden": list(overridden),
        "groups": list(record.get("groups") or []),
        "brokeAt": record.get("at"),
    }
    return Record("break-glass", str(record.get("user")), subject, details)


def rollback_record(
    subject: dict[str, str],
    reason: str,
    before: dict[str, int],
    after: dict[str, int],
    models: dict[str, str],
    actor: str,
) -> Record:
    """An SLO rollback: live traffic moved from `before` to `after` (predictor -> percent);
    `models` is predictor -> the artifact digest it serves."""
    details = {"reason": reason, "from": before, "to": after, "models": models}
    return Record("rollback", actor, subject, details)


def rollout_record(
    subject: dict[str, str],
    phase: str,
    candidate: str,
    reason: str,
    before: dict[str, int],
    after: dict[str, int],
    models: dict[str, str],
    actor: str,
) -> Record:
    """A rollout that finished without a breach (`phase` Promoted: the candidate serves all
    live traffic as stable; Concluded: an A/B test kept stable): traffic from `before` to
    `after`, `models` predictor -> digest before the move. Rollbacks are rollback_record's."""
    details = {
        "phase": phase,
        "candidate": candidate,
        "reason": reason,
        "from": before,
        "to": after,
        "models": models,
    }
    return Record("rollout", actor, subject, details)


def retrain_record(
    subject: dict[str, str],
    monitor: str,
    experiment: str,
    generation: int,
    data_uri: str,
    drifted: list[str],
    actor: str,
) -> Record:
    """A drift monitor's retrain: Experiment `experiment` reruns at `generation` on
    `data_uri` because `drifted` (features, or `prediction`) drifted."""
    details = {
        "monitor": monitor,
        "experiment": experiment,
        "generation": generation,
        "dataUri": data_uri,
        "drifted": drifted,
    }
    return Record("retrain", actor, subject, details)


def summary(entry: Entry) -> str:
    """One line on what an entry records, for `aiml024 audit log`."""
    d = entry.get("details") or {}
    kind = entry.get("kind")
    if kind == "policy":
        text = f"stage {d.get('stage')}: {d.get('decision')}"
        return text + (" (" + "; ".join(d["violations"]) + ")" if d.get("violations") else "")
    if kind == "approval":
        text = f"approved stage {d.get('stage')} of {str(d.get('digest'))[:12]}"
        text += f" with key {d['keyId']}" if d.get("keyId") else ""
        return text + (f": {d['comment']}" if d.get("comment") else "")
    if kind == "promotion":
        return f"stage {d.get('from')} -> {d.get('to')}"
    if kind == "rollback":
        return f"traffic {_split(d.get('from'))} -> {_split(d.get('to'))}: {d.get('reason')}"
    if kind == "rollout":
        text = f"{d.get('candidate')} {str(d.get('phase')).lower()}: traffic "
        return text + f"{_split(d.get('from'))} -> {_split(d.get('to'))}: {d.get('reason')}"
    if kind == "retrain":
        text = f"monitor {d.get('monitor')} retrains experiment {d.get('experiment')} "
        text += f"(generation {d.get('generation')}) on {d.get('dataUri')}"
        return text + f": drift on {', '.join(d.get('drifted') or [])}"
    if kind == "break-glass":
        rules = sorted({str(v).split(":", 1)[0] for v in d.get("overridden") or []})
        text = f"broke the glass for stage {d.get('stage')} of {str(d.get('digest'))[:12]}"
        text += f", overriding {', '.join(rules)}" if rules else ", overriding nothing"
        return text + f": {d.get('justification')}"
    return json.dumps(d, sort_keys=True)


def _split(traffic: Any) -> str:
    if not isinstance(traffic, dict):
        return str(traffic)
    return ", ".join(f"{name} {weight}%" for name, weight in traffic.items())


def event(entry: Entry) -> tuple[str, str, str]:
    """The Event (type, reason, message) that mirrors an entry; it names the seq and hash, so the
    newest one is a head recorded outside the store (`aiml024 audit verify --head SEQ:HASH`)."""
    return "Normal", EVENT_REASON, f"audit entry {entry['seq']}:{entry['hash']} ({entry['kind']})"


_EVENT_MESSAGE = re.compile(r"audit entry (\d+):([0-9a-f]{64}) \(")


def head_from_event(message: str) -> tuple[int, str] | None:
    """(seq, hash) from an AuditRecorded event's message; None for any other message."""
    match = _EVENT_MESSAGE.match(message)
    return (int(match.group(1)), match.group(2)) if match else None


# --- storage ----------------------------------------------------------------------------------


class AuditLog:
    """One namespace's chain under `root` (an fsspec URI or a path)."""

    def __init__(self, root: str, namespace: str):
        problem = dns_problem(namespace, label=True)
        if problem:
            raise AuditError(f"namespace {namespace!r}: {problem}")
        self.namespace = namespace
        self.uri = f"{root.rstrip('/')}/audit/{namespace}"
        self.fs, self.path = fsspec.core.url_to_fs(self.uri)

    def _at(self, name: str) -> str:
        return f"{self.path}/{name}"

    # -- reading

    def objects(self) -> list[tuple[str, bytes]]:
        """(name, content) of every entry object, in seq order."""
        self.fs.invalidate_cache(self.path)
        try:
            listed = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:
            return []
        names = sorted(
            n for p in listed if ENTRY_NAME.fullmatch(n := p.rstrip("/").rsplit("/", 1)[-1])
        )
        if not names:
            return []
        contents = self.fs.cat([self._at(n) for n in names])
        return [(n, contents[self._at(n)]) for n in names]

    def head_bytes(self) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self._at(HEAD)))
        except FileNotFoundError:
            return None

    def entries(self) -> list[Entry]:
        """The entries that parse, in seq order (whether the chain holds: `verify`)."""
        return parse(self.objects())

    def verify(self, expected_head: tuple[int, str | None] | None = None) -> list[Problem]:
        return verify(self.objects(), self.head_bytes(), expected_head)

    # -- appending

    def append(self, record: Record, at: datetime | None = None) -> Entry:
        """Append one entry at the next free seq; a seq another writer took is never
        overwritten: the entry chains onto that writer's entry instead."""
        when = at or _now()
        for _ in range(_RETRIES):
            seq, prev = self._tip()
            entry = make_entry(seq + 1, prev, record, when)
            try:
                self._create(self._at(entry_name(seq + 1)), _encode(entry))
            except FileExistsError:
                continue
            self._advance_head(entry)
            return entry
        raise AuditError(f"{self.uri}: no free seq after {_RETRIES} tries (concurrent writers)")

    def _tip(self) -> tuple[int, str]:
        """The newest (seq, hash): the head record's, then any entry written after it (a writer
        that stopped between the entry and the head). When the newest entries were deleted
        the head still names them, so the next entry leaves the gap visible."""
        seq, hash_ = 0, GENESIS
        head = self.head_bytes()
        try:
            if head is not None:
                recorded = json.loads(head)
                seq, hash_ = int(recorded["seq"]), str(recorded["hash"])
            else:  # no head: from the newest entry listed
                names = [n for n, _ in self.objects()]
                if names:
                    seq, hash_ = self._entry_at(int(names[-1][:12]))
            while self.fs.exists(self._at(entry_name(seq + 1))):
                seq, hash_ = self._entry_at(seq + 1)
        except (ValueError, KeyError, TypeError) as error:
            raise AuditError(
                f"{self.uri}: cannot find the newest entry ({error}); run aiml024 audit verify"
            ) from None
        return seq, hash_

    def _entry_at(self, seq: int) -> tuple[int, str]:
        entry = json.loads(self.fs.cat_file(self._at(entry_name(seq))))
        return seq, str(entry["hash"])

    def _create(self, path: str, data: bytes) -> None:
        """Write `data` at `path` only if nothing is there (FileExistsError otherwise)."""
        if isinstance(self.fs, LocalFileSystem):
            _create_local(path, data)
            return
        if self.fs.exists(path):
            raise FileExistsError(path)
        try:  # conditional (If-None-Match) where the store has it, e.g. S3
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            raise
        except Exception:
            self.fs.invalidate_cache(self.path)
            if self.fs.exists(path) and self.fs.cat_file(path) != data:
                raise FileExistsError(path) from None
            raise

    def _advance_head(self, entry: Entry) -> None:
        current = self.head_bytes()
        try:
            if current is not None and int(json.loads(current)["seq"]) >= entry["seq"]:
                return  # a later writer moved it further already
        except (ValueError, KeyError, TypeError):
            pass  # an unreadable head is replaced (verify reported it)
        text = json.dumps({"seq": entry["seq"], "hash": entry["hash"], "at": entry["at"]}) + "\n"
        if isinstance(self.fs, LocalFileSystem):
            write_atomic(Path(self._at(HEAD)), text)
        else:
            self.fs.pipe_file(self._at(HEAD), text.encode())


def record(
    root: str, records: Iterable[Record], mirror: Callable[[Entry], None] | None = None
) -> list[Entry]:
    """Append each record, in order, to its subject's namespace's log under `root`; `mirror`
    (posting the entry's Event) sees each entry once it is stored."""
    entries = []
    for item in records:
        entries.append(AuditLog(root, item.subject["namespace"]).append(item))
        if mirror is not None:
            mirror(entries[-1])
    return entries


async def record_async(root: str, records: Iterable[Record]) -> list[Entry]:
    """As `record`, off the event loop, one writer at a time in this process (the operator
    runs one replica; write-once settles any other writer)."""
    records = list(records)
    if not records:
        return []
    async with _loop_lock():
        return await asyncio.to_thread(record, root, records)


def namespaces(root: str) -> list[str]:
    """The namespaces that have a log under `root`."""
    fs, path = fsspec.core.url_to_fs(f"{root.rstrip('/')}/audit")
    fs.invalidate_cache(path)
    try:
        listed = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    return sorted(
        item["name"].rstrip("/").rsplit("/", 1)[-1]
        for item in listed
        if item.get("type") == "directory"
    )


def _encode(entry: Entry) -> bytes:
    return (json.dumps(entry, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _create_local(path: str, data: bytes) -> None:
    """Atomic create-if-absent on a local disk: a complete temporary file, hard-linked into
    place (link refuses an existing name), read-only."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".entry.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o444)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links
            with open(path, "xb") as handle:
                handle.write(data)
    finally:
        os.unlink(tmp)


_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _loop_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _LOCKS.get(loop)
    if lock is None:
        lock = _LOCKS[loop] = asyncio.Lock()
    return lock

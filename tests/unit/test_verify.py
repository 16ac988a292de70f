"""`aiml024 verify model/NAME`: the signed card, each card file and the bundle, as a user sees it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from tests.unit.test_register import SPEC, UID, artifacts
from typer.testing import CliRunner

from aiml024 import signing
from aiml024.api import Experiment
from aiml024.cli.main import app
from aiml024.local.store import Store
from aiml024.reconcile import experiment as experiment_rules
from aiml024.runtime.card import SignedCard, file_digest, sign_card, signature_file_bytes
from aiml024.runtime.steps import register as register_step

runner = CliRunner()
NAME = "churn-model-v1"


class Registered:
    """A Model registered as `aiml024 apply` does, in a local state directory."""

    def __init__(self, home: Path, record: dict[str, Any]):
        self.home = home
        self.record = record
        run_root = record["artifactUri"].removeprefix("file://").removesuffix("/bundle")
        self.card = Path(run_root) / "card"
        self.bundle = Path(run_root) / "bundle"
        self.key_file = home / "keys" / "model-card.pem"

    def signed(self) -> SignedCard:
        return SignedCard.model_validate_json((self.card / "signature.json").read_bytes())


@pytest.fixture
def registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registered:
    return register_model(tmp_path, monkeypatch)


def register_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registered:
    """Register churn-model-v1 into the local state directory tmp_path/home, with the local
    default signing key (made on first use), and point AIML024_HOME there."""
    home = tmp_path / "home"
    monkeypatch.setenv("AIML024_HOME", str(home))
    monkeypatch.delenv("AIML024_CARD_KEY_FILE", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    inputs, params = artifacts(tmp_path)
    store_uri = (home / "artifacts").as_uri()
    params |= {"namespace": "default", "artifactStore": store_uri}
    record = register_step.run(params, inputs, tmp_path / "out")
    exp = Experiment.model_validate({
        "apiVersion": "aiml024.io/v1alpha1", "kind": "Experiment",
        "metadata": {"name": "churn", "namespace": "default", "uid": UID, "generation": 1},
        "spec": SPEC,
    })  # fmt: skip
    model = experiment_rules.model_to_register(exp, record, store_uri, "churn-g1")
    manifest = model.wire()
    status = manifest.pop("status")
    store = Store(home)
    store.apply(manifest)
    store.update_status("Model", NAME, status)
    return Registered(home, record)


def verify(*args: str) -> Any:
    return runner.invoke(app, ["verify", f"model/{NAME}", *args])


def lines(result: Any) -> dict[str, str]:
    """check name -> its printed line, from `  ok      card model_card.md   sha256 ...`."""
    found = {}
    for line in result.stdout.splitlines():
        if line.startswith("  "):
            status, rest = line.split(maxsplit=1)
            found[rest[:26].strip()] = f"{status} {rest[26:].strip()}"
    return found


def test_an_untouched_model_verifies(registered: Registered) -> None:
    result = verify()
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"model/{NAME}: the signed model card"
    assert result.stdout.splitlines()[-1] == f"model/{NAME}: verified"
    checks = lines(result)
    assert list(checks) == [
        "key", "signature", "card model_card.html", "card model_card.json", "card model_card.md",
        "bundle", "identity",
    ]  # fmt: skip
    assert all(line.startswith("ok ") for line in checks.values()), checks
    kid = signing.key_id(signing.load_private_key(registered.key_file))
    assert checks["key"] == f"ok {kid} (the key the Model records)"
    digest = registered.record["model"]["status"]["sha256"]
    assert checks["bundle"].startswith(f"ok sha256 {digest[:16]}…")
    assert checks["identity"] == f"ok model churn-model, run default/churn/{UID}/churn-g1"
    assert result.stderr == ""


def test_a_changed_card_byte_is_named(registered: Registered) -> None:
    page = registered.card / "model_card.html"
    page.write_bytes(page.read_bytes().replace(b"0.9000", b"0.9900", 1))
    result = verify()
    assert result.exit_code == 1
    checks = lines(result)
    assert checks["card model_card.html"].startswith("FAILED sha256 ")
    assert checks["card model_card.html"].endswith("changed after signing")
    assert checks["signature"].startswith("ok") and checks["bundle"].startswith("ok")
    assert checks["card model_card.md"].startswith("ok")
    assert result.stderr.strip() == (
        f"error: model/{NAME} does not verify: tampered or wrong key: card model_card.html"
    )


def test_a_changed_bundle_byte_is_named(registered: Registered) -> None:
    weights = registered.bundle / "model.joblib"
    content = bytearray(weights.read_bytes())
    content[-1] ^= 1
    weights.write_bytes(bytes(content))
    result = verify()
    assert result.exit_code == 1
    checks = lines(result)
    assert checks["bundle"].startswith("FAILED files recomputed to ")
    assert checks["bundle"].endswith("changed after registration")
    assert all(checks[c].startswith("ok") for c in checks if c != "bundle"), checks
    assert result.stderr.strip().endswith("does not verify: tampered or wrong key: bundle")


def test_a_card_re_signed_with_another_key_is_refused(registered: Registered) -> None:
    """Whoever can write the store changes the card and signs the new statement with their
    own key: the Model records which key signed, so that fails, and the recorded key (found
    on this machine) does not verify the new statement."""
    markdown = registered.card / "model_card.md"
    markdown.write_text(markdown.read_text().replace("Trained on 2 rows.", "No limitations."))
    signed = registered.signed()
    statement = signed.statement.model_copy(deep=True)
    statement.card["model_card.md"] = file_digest(markdown.read_bytes())
    forged = sign_card(statement, signing.generate_key())
    (registered.card / "signature.json").write_bytes(signature_file_bytes(forged))
    result = verify()
    assert result.exit_code == 1
    checks = lines(result)
    assert checks["key"] == (
        f"FAILED the card was signed by key {forged.key_fingerprint[:16]}…, not the key the "
        f"Model records ({signed.key_fingerprint[:16]}…): re-signed with another key"
    )
    kid = signing.key_id(signing.load_private_key(registered.key_file))
    assert checks["signature"].startswith(f"FAILED does not verify with key {kid}")
    assert checks["card model_card.md"].startswith("ok")  # it matches the forged statement
    assert result.stderr.strip().endswith("tampered or wrong key: key, signature")


def test_an_edited_statement_does_not_verify(registered: Registered) -> None:
    """The statement altered to match a changed card, the signature left as it was."""
    markdown = registered.card / "model_card.md"
    markdown.write_text(markdown.read_text() + "\nApproved for all uses.\n")
    signed = registered.signed()
    signed.statement.card["model_card.md"] = file_digest(markdown.read_bytes())
    (registered.card / "signature.json").write_bytes(signature_file_bytes(signed))
    result = verify()
    assert result.exit_code == 1
    checks = lines(result)
    assert checks["key"].startswith("ok")
    assert checks["signature"].startswith("FAILED does not verify with key")
    assert result.stderr.strip().endswith("tampered or wrong key: signature")


def test_an_added_card_file_is_named(registered: Registered) -> None:
    (registered.card / "approval.txt").write_text("approved by everyone\n")
    result = verify()
    assert result.exit_code == 1
    assert lines(result)["card approval.txt"] == (
        "FAILED in the card directory but not signed: added"
    )


def test_public_key_option_trusts_only_that_key(registered: Registered, tmp_path: Path) -> None:
    public = signing.load_private_key(registered.key_file).public_key()
    pem = tmp_path / "card.pub"
    pem.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    result = verify("--public-key", str(pem))
    assert result.exit_code == 0, result.output
    assert lines(result)["key"] == f"ok {signing.key_id(public)} (the given key)"

    other = tmp_path / "other.pub"
    other.write_text(signing.encode_public_key(signing.generate_key().public_key()))
    result = verify("--public-key", str(other))
    assert result.exit_code == 1
    checks = lines(result)
    assert checks["key"].startswith("FAILED the card was signed by key ")
    assert "not the given key" in checks["key"]
    assert checks["signature"].startswith("FAILED does not verify with key")
    assert result.stderr.strip().endswith("tampered or wrong key: key, signature")


def test_without_the_local_key_the_recorded_fingerprint_still_decides(
    registered: Registered,
) -> None:
    """On another machine: the public key in signature.json counts only when its fingerprint
    is the one the Model records."""
    registered.key_file.unlink()
    assert verify().exit_code == 0
    signed = registered.signed()
    forged = sign_card(signed.statement, signing.generate_key())
    (registered.card / "signature.json").write_bytes(signature_file_bytes(forged))
    result = verify()
    assert result.exit_code == 1
    assert lines(result)["signature"] == (
        "FAILED no public key with the fingerprint the Model records: pass --public-key"
    )


def test_a_model_without_a_signature_or_no_model_is_an_error(registered: Registered) -> None:
    store = Store(registered.home)
    status = store.get("Model", NAME)["status"]
    del status["cardSignature"]
    store.update_status("Model", NAME, status)
    result = verify()
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: model/{NAME} has no card signature")
    result = runner.invoke(app, ["verify", "model/absent"])
    assert result.exit_code == 1 and 'models "absent" not found' in result.stderr
    result = runner.invoke(app, ["verify", "deployment/churn"])
    assert result.exit_code == 1 and "expected model/NAME" in result.stderr


def test_a_missing_or_broken_signature_file_is_named(registered: Registered) -> None:
    signature = registered.card / "signature.json"
    document = json.loads(signature.read_text())
    signature.write_text(json.dumps({**document, "approvedBy": "everyone"}))
    result = verify()
    assert result.exit_code == 1
    assert lines(result)["signature"].startswith("FAILED file://")
    assert "signature.json is not valid: approvedBy: unknown field" in result.stdout
    assert lines(result)["bundle"].startswith("ok")  # the bundle is checked all the same
    signature.unlink()
    result = verify()
    assert result.exit_code == 1
    assert lines(result)["signature"].startswith("FAILED cannot read file://")


def test_the_statement_binds_the_bundle_digest(registered: Registered) -> None:
    """A Model record pointing at another digest than the one signed is caught even when the
    bundle's files match that record."""
    store = Store(registered.home)
    status = store.get("Model", NAME)["status"]
    signed = registered.signed()
    assert status["sha256"] == signed.statement.bundle_sha256
    weights = registered.bundle / "model.joblib"
    weights.write_bytes(weights.read_bytes() + b"\0")
    status["sha256"] = register_step.bundle_digest(registered.bundle)
    store.update_status("Model", NAME, status)
    result = verify()
    assert result.exit_code == 1
    assert "FAILED the card was signed for bundle " in lines(result)["bundle"]
    assert json.loads((registered.card / "model_card.json").read_text())["lineage"]["sha256"] == (
        signed.statement.bundle_sha256
    )

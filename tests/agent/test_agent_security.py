"""docs/security.md from the agent's side, on a real Mosquitto: per-agent credentials (username =
node id) under the shipped ``%u`` ACL, and mutual TLS with certificates made here by
``openssl``. A wrong password keeps the agent retrying, never crashing."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_harness import AgentProcess, ScriptedCloud, sh, spec, wait_until

from shared.protocol import Place

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

ROOT = Path(__file__).resolve().parents[2]
ACL = ROOT / "deploy" / "mosquitto" / "acl"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and client certificates for two users."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, cn, ext in (("server", "127.0.0.1", True), ("edge-1", "edge-1", False),
                          ("controller", "controller", False)):  # fmt: skip
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.crt",
                 *(["-extfile", "san.ext"] if ext else []), cwd=d)  # fmt: skip
    for key in d.glob("*.key"):
        key.chmod(0o644)  # mosquitto may drop privileges before reading its key
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


@pytest.fixture
def secure_broker(mosquitto_factory: Any, pki: dict[str, Path]) -> Iterator[Any]:
    yield mosquitto_factory(
        users={"edge-1": "edge-secret", "controller": "ctl-secret"},
        acl_file=ACL,
        extra_config=[
            f"cafile {pki['ca_crt']}",
            f"certfile {pki['server_crt']}",
            f"keyfile {pki['server_key']}",
            "require_certificate true",
            "tls_version tlsv1.2",
        ],
    )


def _cloud(broker: Any, pki: dict[str, Path]) -> ScriptedCloud:
    return ScriptedCloud(
        broker.host,
        broker.port,
        username="controller",
        password="ctl-secret",
        tls={
            "ca_certs": str(pki["ca_crt"]),
            "certfile": str(pki["controller_crt"]),
            "keyfile": str(pki["controller_key"]),
        },
    )


def _agent(tmp_path: Path, broker: Any, pki: dict[str, Path], password: str) -> AgentProcess:
    return AgentProcess(
        tmp_path / "edge-1",
        broker.port,
        "edge-1",
        broker={
            "username": "edge-1",
            "password": password,
            "tls": True,
            "ca_file": str(pki["ca_crt"]),
            "cert_file": str(pki["edge-1_crt"]),
            "key_file": str(pki["edge-1_key"]),
        },
    )


def test_credentials_acl_and_mutual_tls(
    tmp_path: Path, secure_broker: Any, pki: dict[str, Path]
) -> None:
    cloud = _cloud(secure_broker, pki)
    agent = _agent(tmp_path, secure_broker, pki, "edge-secret")
    try:
        agent.start()
        wait_until(lambda: cloud.messages("hello"), 10, "hello over TLS with credentials")
        task = spec("t-tls", sh("echo '{\"secure\": true}'"))
        cloud.send("edge-1", "place", Place(task_id="t-tls", epoch=1, spec=task, level="causal"))
        wait_until(lambda: cloud.status("t-tls") == "succeeded", 10, "success through the ACL")
        wait_until(lambda: agent.status()["connectivity"] == "connected", 10, "acks through ACL")
    finally:
        agent.cleanup()
        cloud.close()


def test_a_wrong_password_keeps_the_agent_retrying(
    tmp_path: Path, secure_broker: Any, pki: dict[str, Path]
) -> None:
    agent = _agent(tmp_path, secure_broker, pki, "wrong")
    try:
        agent.start()
        wait_until(lambda: "refused" in agent.log(), 10, "the refusal to be logged")
        status = agent.status()
        assert agent.alive and not status["link_up"]
        assert status["connectivity"] == "disconnected"
    finally:
        agent.cleanup()

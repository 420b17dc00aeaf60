"""The local API over TLS (``edge_agent/_api_tls.py``): what lets a device elsewhere on the
site submit to its edge agent when the controller is out of reach. A real ``edge-agent run``
process serves HTTPS on loopback with a certificate of a test CA (made here with
``cryptography``); clients verify it as a site's devices would (``cloud/api_client.py``
``AgentClient``, ``continuum submit --fallback-agent https://…``), the agent's own tools
trust exactly its certificate (``LocalClient.for_config``)."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agent_harness import AgentFactory, AgentProcess, wait_until
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloud.api_client import AgentClient, ApiError
from cloud.operator_cli import main
from edge_agent._api_tls import server_context
from edge_agent.api import LocalClient
from edge_agent.config import load_config, parse_config
from shared.errors import ValidationError


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, Any] | None, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    signer_name, signer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(signer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A site CA and the agent's certificate for localhost/127.0.0.1 (its key 0600), and a
    second, unrelated CA."""
    d = tmp_path_factory.mktemp("pki")
    files: dict[str, Path] = {}
    for ca_name in ("site-ca", "other-ca"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _cert(ca_name, ca_key, None, ca=True)
        files[ca_name] = d / f"{ca_name}.crt"
        files[ca_name].write_bytes(_pem(ca_cert))
        if ca_name == "site-ca":
            key = ec.generate_private_key(ec.SECP256R1())
            files["cert"] = d / "agent.crt"
            files["cert"].write_bytes(_pem(_cert("edge-1", key, (ca_name, ca_key), ca=False)))
            files["key"] = d / "agent.key"
            files["key"].write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            files["key"].chmod(0o600)
    return files


@pytest.fixture
def agent(make_agent: AgentFactory, pki: dict[str, Path]) -> AgentProcess:
    return make_agent(
        api={
            "transport": "tcp",
            "host": "127.0.0.1",
            "tls_cert_file": str(pki["cert"]),
            "tls_key_file": str(pki["key"]),
        }
    ).start()


def _token(agent: AgentProcess) -> str:
    return (agent.state_dir / "api.token").read_text(encoding="ascii").strip()


def test_a_site_client_verifying_the_ca_submits_and_the_agent_runs_it(
    agent: AgentProcess, pki: dict[str, Path]
) -> None:
    client = AgentClient(
        f"https://localhost:{agent.api_port}", _token(agent), ca_file=str(pki["site-ca"])
    )
    answer = client.request("POST", "/v1/tasks", {"command": ["true"]})
    assert answer["status"] == "pending" and answer["id"].startswith("edge-1-")
    wait_until(
        lambda: client.request("GET", f"/v1/tasks/{answer['id']}")["status"] == "succeeded",
        30,
        "the task to succeed on the agent",
    )
    # the agent's own tools: loopback, the agent's certificate pinned (LocalClient.for_config)
    own = LocalClient.for_config(load_config(agent.config_path))
    code, status = own.request("GET", "/v1/status")
    assert code == 200 and status["node_id"] == "edge-1"
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "status", "--config", str(agent.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "edge-1" in done.stdout


def test_the_token_is_still_required_over_tls(agent: AgentProcess, pki: dict[str, Path]) -> None:
    client = AgentClient(
        f"https://127.0.0.1:{agent.api_port}", "wrong", ca_file=str(pki["site-ca"])
    )
    with pytest.raises(ApiError) as refused:
        client.request("GET", "/v1/status")
    assert refused.value.status == 401


def test_a_certificate_of_another_ca_is_refused_by_the_client(
    agent: AgentProcess, pki: dict[str, Path]
) -> None:
    client = AgentClient(
        f"https://127.0.0.1:{agent.api_port}", _token(agent), ca_file=str(pki["other-ca"])
    )
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        client.request("GET", "/v1/status")


def test_plain_http_and_a_stalled_handshake_do_not_disturb_the_agent(
    agent: AgentProcess, pki: dict[str, Path]
) -> None:
    port = agent.api_port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=30) as stalled:
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        with pytest.raises((http.client.HTTPException, OSError)):
            plain.request("GET", "/v1/status", headers={"Authorization": f"Bearer {_token(agent)}"})
            plain.getresponse().read()
        plain.close()
        # the stalled handshake holds only its own thread: HTTPS is served meanwhile
        client = AgentClient(
            f"https://127.0.0.1:{port}", _token(agent), ca_file=str(pki["site-ca"])
        )
        assert client.request("GET", "/v1/status")["node_id"] == "edge-1"
        stalled.sendall(b"")
    assert agent.alive


def test_continuum_submit_fails_over_to_an_https_agent(
    agent: AgentProcess, pki: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a controller that refuses connections
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    token_file = agent.state_dir / "api.token"
    task = tmp_path / "task.toml"
    task.write_text('command = ["true"]\n', encoding="utf-8")
    code = main(
        [
            *("submit", str(task), "--url", f"http://127.0.0.1:{closed}", "--token", "t"),
            *("--wait", "--timeout", "60"),
            *("--fallback-agent", f"https://localhost:{agent.api_port}"),
            *("--fallback-token-file", str(token_file), "--fallback-ca-file", str(pki["site-ca"])),
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out
    assert f"succeeded on the agent https://localhost:{agent.api_port}" in out.out


def test_config_rules_for_tls(pki: dict[str, Path]) -> None:
    base = {"node": {"id": "edge-1"}, "broker": {"host": "127.0.0.1"}}
    tls = {"tls_cert_file": str(pki["cert"]), "tls_key_file": str(pki["key"])}

    def problems(api: dict[str, Any]) -> str:
        with pytest.raises(ValidationError) as info:
            parse_config({**base, "api": api})
        return str(info.value)

    assert "loopback only, unless tls_cert_file" in problems(
        {"transport": "tcp", "host": "192.0.2.10"}
    )
    assert 'TLS needs transport = "tcp"' in problems(tls)
    assert "set both" in problems({"transport": "tcp", "tls_cert_file": str(pki["cert"])})
    cfg = parse_config({**base, "api": {"transport": "tcp", "host": "0.0.0.0", **tls}})
    assert cfg.api.host == "0.0.0.0" and cfg.api.tls_key_file == str(pki["key"])
    # the agent's tools reach a wildcard listener over loopback, pinned to its certificate
    client = LocalClient.for_config(cfg, port=1)
    assert client.host == "127.0.0.1" and client.pinned_cert == str(pki["cert"])


def test_a_loose_or_mismatched_key_is_a_config_error(pki: dict[str, Path], tmp_path: Path) -> None:
    loose = tmp_path / "loose.key"
    loose.write_bytes(pki["key"].read_bytes())
    loose.chmod(0o644)
    with pytest.raises(ValidationError, match="must be 0600"):
        server_context(str(pki["cert"]), str(loose))
    with pytest.raises(ValidationError, match="cannot read"):
        server_context(str(pki["cert"]), str(tmp_path / "absent.key"))
    other = tmp_path / "other.key"
    key = ec.generate_private_key(ec.SECP256R1())
    other.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    other.chmod(0o600)
    with pytest.raises(ValidationError, match=r"api\.tls_cert_file"):
        server_context(str(pki["cert"]), str(other))

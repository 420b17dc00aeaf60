"""The fleet's CA (cloud/tls.py), enrolment (cloud/enroll.py) and ``edge-agent join``
(edge_agent/join.py), through the bundle of shared/enrolment.py; a mutual-TLS bundle is
proven against a real Mosquitto that requires client certificates."""

from __future__ import annotations

import ssl
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from cloud.cli import main as controller_main
from cloud.config import load_config as load_controller_config
from edge_agent.cli import main as agent_main
from edge_agent.config import load_config as load_agent_config
from shared.enrolment import Bundle, decode_bundle, encode_bundle
from shared.errors import ValidationError
from simulations.testbed.broker import find_mosquitto, free_port, stop_process, wait_for_port

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _controller(tmp_path: Path, *, mutual: bool = False, ca: bool = True) -> Path:
    config = tmp_path / "etc" / "controller.toml"
    args = [
        "init",
        "--path",
        str(config),
        "--broker-user",
        "controller",
        "--password-file",
        str(tmp_path / "passwd"),
        "--agents-broker",
        "localhost:8883",
    ]
    assert controller_main(args) == 0
    if mutual:
        text = config.read_text().replace("mutual_tls = false", "mutual_tls = true")
        config.write_text(text)
    if ca:
        assert controller_main(["--config", str(config), "tls", "init"]) == 0
    return config


def test_ca_and_certificates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _controller(tmp_path)
    tls = tmp_path / "etc" / "tls"
    assert (tls / "ca.key").stat().st_mode & 0o777 == 0o600
    assert controller_main(["tls", "init", "--config", str(config)]) == 1  # never silently
    assert "already exists" in capsys.readouterr().err
    out = tmp_path / "certs"
    args = [
        "tls",
        "issue",
        "server",
        "--server",
        "--host",
        "mqtt.example.org",
        "--host",
        "10.0.0.5",
        "--out",
        str(out),
        "--config",
        str(config),
    ]
    assert controller_main(args) == 0
    ca = x509.load_pem_x509_certificate((tls / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.example.org"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert (out / "server.key").stat().st_mode & 0o777 == 0o600
    assert (out / "ca.crt").read_bytes() == (tls / "ca.crt").read_bytes()
    capsys.readouterr()
    assert controller_main(["--json", "--config", str(config), "tls", "list"]) == 0
    assert "Continuum CA" in capsys.readouterr().out


def test_enroll_and_join_write_a_valid_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _controller(tmp_path)
    capsys.readouterr()
    assert controller_main(["enroll", "edge-1", "--config", str(config), "--tier", "device"]) == 0
    out = capsys.readouterr().out
    token = next(w for w in out.split() if w.startswith("cj1."))
    agent_toml = tmp_path / "device" / "agent.toml"
    args = ["join", token, "--config", str(agent_toml), "--state-dir", str(tmp_path / "state")]
    assert agent_main(args) == 0
    cfg = load_agent_config(agent_toml)
    assert (cfg.node.id, cfg.node.tier) == ("edge-1", "device")
    assert (cfg.broker.host, cfg.broker.port, cfg.broker.tls) == ("localhost", 8883, True)
    assert cfg.broker.username == "edge-1" and cfg.broker.password
    assert Path(cfg.broker.ca_file).read_bytes() == (tmp_path / "etc/tls/ca.crt").read_bytes()
    assert (agent_toml.parent / "broker.password").stat().st_mode & 0o777 == 0o600
    assert cfg.broker.password not in agent_toml.read_text()
    assert "edge-1:" in (tmp_path / "passwd").read_text()
    # A second join needs --force, and a bundle for another node is refused even then.
    assert agent_main(args) == 1
    assert (
        controller_main(
            ["enroll", "edge-2", "--config", str(config), "--out", str(tmp_path / "e2.bundle")]
        )
        == 0
    )
    assert (tmp_path / "e2.bundle").stat().st_mode & 0o777 == 0o600
    other = ["join", str(tmp_path / "e2.bundle"), "--config", str(agent_toml), "--force"]
    assert agent_main(other) == 1
    assert "the bundle is for 'edge-2'" in capsys.readouterr().err


def test_enroll_without_a_ca_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _controller(tmp_path, ca=False)
    assert controller_main(["enroll", "edge-1", "--config", str(config)]) == 2
    assert "cloud-controller tls init" in capsys.readouterr().err
    assert load_controller_config(config).agents.tls


_ids = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)


@given(
    node=_ids,
    tier=st.sampled_from(["device", "edge", "regional", "cloud"]),
    port=st.integers(1, 65535),
    password=st.text(min_size=1, max_size=40),
    mutual=st.booleans(),
)
def test_bundle_round_trip(node: str, tier: str, port: int, password: str, mutual: bool) -> None:
    pem = "-----BEGIN X-----\n" if mutual else ""
    bundle = Bundle(node, tier, "broker.local", port, True, node, password, "CA", pem, pem)
    token = encode_bundle(bundle)
    assert token.isascii() and " " not in token
    assert decode_bundle(token) == bundle


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("hello", "not an enrolment bundle"),
        ("cj1.%%%", "damaged"),
        (encode_bundle(Bundle("a/b", "edge", "h", 1, True, "a", "p", "CA")), "node_id"),
        (encode_bundle(Bundle("a", "edge", "h", 1, True, "a", "p")), "ca_pem"),
        (encode_bundle(Bundle("a", "edge", "h", 1, False, "a", "p", "", "C", "")), "key_pem"),
    ],
)
def test_bad_bundles_are_refused_with_the_reason(token: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        decode_bundle(token)


@pytest.mark.broker
def test_a_mutual_tls_bundle_connects_and_a_certless_client_does_not(tmp_path: Path) -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    config = _controller(tmp_path, mutual=True)
    certs = tmp_path / "certs"
    assert (
        controller_main(
            [
                "--config",
                str(config),
                "tls",
                "issue",
                "server",
                "--server",
                "--host",
                "localhost",
                "--out",
                str(certs),
            ]
        )
        == 0
    )
    bundle_file = tmp_path / "edge-1.bundle"
    assert (
        controller_main(["--config", str(config), "enroll", "edge-1", "--out", str(bundle_file)])
        == 0
    )
    agent_toml = tmp_path / "device" / "agent.toml"
    assert agent_main(["join", str(bundle_file), "--config", str(agent_toml)]) == 0
    cfg = load_agent_config(agent_toml)
    assert cfg.broker.cert_file and Path(cfg.broker.key_file).stat().st_mode & 0o777 == 0o600

    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"per_listener_settings false\nallow_anonymous false\npassword_file {tmp_path / 'passwd'}\n"
        f"persistence false\nuser root\nlistener {port} 127.0.0.1\ncafile {certs / 'ca.crt'}\n"
        f"certfile {certs / 'server.crt'}\nkeyfile {certs / 'server.key'}\n"
        "require_certificate true\nuse_username_as_clientid true\n"
    )
    broker = subprocess.Popen(
        [find_mosquitto() or "", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for_port("127.0.0.1", port, 10.0)
        assert (
            _connects(
                port,
                cfg.broker.ca_file,
                cfg.broker.password,
                cfg.broker.cert_file,
                cfg.broker.key_file,
            )
            == 0
        )
        assert _connects(port, cfg.broker.ca_file, cfg.broker.password, "", "") not in (
            0,
            "no answer",
        )
    finally:
        stop_process(broker)


def _connects(port: int, ca: str, password: str, cert: str, key: str) -> int | str:
    """The CONNACK reason code (0 = accepted), the TLS error's text, or "closed" when the
    broker closed the connection without a CONNACK (with TLS 1.3 a missing client
    certificate is found after the client's handshake has returned)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="x")
    client.username_pw_set("edge-1", password)
    client.tls_set(ca_certs=ca, certfile=cert or None, keyfile=key or None)
    answered = threading.Event()
    result: list[int] = []

    def on_connect(_c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        result.append(int(reason.value))  # type: ignore[attr-defined]
        answered.set()

    def on_disconnect(_c: object, _u: object, _f: object, _reason: object, _p: object) -> None:
        answered.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect("localhost", port)
    except (ssl.SSLError, OSError) as exc:
        return str(exc)
    client.loop_start()
    try:
        if not answered.wait(30):
            return "no answer"
        return result[0] if result else "closed"
    finally:
        client.loop_stop()
        client.disconnect()


def test_a_system_wide_config_keeps_its_state_in_var_lib() -> None:
    from cloud.cli import default_state_dir

    assert default_state_dir(Path("/etc/continuum/controller.toml")) == "/var/lib/continuum"
    assert default_state_dir(Path("/home/me/controller.toml")) == "controller-state"

"""The shipped unit puts tasks on the other side of a user boundary (issue 11): the agent runs
as root with a bounded capability set, tasks as ``executor.run_as`` (another user), without a
way back to privileges, and nothing of the service survives its stop."""

from __future__ import annotations

from pathlib import Path

from edge_agent.config import AgentConfig

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "edge-agent.service"


def _unit() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def test_tasks_run_as_another_user_than_the_agent() -> None:
    unit = _unit()
    assert unit["User"] == "root" and "Group" not in unit
    assert AgentConfig().executor.run_as not in ("", "root")


def test_root_is_bounded_and_tasks_cannot_regain_it() -> None:
    unit = _unit()
    assert set(unit["CapabilityBoundingSet"].split()) == {
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_KILL",
        "CAP_CHOWN",
        "CAP_FOWNER",
        "CAP_DAC_OVERRIDE",
    }
    for key in ("NoNewPrivileges", "RestrictSUIDSGID", "ProtectHome", "PrivateTmp"):
        assert unit[key] == "true", key
    assert unit["ProtectSystem"] == "strict"


def test_state_directory_is_private_and_nothing_outlives_the_service() -> None:
    unit = _unit()
    assert unit["StateDirectoryMode"] == "0700"
    assert unit["KillMode"] == "mixed"
    # a cgroup per task attempt below the service's: delegated, so writable
    assert unit["Delegate"] == "yes" and "ProtectControlGroups" not in unit

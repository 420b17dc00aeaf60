#!/bin/sh
# Install the Continuum edge agent on a device (Debian/Ubuntu/Raspberry Pi OS, systemd).
#
#   sudo sh install-agent.sh --node-id edge-1 --broker mqtt.example.org [--tier edge] \
#        [--port 1883] [--username edge-1] [--password-file FILE] [--tls --ca-file FILE \
#        [--cert-file FILE --key-file FILE]] [--package 'continuum-edge[agent]'] [--no-start]
#
# What it does (idempotent, safe to re-run for an upgrade):
#   1. creates the system user `edge-agent` (no login, no home);
#   2. creates a venv in /opt/edge-agent/.venv and runs `pip install 'continuum-edge[agent]'`
#      (or --package: a wheel file or a path to a checkout);
#   3. writes /etc/edge-agent/agent.toml with `edge-agent init --node-id ... --broker ...`
#      (an existing config is kept), the password into agent.env (mode 0600);
#   4. installs deploy/edge-agent.service and enables it.
set -eu

NODE_ID=""
BROKER=""
PORT=1883
TIER=edge
USERNAME=""
PASSWORD_FILE=""
TLS=false
CA_FILE=""
CERT_FILE=""
KEY_FILE=""
PACKAGE="continuum-edge[agent]"
START=true
PREFIX=/opt/edge-agent
CONF_DIR=/etc/edge-agent
SERVICE_USER=edge-agent
HERE=$(cd "$(dirname "$0")" && pwd)

die() { echo "install-agent: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --node-id) NODE_ID=$2; shift 2 ;;
        --broker) BROKER=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --tier) TIER=$2; shift 2 ;;
        --username) USERNAME=$2; shift 2 ;;
        --password-file) PASSWORD_FILE=$2; shift 2 ;;
        --tls) TLS=true; shift ;;
        --ca-file) CA_FILE=$2; shift 2 ;;
        --cert-file) CERT_FILE=$2; shift 2 ;;
        --key-file) KEY_FILE=$2; shift 2 ;;
        --package) PACKAGE=$2; shift 2 ;;
        --no-start) START=false; shift ;;
        -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[ "$(id -u)" = 0 ] || die "run as root (sudo)"
[ -n "$NODE_ID" ] || die "--node-id is required (letters, digits, . _ -; also the broker username)"
command -v python3 >/dev/null || die "python3 (3.11 or later) is required"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "python3 must be 3.11 or later"
python3 -c 'import venv, ensurepip' 2>/dev/null || die "python3-venv is missing (apt-get install python3-venv)"

# 1. the service user
if ! id "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /var/lib/edge-agent \
        --shell /usr/sbin/nologin "$SERVICE_USER"
fi

# 2. the venv and the package
mkdir -p "$PREFIX"
[ -x "$PREFIX/.venv/bin/python" ] || python3 -m venv "$PREFIX/.venv"
"$PREFIX/.venv/bin/pip" install --quiet --upgrade pip
"$PREFIX/.venv/bin/pip" install --quiet --upgrade "$PACKAGE"

# 3. the config (kept if present: re-running upgrades the code only)
mkdir -p "$CONF_DIR"
CONFIG="$CONF_DIR/agent.toml"
if [ ! -f "$CONFIG" ]; then
    set -- --path "$CONFIG" --node-id "$NODE_ID" --tier "$TIER" --broker "$BROKER:$PORT"
    [ -n "$USERNAME" ] && set -- "$@" --username "$USERNAME"
    [ "$TLS" = true ] && set -- "$@" --tls
    [ -n "$CA_FILE" ] && set -- "$@" --ca-file "$CA_FILE"
    [ -n "$CERT_FILE" ] && set -- "$@" --cert-file "$CERT_FILE" --key-file "$KEY_FILE"
    # Writes the commented example with this device's values, validated (exit 2 if not).
    "$PREFIX/.venv/bin/edge-agent" init "$@" >/dev/null || die "cannot write $CONFIG"
fi
if [ -n "$PASSWORD_FILE" ]; then
    umask 077
    printf 'EDGE_AGENT_BROKER_PASSWORD=%s\n' "$(cat "$PASSWORD_FILE")" > "$CONF_DIR/agent.env"
    umask 022
fi
chown -R root:"$SERVICE_USER" "$CONF_DIR"
chmod 0750 "$CONF_DIR"
chmod 0640 "$CONFIG"
[ -f "$CONF_DIR/agent.env" ] && chmod 0600 "$CONF_DIR/agent.env"
# Validate before installing the unit: every problem is listed at once.
"$PREFIX/.venv/bin/python" -c "import sys; from edge_agent.config import load_config; load_config(sys.argv[1])" "$CONFIG" \
    || die "$CONFIG is not valid; fix it and re-run"

# 4. the systemd unit
install -m 0644 "$HERE/edge-agent.service" /etc/systemd/system/edge-agent.service
systemctl daemon-reload
systemctl enable edge-agent >/dev/null
if [ "$START" = true ]; then
    systemctl restart edge-agent
    echo "edge-agent started; check with: systemctl status edge-agent; $PREFIX/.venv/bin/edge-agent status --config $CONFIG"
else
    echo "edge-agent installed (not started): systemctl start edge-agent"
fi

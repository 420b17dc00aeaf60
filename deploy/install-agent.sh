#!/bin/sh
# Install the Continuum edge agent on a device (Debian/Ubuntu/Raspberry Pi OS, systemd).
#
#   sudo sh install-agent.sh --bundle FILE|TOKEN          # from `cloud-controller enroll`
#   sudo sh install-agent.sh --node-id edge-1 --broker mqtt.example.org [--port 8883] \
#        [--tier edge] [--username edge-1] [--password-file FILE] \
#        [--tls --ca-file FILE [--cert-file FILE --key-file FILE]]
#   common: [--package WHEEL|DIR|NAME] [--python python3] [--no-start] [--no-systemd]
#           [--dry-run] [--root DIR]
#
# Needs deploy/install-common.sh and deploy/edge-agent.service beside it (copy deploy/).
# What it does, after checking root, Python >= 3.11 with venv, systemd, and that the package
# can be had (nothing is changed when a check fails):
#   1. (no service user: edge-agent.service runs the agent as root with a bounded capability
#      set, so that tasks run as executor.run_as, another user);
#   2. creates /opt/edge-agent/.venv and installs the package with its `agent` extra (default:
#      the checkout this script is in; --package: a wheel, a checkout or a published name),
#      and links edge-agent into /usr/local/bin;
#   3. writes /etc/edge-agent/agent.toml: with --bundle through `edge-agent join` (broker,
#      TLS, password and certificates from the bundle, secrets 0600), else with
#      `edge-agent init` from the options;
#   4. installs edge-agent.service, enables it and (re)starts it.
# Re-running upgrades the package; options given again that differ from the last run are
# reported and applied (the previous config is kept as agent.toml.bak); options left out
# keep their last value. After an install from a bundle, the bundle's values are the last
# run's: a re-run without --bundle keeps the node id, its password file and certificates,
# and applies only the options given (a different --node-id or --username is refused: the
# bundle's password is that node's; enroll the new name and re-run with its bundle).
# --dry-run prints the steps without doing them; --root DIR puts every path under DIR
# (tests), creating no user.
set -eu

NAME=install-agent
SERVICE_USER=""  # the unit runs the agent as root (tasks as executor.run_as)
PREFIX=/opt/edge-agent
CONF_DIR=/etc/edge-agent
STATE_DIR=/var/lib/edge-agent
UNIT=edge-agent.service
EXTRA=agent
RUN_HINT="edge-agent run --config $CONF_DIR/agent.toml"
. "$(cd "$(dirname "$0")" && pwd)/install-common.sh"

NODE_ID="" BROKER="" PORT="" TIER="" USERNAME="" TLS="" CA_FILE="" CERT_FILE="" KEY_FILE=""
PASSWORD_FILE="" BUNDLE="" SECRET_FILE=""
usage() { sed -n '2,/^set -eu/p' "$0" | sed '$d'; }
while [ $# -gt 0 ]; do
    parse_common_option "$@"
    if [ "$SHIFT" -gt 0 ]; then shift "$SHIFT"; continue; fi
    case "$1" in
        --bundle|--node-id|--broker|--port|--tier|--username|--password-file|--ca-file|\
        --cert-file|--key-file) [ $# -ge 2 ] || die "$1 needs a value" ;;
    esac
    case "$1" in
        --bundle) BUNDLE=$2; shift 2 ;;
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
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

# Options not given keep the last install's values (install.env), then the defaults.
given_node=$NODE_ID given_broker=$BROKER given_port=$PORT given_tier=$TIER
given_user=$USERNAME given_tls=$TLS given_ca=$CA_FILE given_cert=$CERT_FILE given_key=$KEY_FILE
load_settings
# A node joined from a bundle (SECRET_FILE: its broker.password_file) keeps its name.
if [ -z "$BUNDLE" ] && [ -n "$SECRET_FILE" ] && { [ "${given_node:-$NODE_ID}" != "$NODE_ID" ] \
    || [ "${given_user:-$USERNAME}" != "$USERNAME" ]; }; then
    die "this device joined as $NODE_ID from a bundle, whose password is that node's: \
enroll the new name and re-run with its --bundle"
fi
# TLS without a port means the TLS listener's port, not the plaintext one kept from before.
if [ "$given_tls" = true ] && [ -z "$given_port" ] && [ "${PORT:-1883}" = 1883 ]; then
    given_port=8883
fi
NODE_ID=${given_node:-${NODE_ID:-}} BROKER=${given_broker:-${BROKER:-}}
PORT=${given_port:-${PORT:-1883}} TIER=${given_tier:-${TIER:-edge}}
USERNAME=${given_user:-${USERNAME:-}} TLS=${given_tls:-${TLS:-false}}
CA_FILE=${given_ca:-${CA_FILE:-}} CERT_FILE=${given_cert:-${CERT_FILE:-}}
KEY_FILE=${given_key:-${KEY_FILE:-}}

CONFIG="$ROOT$CONF_DIR/agent.toml"
if [ -z "$BUNDLE" ] && [ -z "$NODE_ID" ] && [ ! -f "$CONFIG" ]; then
    die "--bundle (from cloud-controller enroll) or --node-id is required"
fi
[ -z "$BUNDLE" ] || [ -e "$BUNDLE" ] || case "$BUNDLE" in cj*) ;; *) die "bundle $BUNDLE not found" ;; esac
[ -z "$PASSWORD_FILE" ] || [ -r "$PASSWORD_FILE" ] || die "cannot read $PASSWORD_FILE"
precheck

say "installing the edge agent under ${ROOT:-/}"
SETTINGS="NODE_ID BROKER PORT TIER USERNAME TLS CA_FILE CERT_FILE KEY_FILE SECRET_FILE"
# shellcheck disable=SC2086  # a list of names
[ -n "$BUNDLE" ] || record_settings $SETTINGS  # from a bundle: once it is applied, below
ensure_user
ensure_venv
link_tools edge-agent
BIN="$ROOT$PREFIX/.venv/bin"

# settings_of CONFIG: the settings (as install.env assignments) a joined config holds.
settings_of() {
    "$BIN/python" - "$1" <<'EOF'
import shlex, sys
from edge_agent.config import load_config
cfg = load_config(sys.argv[1])
node, broker = cfg.node, cfg.broker
for name, value in (
    ("NODE_ID", node.id), ("TIER", node.tier), ("BROKER", broker.host),
    ("PORT", broker.port), ("USERNAME", broker.username), ("TLS", str(broker.tls).lower()),
    ("CA_FILE", broker.ca_file), ("CERT_FILE", broker.cert_file),
    ("KEY_FILE", broker.key_file), ("SECRET_FILE", broker.password_file),
):
    print(f"{name}={shlex.quote(str(value))}")
EOF
}

# 3. the config
run mkdir -p "$ROOT$CONF_DIR"
if [ -n "$BUNDLE" ]; then
    force=""
    [ -f "$CONFIG" ] && force=--force
    say "writing $CONFIG from the bundle"
    run "$BIN/edge-agent" join "$BUNDLE" --config "$CONFIG" --state-dir "$ROOT$STATE_DIR" \
        $force || die "the bundle was not applied"
    # What the bundle set becomes this install's settings, for the next run to keep.
    if [ "$DRY_RUN" = false ]; then
        joined=$(settings_of "$CONFIG") || die "cannot read back $CONFIG"
        eval "$joined"
    fi
    # shellcheck disable=SC2086
    record_settings $SETTINGS
    CHANGED=true
elif [ "$CHANGED" = true ] || [ ! -f "$CONFIG" ]; then
    set -- --node-id "$NODE_ID" --tier "$TIER" --state-dir "$ROOT$STATE_DIR"
    [ -n "$BROKER" ] && set -- "$@" --broker "$BROKER:$PORT"
    [ -n "$USERNAME" ] && set -- "$@" --username "$USERNAME"
    [ "$TLS" = true ] && set -- "$@" --tls
    [ -n "$CA_FILE" ] && set -- "$@" --ca-file "$CA_FILE"
    [ -n "$CERT_FILE" ] && set -- "$@" --cert-file "$CERT_FILE" --key-file "$KEY_FILE"
    [ -n "$SECRET_FILE" ] && set -- "$@" --password-file "$SECRET_FILE"
    if [ -f "$CONFIG" ]; then run cp -p "$CONFIG" "$CONFIG.bak"; say "previous config kept as $CONFIG.bak"; fi
    say "writing $CONFIG"
    # The commented example with this device's values, validated (exit 2 if not).
    run "$BIN/edge-agent" init --path "$CONFIG" --force "$@" || die "cannot write $CONFIG"
fi
if [ -n "$PASSWORD_FILE" ]; then
    # The password goes to agent.env (read by the unit), never into the config.
    if [ "$DRY_RUN" = true ]; then
        say "would write $ROOT$CONF_DIR/agent.env (0600)"
    else
        (umask 077; printf 'EDGE_AGENT_BROKER_PASSWORD=%s\n' "$(cat "$PASSWORD_FILE")" \
            > "$ROOT$CONF_DIR/agent.env")
    fi
fi
run chmod 0700 "$ROOT$CONF_DIR"
if [ "$DRY_RUN" = false ]; then
    chmod 0600 "$CONFIG"
    # Validate before starting anything: every problem is listed at once.
    "$BIN/python" -c "import sys; from edge_agent.config import load_config; load_config(sys.argv[1])" \
        "$CONFIG" || die "$CONFIG is not valid; fix it and re-run"
fi

# 4. the unit
install_unit
start_unit

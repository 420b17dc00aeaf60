#!/bin/sh
# Install the Continuum cloud controller on a host (Debian/Ubuntu, systemd), beside Mosquitto.
#
#   sudo sh deploy/install-controller.sh --broker-host mqtt.example.org [--agents-port 8883] \
#        [--password-file /etc/mosquitto/continuum/passwd] [--broker-user controller]
#   common: [--package WHEEL|DIR|NAME] [--python python3] [--no-start] [--no-systemd]
#           [--dry-run] [--root DIR]
#
# Needs deploy/install-common.sh and deploy/cloud-controller.service beside it.
# What it does, after checking root, Python >= 3.11 with venv, systemd, and that the package
# can be had (nothing is changed when a check fails):
#   1. creates the system user `continuum` (no login, home /var/lib/continuum);
#   2. creates /opt/continuum/.venv and installs the package with its `controller` extra
#      (default: the checkout this script is in), and links cloud-controller and continuum
#      into /usr/local/bin;
#   3. writes /etc/continuum/controller.toml with `cloud-controller init`: state in
#      /var/lib/continuum, a fresh API token, the controller's broker user with a generated
#      password added to the broker's password file (created if missing), and how agents
#      reach the broker (--broker-host, --agents-port) for `cloud-controller enroll`;
#   4. installs cloud-controller.service, enables it and (re)starts it unless --no-start.
# Re-running upgrades the package; options given again that differ from the last run are
# reported and applied (the config is rewritten with the same API token and broker password,
# the previous one kept as controller.toml.bak); options left out keep their last value.
set -eu

NAME=install-controller
SERVICE_USER=continuum
PREFIX=/opt/continuum
CONF_DIR=/etc/continuum
STATE_DIR=/var/lib/continuum
UNIT=cloud-controller.service
EXTRA=controller
RUN_HINT="cloud-controller run --config $CONF_DIR/controller.toml"
. "$(cd "$(dirname "$0")" && pwd)/install-common.sh"

BROKER_HOST="" AGENTS_PORT="" PASSWORD_FILE="" BROKER_USER=""
usage() { sed -n '2,/^set -eu/p' "$0" | sed '$d'; }
while [ $# -gt 0 ]; do
    parse_common_option "$@"
    if [ "$SHIFT" -gt 0 ]; then shift "$SHIFT"; continue; fi
    case "$1" in
        --broker-host|--agents-port|--password-file|--broker-user)
            [ $# -ge 2 ] || die "$1 needs a value" ;;
    esac
    case "$1" in
        --broker-host) BROKER_HOST=$2; shift 2 ;;
        --agents-port) AGENTS_PORT=$2; shift 2 ;;
        --password-file) PASSWORD_FILE=$2; shift 2 ;;
        --broker-user) BROKER_USER=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

given_host=$BROKER_HOST given_port=$AGENTS_PORT given_pw=$PASSWORD_FILE given_user=$BROKER_USER
load_settings
BROKER_HOST=${given_host:-${BROKER_HOST:-}}
AGENTS_PORT=${given_port:-${AGENTS_PORT:-8883}}
PASSWORD_FILE=${given_pw:-${PASSWORD_FILE:-/etc/mosquitto/continuum/passwd}}
BROKER_USER=${given_user:-${BROKER_USER:-controller}}
[ -n "$BROKER_HOST" ] || die "--broker-host is required (the broker's name as agents dial it)"
precheck

say "installing the cloud controller under ${ROOT:-/}"
record_settings BROKER_HOST AGENTS_PORT PASSWORD_FILE BROKER_USER
ensure_user
ensure_venv
BIN="$ROOT$PREFIX/.venv/bin"
link_tools cloud-controller continuum

# 3. the config
CONFIG="$ROOT$CONF_DIR/controller.toml"
if [ "$CHANGED" = true ] || [ ! -f "$CONFIG" ]; then
    set -- --path "$CONFIG" --state-dir "$ROOT$STATE_DIR" --broker-user "$BROKER_USER" \
        --password-file "$ROOT$PASSWORD_FILE" --agents-broker "$BROKER_HOST:$AGENTS_PORT"
    if [ -f "$CONFIG" ]; then
        run cp -p "$CONFIG" "$CONFIG.bak"
        say "previous config kept as $CONFIG.bak"
        set -- "$@" --force --keep-secrets
    fi
    say "writing $CONFIG"
    run "$BIN/cloud-controller" init "$@" || die "cannot write $CONFIG"
fi
run mkdir -p "$ROOT$STATE_DIR"
own "$CONFIG"
[ -n "$ROOT" ] || run chown "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"
if [ "$DRY_RUN" = false ]; then
    "$BIN/python" -c "import sys; from cloud.config import load_config; load_config(sys.argv[1])" \
        "$CONFIG" || die "$CONFIG is not valid; fix it and re-run"
fi

# 4. the unit
install_unit
start_unit
say "next: the broker (deploy/mosquitto, README 'Run it on a fleet'), then enroll nodes: \
cloud-controller enroll NODE"

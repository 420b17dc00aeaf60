# Shared steps of install-agent.sh and install-controller.sh (sourced, not run).
#
# The caller sets NAME (log prefix), SERVICE_USER (empty: the service runs as root), PREFIX, CONF_DIR, STATE_DIR, UNIT, EXTRA
# and the option variables below, then calls, in order:
#   parse_common_option (in its option loop), precheck, record_settings, ensure_user,
#   ensure_venv, link_tools, install_unit, start_unit.
# Contract: precheck changes nothing; every later step prints what it does, and under
# --dry-run only prints it. Under --root DIR every path (also those written into configs and
# units) is under DIR, no user is created and nothing is chowned: for tests and image builds.

ROOT=""
DRY_RUN=false
START=true
SYSTEMD=true
PYTHON=python3
PACKAGE=""
HERE=$(cd "$(dirname "$0")" && pwd -P)

die() { echo "$NAME: $*" >&2; exit 1; }
say() { echo "$NAME: $*"; }

# run CMD...: run it, or under --dry-run say it.
run() {
    if [ "$DRY_RUN" = true ]; then say "would run: $*"; else "$@"; fi
}

# parse_common_option "$@": handles one common option; sets SHIFT (0 = not ours).
parse_common_option() {
    SHIFT=0
    case "$1" in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=${2%/}; SHIFT=2 ;;
        --dry-run) DRY_RUN=true; SHIFT=1 ;;
        --no-start) START=false; SHIFT=1 ;;
        --no-systemd) SYSTEMD=false; START=false; SHIFT=1 ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON=$2; SHIFT=2 ;;
        --package) [ $# -ge 2 ] || die "--package needs a value"; PACKAGE=$2; SHIFT=2 ;;
    esac
}

# The package to install, with the service's extra always included.
package_spec() {
    pkg=$PACKAGE
    if [ -z "$pkg" ]; then
        # Run from a checkout (or an unpacked release): install that.
        if [ -f "$HERE/../pyproject.toml" ]; then pkg=$(cd "$HERE/.." && pwd); else pkg=continuum-edge; fi
    fi
    case "$pkg" in
        *\[*) echo "$pkg" ;;
        *) echo "$pkg[$EXTRA]" ;;
    esac
}

# Every check before the first change: a failed install leaves nothing behind.
precheck() {
    if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then die "run as root (sudo), or use --root DIR"; fi
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON (Python 3.11 or later) is required"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PYTHON must be Python 3.11 or later"
    "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
        || die "python3-venv is missing (apt-get install python3-venv)"
    if [ "$SYSTEMD" = true ]; then
        command -v systemctl >/dev/null 2>&1 && [ -d "$ROOT/run/systemd/system" ] \
            || die "systemd is not running here ($ROOT/run/systemd/system is missing); use \
--no-systemd to install the files without a service"
    fi
    SPEC=$(package_spec)
    base=${SPEC%%\[*}
    case "$base" in
        /*|./*|../*|*.whl|*.tar.gz)
            [ -e "$base" ] || die "package $base does not exist" ;;
        *)
            # A name: ask the package index now, not after the user and venv exist.
            tmp=$(mktemp -d)
            if ! { "$PYTHON" -m venv "$tmp/venv" >/dev/null 2>&1 \
                && "$tmp/venv/bin/pip" download --quiet --no-deps -d "$tmp/dl" "$base" \
                    >/dev/null 2>&1; }; then
                rm -rf "$tmp"
                die "package $base cannot be downloaded (not published, or no network); \
pass --package WHEEL or a checkout"
            fi
            rm -rf "$tmp" ;;
    esac
}

# record_settings VAR...: compare the named variables with the last install's (kept in
# $CONF_DIR/install.env), say what changed, and keep the new values. Sets CHANGED=true when
# any differs (or on a first install).
record_settings() {
    file="$ROOT$CONF_DIR/install.env"
    CHANGED=false
    [ -f "$file" ] || CHANGED=true
    new=""
    for var in "$@"; do
        eval "value=\${$var}"
        new="$new$var='$value'
"
        if [ -f "$file" ]; then
            old=$(sed -n "s/^$var='\\(.*\\)'\$/\\1/p" "$file")
            if [ "$old" != "$value" ]; then
                say "changed: $var '$old' -> '$value'"
                CHANGED=true
            fi
        fi
    done
    if [ "$DRY_RUN" = true ]; then
        say "would record the settings in $file"
    else
        mkdir -p "$ROOT$CONF_DIR"
        printf '%s' "$new" > "$file"
    fi
}

# load_settings: the last install's values, as defaults for options not given this time.
load_settings() {
    file="$ROOT$CONF_DIR/install.env"
    # shellcheck disable=SC1090
    [ -f "$file" ] && . "$file"
    return 0
}

ensure_user() {
    [ -n "$SERVICE_USER" ] || return 0  # the service runs as root
    if [ -n "$ROOT" ]; then say "--root: not creating the user $SERVICE_USER"; return; fi
    id "$SERVICE_USER" >/dev/null 2>&1 && return
    run useradd --system --no-create-home --home-dir "$STATE_DIR" --shell /usr/sbin/nologin \
        "$SERVICE_USER"
}

ensure_venv() {
    venv="$ROOT$PREFIX/.venv"
    if [ ! -x "$venv/bin/python" ]; then
        run mkdir -p "$ROOT$PREFIX"
        run "$PYTHON" -m venv "$venv"
    fi
    say "installing $SPEC into $venv"
    run "$venv/bin/pip" install --quiet --upgrade "$SPEC" || die "pip install $SPEC failed"
}

# link_tools TOOL...: the venv's commands on the administrator's PATH.
link_tools() {
    run mkdir -p "$ROOT/usr/local/bin"
    for tool in "$@"; do
        run ln -sf "$ROOT$PREFIX/.venv/bin/$tool" "$ROOT/usr/local/bin/$tool"
    done
}

# own FILE...: the service user reads these (its config); their directory is traversable by
# its group. Nothing else changes hands: the CA key beside the config stays root's. Not
# under --root (no such user there), nor for a service that runs as root.
own() {
    if [ -n "$ROOT" ] || [ -z "$SERVICE_USER" ]; then return; fi
    run chown root:"$SERVICE_USER" "$(dirname "$1")"
    run chmod 0750 "$(dirname "$1")"
    run chown "$SERVICE_USER" "$@"
}

# install_unit: the unit file, with every absolute path under --root when given.
install_unit() {
    target="$ROOT/etc/systemd/system/$UNIT"
    if [ "$DRY_RUN" = true ]; then say "would install $target"; return; fi
    mkdir -p "$(dirname "$target")"
    if [ -n "$ROOT" ]; then
        sed -e "s#\\([ =-]\\)/\\(opt\\|etc\\|var\\)/#\\1$ROOT/\\2/#g" "$HERE/$UNIT" > "$target.tmp"
    else
        cp "$HERE/$UNIT" "$target.tmp"
    fi
    if ! cmp -s "$target.tmp" "$target" 2>/dev/null; then CHANGED=true; fi
    chmod 0644 "$target.tmp"
    mv "$target.tmp" "$target"
}

# start_unit: enable, and (re)start when something changed or it is not running.
start_unit() {
    service=${UNIT%.service}
    if [ "$SYSTEMD" = false ]; then
        say "installed without systemd; run: $ROOT$PREFIX/.venv/bin/$RUN_HINT"
        return
    fi
    run systemctl daemon-reload
    run systemctl enable "$service"
    if [ "$START" = false ]; then
        say "installed, not started: systemctl start $service"
    elif [ "$CHANGED" = true ] || ! systemctl is-active --quiet "$service"; then
        run systemctl restart "$service"
        [ "$DRY_RUN" = true ] || say "started $service; check: systemctl status $service"
    else
        say "$service is running and nothing changed"
    fi
}

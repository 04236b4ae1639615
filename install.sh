#!/usr/bin/env bash
# Install edge-recorder as a hardened systemd service (Raspberry Pi OS Bookworm or Trixie, 64-bit).
#
#   sudo ./install.sh                  install, or upgrade in place (the config is never touched)
#   sudo ./install.sh --uninstall      remove the program, unit, user entry point and models;
#                                      keep the data (clips, outbox, activation log) and an
#                                      edited config
#   sudo ./install.sh --purge          remove all of that, the data, the config and the user
#
# Idempotent: running it again upgrades to this checkout. What it does, in order: apt packages,
# the system user and groups (systemd-sysusers), a virtual environment in /opt/edge-recorder,
# /usr/local/bin/edge, /etc/edge-recorder/config.toml (only when missing), the verified models
# in /var/lib/edge-recorder/models, and the service (enabled and started).
#
# For tests and image builds: --root DIR installs under DIR instead of / (no apt, no running
# systemd: the unit is enabled offline with systemctl --root; the user is created in DIR/etc).
set -euo pipefail

NAME=edge-recorder
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=${DESTDIR:-/}
ACTION=install
APT=1
SYSTEMCTL=1
START=1
PIP_ARGS=()
MODELS_FROM=""
PROFILE=""
MUTE_PIN=""
PYTHON=${PYTHON:-python3}

# Debian packages the service needs at run time (the build tools are for PyAudio's C module).
APT_PACKAGES=(python3 python3-venv python3-dev gcc libc6-dev portaudio19-dev libasound2-dev
              alsa-utils libsndfile1 ca-certificates)
# GPIO on the Pi: gpiozero's lgpio backend, from the distribution (it has no wheel for every
# Python the targets ship), seen by the venv through --system-site-packages.
APT_PI_PACKAGES=(python3-lgpio)

usage() {
  cat <<EOF
usage: sudo $0 [--uninstall | --purge] [options]

  --uninstall          remove edge-recorder but keep its data and an edited config
  --purge              remove edge-recorder, its data, its config and its user
  --profile NAME       hardware.profile for a new config (\`edge hardware profiles\` lists them)
  --mute-pin PIN       hardware.mute_pin for a new config: the switch's pin (GPIO22), or none
  --models-from PATH   install the models from a local wheel or folder (no download)
  --root DIR           install under DIR instead of / (implies --no-apt; enables offline)
  --no-apt             do not install Debian packages
  --no-systemctl       do not enable, start or stop the service
  --no-start           enable the service but do not (re)start it
  --pip-args "ARGS"    extra arguments for pip (e.g. "--no-deps" in the layout tests)
  -h, --help           this help
EOF
}

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "==> $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --uninstall) ACTION=uninstall ;;
    --purge) ACTION=purge ;;
    --profile) PROFILE=${2:?--profile needs a name}; shift ;;
    --mute-pin) MUTE_PIN=${2:?--mute-pin needs a pin, e.g. GPIO22, or none}; shift ;;
    --models-from) MODELS_FROM=${2:?--models-from needs a path}; shift ;;
    --root) ROOT=${2:?--root needs a directory}; shift ;;
    --no-apt) APT=0 ;;
    --no-systemctl) SYSTEMCTL=0 ;;
    --no-start) START=0 ;;
    --pip-args) read -r -a PIP_ARGS <<<"${2:-}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'; see the list above" ;;
  esac
  shift
done

ROOT=${ROOT%/}
OFFLINE=0
if [ -n "$ROOT" ]; then
  [ -d "$ROOT" ] || die "--root $ROOT is not a directory"
  ROOT=$(cd "$ROOT" && pwd)
  OFFLINE=1
  APT=0
fi
if [ "$OFFLINE" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  die "run it as root: sudo $0 $ACTION"
fi

OPT=$ROOT/opt/$NAME
VENV=$OPT/venv
ETC=$ROOT/etc/$NAME
CONFIG=$ETC/config.toml
STATE=$ROOT/var/lib/$NAME
MODELS=$STATE/models
UNIT=$ROOT/etc/systemd/system/$NAME.service
DROP_INS=$ROOT/etc/systemd/system/$NAME.service.d
NO_NETWORK=$DROP_INS/no-network.conf   # IPAddressDeny while nothing leaves the device
SYSUSERS=$ROOT/etc/sysusers.d/$NAME.conf
WRAPPER=$ROOT/usr/local/bin/edge
PRISTINE=$OPT/config.installed.toml   # the config as first written, to tell an edited one

booted() { [ "$OFFLINE" -eq 0 ] && [ -d /run/systemd/system ]; }

systemctl_do() {
  [ "$SYSTEMCTL" -eq 1 ] || return 0
  if [ "$OFFLINE" -eq 1 ]; then  # no systemd to talk to: only the symlinks, in the root
    case "$1" in enable|disable) systemctl --root="$ROOT" --quiet "$1" "$NAME.service" ;; esac
    return 0
  fi
  if booted; then
    systemctl "$@"
  else
    echo "    (systemd is not running here: skipped 'systemctl $*')"
  fi
}

id_of() {  # id_of passwd|group NAME: the numeric id in the target root, or nothing
  awk -F: -v n="$2" '$1 == n { print $3 }' "$ROOT/etc/$1" 2>/dev/null || true
}

# ---- uninstall ------------------------------------------------------------------------------

uninstall() {
  say "stopping and disabling the service"
  if [ -f "$UNIT" ]; then
    systemctl_do disable --now "$NAME.service" || true
  fi
  say "removing the program, unit, models and entry point"
  local keep_config=0
  if [ -f "$CONFIG" ]; then
    if [ -f "$PRISTINE" ] && cmp -s "$CONFIG" "$PRISTINE"; then
      rm -f "$CONFIG"
    else
      keep_config=1
    fi
  fi
  rm -rf "$OPT" "$MODELS"
  rm -f "$UNIT" "$SYSUSERS" "$WRAPPER" "$ETC/config.example.toml"
  rm -f "$NO_NETWORK"
  rmdir "$DROP_INS" 2>/dev/null || true
  rmdir "$ETC" 2>/dev/null || true
  booted && [ "$SYSTEMCTL" -eq 1 ] && systemctl daemon-reload
  if [ "$ACTION" = purge ]; then
    say "purging the data, the config and the user"
    rm -rf "$STATE" "$ETC" "$ROOT/run/$NAME"
    if [ -n "$(id_of passwd "$NAME")" ]; then
      userdel --prefix "${ROOT:-/}" "$NAME" 2>/dev/null || userdel "$NAME"
    fi
    if [ -n "$(id_of group "$NAME")" ]; then
      groupdel --prefix "${ROOT:-/}" "$NAME" 2>/dev/null || true
    fi
    say "edge-recorder is gone (the journal keeps its log lines until journald rotates them)"
    return
  fi
  [ "$keep_config" -eq 1 ] && echo "    kept your edited config: $CONFIG"
  [ -d "$STATE" ] && echo "    kept the data: $STATE (clips, outbox, activation log)"
  say "uninstalled; '$0 --purge' removes the data, the config and the user as well"
}

if [ "$ACTION" != install ]; then
  uninstall
  exit 0
fi

# ---- install --------------------------------------------------------------------------------

check_platform() {
  local codename arch
  # shellcheck disable=SC1091  # the running system's, not ours
  codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-unknown}")
  arch=$(uname -m)
  case "$codename" in bookworm|trixie) ;; *)
    echo "    note: this is '$codename'; edge-recorder is made for Raspberry Pi OS bookworm or trixie" ;;
  esac
  [ "$arch" = aarch64 ] || echo "    note: this is $arch; the targets are 64-bit Raspberry Pi OS (aarch64)"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON is older than 3.11; edge-recorder needs Python 3.11 or newer"
}

install_apt() {
  [ "$APT" -eq 1 ] || { echo "    (skipped: --no-apt)"; return 0; }
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  for p in "${APT_PI_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        && apt-cache show "$p" >/dev/null 2>&1; then
      missing+=("$p")
    fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

create_user() {
  install -D -m 0644 "$SRC/systemd/$NAME.sysusers" "$SYSUSERS"
  if [ "$OFFLINE" -eq 1 ]; then
    systemd-sysusers --root="$ROOT" >/dev/null
  else
    systemd-sysusers "$SYSUSERS"
  fi
  [ -n "$(id_of passwd "$NAME")" ] || die "systemd-sysusers did not create the user $NAME"
}

make_venv() {
  mkdir -p "$OPT"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
  fi
}

install_package() {
  local extras=""
  grep -q '^pi = ' "$SRC/pyproject.toml" && extras="[pi]"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade \
    ${PIP_ARGS[@]+"${PIP_ARGS[@]}"} "$SRC$extras"
  install -m 0644 "$SRC/README.md" "$OPT/README.md"
  "$VENV/bin/python" -I -c 'import edge; print(edge.__version__)' > "$OPT/VERSION"
  mkdir -p "$(dirname "$WRAPPER")"
  cat > "$WRAPPER" <<EOF
#!/bin/sh
# edge-recorder's command line with the paths the service uses (written by install.sh).
# Run it as the service's user to see what the service sees: sudo -u $NAME edge doctor
export STATE_DIRECTORY="\${STATE_DIRECTORY:-/var/lib/$NAME}"
export EDGE_MODELS_DIR="\${EDGE_MODELS_DIR:-/var/lib/$NAME/models}"
# lgpio makes its notification pipes in \$LG_WD (else the working directory, maybe not writable)
export LG_WD="\${LG_WD:-/tmp}"
exec /opt/$NAME/venv/bin/edge "\$@"
EOF
  chmod 0755 "$WRAPPER"
}

check_config() {
  # Before anything changes: the config this version will run with must be valid. A first
  # install renders one (--profile, --mute-pin); an upgrade checks the one in place.
  local target=$CONFIG
  if [ ! -e "$CONFIG" ]; then
    NEW_CONFIG=$(mktemp)
    trap 'rm -f "$NEW_CONFIG"' EXIT
    {
      echo "# Written by install.sh on $(date -u +%Y-%m-%d). Upgrades never overwrite this file;"
      echo "# config.example.toml next to it documents every key of the installed version."
      echo "# Check it with: edge config check $CONFIG; then: sudo systemctl restart $NAME"
      echo
      # --profile and --mute-pin fill in [hardware]; everything else keeps its default
      awk -v profile="$PROFILE" -v mute="$MUTE_PIN" '
        function set(key, value) { if (value != "") print key " = \"" value "\""; else print }
        /^\[/ { section = $0 }
        section == "[hardware]" && /^profile = / { set("profile", profile); next }
        section == "[hardware]" && /^mute_pin = / { set("mute_pin", mute); next }
        { print }' "$SRC/config.example.toml"
    } > "$NEW_CONFIG"
    target=$NEW_CONFIG
  elif [ -n "$PROFILE$MUTE_PIN" ]; then
    echo "    note: $CONFIG exists; --profile and --mute-pin only apply to a new config"
  fi
  # It prints "network" when the config reaches another machine, else "loopback".
  NETWORK=$("$PYTHON" -I - "$SRC" "$target" "$CONFIG" <<'PY'
import sys

sys.path.insert(0, sys.argv[1])  # this checkout's config checks: only the standard library
from edge.compose.config import load_checked_config
from edge.errors import EdgeError
from edge.service.network import remote_hosts

try:
    cfg = load_checked_config(sys.argv[2])
except EdgeError as exc:
    where = "" if sys.argv[2] != sys.argv[3] else f" (fix {sys.argv[3]} and run it again)"
    sys.exit(f"install.sh: error: {exc}{where}")
print("network" if remote_hosts(cfg) else "loopback")
PY
  ) || exit 1
}

write_config() {
  local uid gid
  gid=$(id_of group "$NAME")
  install -d -m 0750 "$ETC"
  install -m 0644 "$SRC/config.example.toml" "$ETC/config.example.toml"
  if [ -z "$NEW_CONFIG" ]; then
    echo "    kept $CONFIG (an upgrade never changes it; compare with config.example.toml)"
  else
    install -m 0640 "$NEW_CONFIG" "$CONFIG"
    cp -p "$CONFIG" "$PRISTINE"
    echo "    wrote $CONFIG"
  fi
  [ -n "$gid" ] && chown "0:$gid" "$ETC" "$CONFIG" && chmod 0640 "$CONFIG"
  uid=$(id_of passwd "$NAME")
  mkdir -p "$MODELS"
  [ -n "$uid" ] && chown "$uid:$gid" "$STATE" "$MODELS" && chmod 0700 "$STATE"
  return 0
}

fetch_models() {
  # Verified against models/manifest.toml: a mismatch is refused, nothing is half-installed.
  # The checkout's edge.wake.models (standard library only) with the venv's pip, so a bad
  # source fails before the package is built.
  mkdir -p "$MODELS"
  "$VENV/bin/python" -I - "$SRC" "$MODELS" "$MODELS_FROM" <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, sys.argv.pop(1))
from edge.errors import EdgeError
from edge.wake.models import Manifest, ModelStore

store = ModelStore(Path(sys.argv[1]), Manifest.load())
if all(store.status(m.name).state == "ok" for m in store.manifest.models):  # pinned by sha256
    print(f"    models already installed and verified in {store.directory}")
    raise SystemExit(0)
try:
    store.fetch(Path(sys.argv[2]) if sys.argv[2] else None)
except EdgeError as exc:
    raise SystemExit(f"install.sh: error: {exc}") from None
print(f"    {len(store.manifest.models)} models verified (sha256) in {store.directory}")
PY
  local uid
  uid=$(id_of passwd "$NAME")
  [ -z "$uid" ] || chown -R "$uid:$(id_of group "$NAME")" "$MODELS"
}

install_unit() {
  install -D -m 0644 "$SRC/systemd/$NAME.service" "$UNIT"
  # Nothing leaves the device: deny every IP address but loopback (systemd/no-network.conf).
  # Decided now, from the config; running this again after changing it decides again.
  if [ "$NETWORK" = loopback ]; then
    install -D -m 0644 "$SRC/systemd/no-network.conf" "$NO_NETWORK"
    echo "    nothing leaves the device: the service may reach loopback only ($NO_NETWORK)"
  elif [ -e "$NO_NETWORK" ]; then
    rm -f "$NO_NETWORK"
    rmdir "$DROP_INS" 2>/dev/null || true
    echo "    the config reaches another machine: removed $NO_NETWORK"
  fi
  local was_active=0
  booted && systemctl is-active --quiet "$NAME.service" && was_active=1
  booted && [ "$SYSTEMCTL" -eq 1 ] && systemctl daemon-reload
  systemctl_do enable "$NAME.service"
  if [ "$START" -eq 1 ] && booted && [ "$SYSTEMCTL" -eq 1 ]; then
    if [ "$was_active" -eq 1 ]; then
      systemctl restart "$NAME.service"
    else
      systemctl start "$NAME.service" || true
    fi
    sleep 2
    if systemctl is-active --quiet "$NAME.service"; then
      echo "    $NAME is running: journalctl -u $NAME -f"
    else
      echo "    $NAME did not start: run 'sudo systemctl stop $NAME; sudo -u $NAME edge doctor'"
      echo "    to see what is wrong, fix it in $CONFIG, then 'sudo systemctl start $NAME'"
    fi
  fi
}

NEW_CONFIG=""
NETWORK=network
say "checking the platform";            check_platform
say "checking the configuration";       check_config
say "installing Debian packages";       install_apt
say "creating the system user";         create_user
say "making $VENV";                     make_venv
say "fetching and verifying the models"; fetch_models
say "installing edge-recorder into it"; install_package
say "writing the configuration";        write_config
say "installing the service";           install_unit
say "installed edge-recorder $(cat "$OPT/VERSION") ('sudo -u $NAME edge doctor' checks it all)"

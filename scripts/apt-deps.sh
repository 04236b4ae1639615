#!/usr/bin/env bash
# Install the Debian / Raspberry Pi OS packages edge-recorder needs, only those missing.
#   scripts/apt-deps.sh          what running needs (`make run`)
#   scripts/apt-deps.sh --test   that plus the test tooling (`make test`)
# Idempotent: does nothing (and needs no network) when everything is installed.
set -euo pipefail
runtime=(
  python3 python3-venv python3-dev gcc make      # the virtual environment and native wheels
  portaudio19-dev libasound2-dev alsa-utils        # PyAudio / PortAudio / ALSA (arecord)
  libsndfile1                                      # soundfile (WAV/FLAC)
  espeak-ng                                        # the demo's synthesized "hey jarvis"
)
test_tools=(
  sox                                              # test audio
  mosquitto mosquitto-clients                      # the real broker the MQTT tests start
  chromium chromium-driver                         # the dashboard's browser tests (Selenium)
  systemd passwd shellcheck fakeroot               # unit and installer tests: systemd-analyze, sysusers, userdel
  python3-seccomp                                  # the unit's syscall filter, emulated in tests
  debootstrap systemd-container                    # the service under a booted systemd (make test-systemd)
)
packages=("${runtime[@]}")
case "${1:-}" in
  --test) packages+=("${test_tools[@]}") ;;
  "") ;;
  *) echo "usage: $0 [--test]" >&2; exit 2 ;;
esac
# shellcheck disable=SC2206  # a space-separated list, split on purpose
packages+=(${EXTRA_APT_PACKAGES:-})
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"

#!/usr/bin/env bash
# Installs the given Debian packages (the callers list only the missing ones); with sudo
# unless root. Usage: scripts/apt-install.sh WHO PACKAGE...
set -euo pipefail
who=$1; shift
[ $# -gt 0 ] || exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "$who: installing $* (Debian)"
$sudo apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "$@" >/dev/null

#!/usr/bin/env bash
# Install the Debian packages that provide what is missing, as root with apt-get; else say what to install.
# Usage: scripts/need-debs.sh WHAT:PACKAGE...   WHAT is a command name, or an absolute path that must exist.
set -euo pipefail
missing=()
for pair in "$@"; do
  what="${pair%%:*}"
  if [[ "$what" == /* ]]; then [[ -e "$what" ]] || missing+=("${pair##*:}")
  else command -v "$what" >/dev/null || missing+=("${pair##*:}"); fi
done
(( ${#missing[@]} == 0 )) && exit 0
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
  echo "missing Debian packages: ${missing[*]}" >&2
  exit 1
fi
echo "installing ${missing[*]} with apt-get" >&2
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null

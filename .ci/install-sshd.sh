#!/usr/bin/env bash
# Installs what the sshd integration tests need (tests/support/sshd.rs): OpenSSH server and
# client, and sshpass (password-auth tests). Idempotent: installs only what is missing.
# Also creates /run/sshd, sshd's privilege separation dir (needed when it runs as root).
set -euo pipefail

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
{ command -v sftp && command -v ssh-keygen; } >/dev/null 2>&1 || missing+=(openssh-client)
command -v sshpass >/dev/null 2>&1 || missing+=(sshpass)

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-sshd: missing ${missing[*]}; run as root: apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    echo "install-sshd: installing ${missing[*]}"
    apt-get update -qq >/dev/null
    # The package's postinst may try to start a system sshd: harmless (no systemd here),
    # and the tests never use port 22.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$(id -u)" -eq 0 ]; then
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
fi

#!/usr/bin/env bash
# CI: builds the Debian package (packaging/build-deb.sh), installs it on this machine (CI runs
# as root on Debian 12), checks what an operator relies on, then removes and purges it.
# Checks: the binary runs from /usr/bin and is the production build (no `sandbox`, no `demo`:
# packaging/build-deb.sh builds without default features); the unit is installed and NOT
# enabled (nor started); /etc/smsdrop/smsdrop.toml is a conffile, kept by remove and gone after
# purge; the smsdrop user and /var/lib/smsdrop (smsdrop:smsdrop 0750) exist; a reinstall changes
# nothing (postinst is idempotent); completions and man page are where the shells and man look.
# Measured 2026-12-03 on 2 cores shared with other builds (the sandbox then still built in):
# the release build 15 min 47 s (11 min 20 s of CPU) from nothing, cargo deb 9 s, install,
# checks and purge 20 s.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "package check failed: $*" >&2; exit 1; }
step() { echo "--- package: $*"; }

# cargo-deb 3.8: installing it from source took 5 min 29 s (1 min 56 s of CPU) on 2 cores shared
# with other builds, 2026-12-03; it stays in ~/.cargo/bin, so later runs on the machine skip it.
if ! cargo deb --version >/dev/null 2>&1; then
    step "installing cargo-deb"
    time cargo install cargo-deb --locked
fi
if ! command -v dpkg-shlibdeps >/dev/null; then
    apt-get install -y --no-install-recommends dpkg-dev >/dev/null \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends dpkg-dev >/dev/null; }
fi

step "building"
deb=$(packaging/build-deb.sh | tail -n 1)
echo "$deb: $(du -h "$deb" | cut -f1)"
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"

# Whatever happens below, leave the machine without the package.
trap 'dpkg --purge smsdrop >/dev/null 2>&1 || true' EXIT

step "installing"
dpkg --purge smsdrop >/dev/null 2>&1 || true
install_log=$(dpkg -i "$deb" 2>&1) || { echo "$install_log"; fail "dpkg -i"; }
echo "$install_log"
grep -q "NOT enabled or started" <<<"$install_log" || fail "postinst did not tell the operator to configure first"

step "checking"
want="smsdrop $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
got=$(/usr/bin/smsdrop --version)
[[ "$got" == "$want" ]] || fail "/usr/bin/smsdrop --version says '$got', expected '$want'"
# Without the `sandbox` feature clap knows neither subcommand: `--help` lists none, calling one
# is a usage error (exit 2), and `generate` wrote no man page for it.
help=$(/usr/bin/smsdrop --help)
for sub in sandbox demo; do
    if grep -qE "^  $sub " <<<"$help"; then
        fail "/usr/bin/smsdrop --help lists '$sub': the package must be built with --no-default-features"
    fi
    if /usr/bin/smsdrop "$sub" --help >/dev/null 2>&1; then
        fail "/usr/bin/smsdrop $sub runs: the package must be built with --no-default-features"
    fi
    [[ ! -e /usr/share/man/man1/smsdrop-$sub.1.gz ]] || fail "the package has a man page for '$sub'"
done
echo "/usr/bin/smsdrop: no sandbox, no demo"

unit=$(dpkg -L smsdrop | grep -E '/systemd/system/smsdrop\.service$') || fail "no unit in the package"
grep -q '^ExecStart=/usr/bin/smsdrop run$' "$unit" || fail "$unit does not start /usr/bin/smsdrop"
grep -q '^Type=notify$' "$unit" || fail "$unit is not Type=notify"
for link in /etc/systemd/system/*.wants/smsdrop.service; do
    [[ -e "$link" || -L "$link" ]] && fail "the package enabled the unit: $link"
done
# systemctl answers offline (no running systemd, as in a container) for is-enabled.
if state=$(systemctl is-enabled smsdrop 2>/dev/null); [[ "$state" == enabled* ]]; then
    fail "systemctl is-enabled smsdrop: $state"
fi
echo "unit $unit: is-enabled ${state:-unknown (no systemd)}, no .wants link"
if [[ -d /run/systemd/system ]] && systemctl is-active --quiet smsdrop; then
    fail "the package started the service"
fi

[[ -f /etc/smsdrop/smsdrop.toml ]] || fail "/etc/smsdrop/smsdrop.toml missing"
dpkg-query -W -f='${Conffiles}\n' smsdrop | grep -q '^ /etc/smsdrop/smsdrop.toml ' \
    || fail "/etc/smsdrop/smsdrop.toml is not a conffile"
getent passwd smsdrop >/dev/null || fail "no smsdrop user"
getent group smsdrop >/dev/null || fail "no smsdrop group"
[[ "$(stat -c '%U:%G %a' /var/lib/smsdrop)" == "smsdrop:smsdrop 750" ]] \
    || fail "/var/lib/smsdrop is $(stat -c '%U:%G %a' /var/lib/smsdrop), expected smsdrop:smsdrop 750"
for f in /usr/share/bash-completion/completions/smsdrop /usr/share/zsh/vendor-completions/_smsdrop \
    /usr/share/fish/vendor_completions.d/smsdrop.fish /usr/share/man/man1/smsdrop.1.gz \
    /usr/share/doc/smsdrop/README.md; do
    [[ -s "$f" ]] || fail "$f missing"
done
zcat /usr/share/man/man1/smsdrop.1.gz | grep -q '^\.TH smsdrop 1' || fail "smsdrop.1.gz has no .TH"
bash -c 'source /usr/share/bash-completion/completions/smsdrop && complete -p smsdrop' >/dev/null \
    || fail "the bash completion does not load"

step "reinstalling (postinst is idempotent)"
dpkg -i "$deb" >/dev/null
[[ "$(stat -c '%U:%G %a' /var/lib/smsdrop)" == "smsdrop:smsdrop 750" ]] || fail "reinstall changed /var/lib/smsdrop"

step "removing"
dpkg -r smsdrop >/dev/null
[[ ! -e /usr/bin/smsdrop ]] || fail "/usr/bin/smsdrop left after remove"
[[ -f /etc/smsdrop/smsdrop.toml ]] || fail "remove deleted the conffile (only purge may)"
dpkg --purge smsdrop >/dev/null
[[ ! -e /etc/smsdrop/smsdrop.toml ]] || fail "purge left /etc/smsdrop/smsdrop.toml"
echo "package checks passed: $deb"

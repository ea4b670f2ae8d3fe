#!/usr/bin/env bash
# Builds the Debian package and prints its path (last line of stdout).
#
# 1. the production binary: a release build without default features, so without the sandbox
#    (an embedded SFTP server and gateway simulator) and `smsdrop demo`: a server's daemon has
#    no use for them, and what is not built cannot be started there. Try a config with a
#    source build (`cargo run -- sandbox`) instead;
# 2. `smsdrop generate all` writes the shell completions and man pages into target/assets/
#    (a folder in the crate whatever CARGO_TARGET_DIR is: Cargo.toml's [package.metadata.deb]
#    assets point there);
# 3. `cargo deb --no-build` packs them with the unit, the example config (a conffile), the README
#    and the monitoring examples, and the maintainer scripts in packaging/debian/.
#
# Needs cargo-deb (`cargo install cargo-deb --locked`) and dpkg-shlibdeps (package dpkg-dev: the
# binary's library dependencies). Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb.sh: cargo-deb is missing: cargo install cargo-deb --locked" >&2
    exit 2
fi

cargo build --locked --release --no-default-features
bin="${CARGO_TARGET_DIR:-target}/release/smsdrop"

rm -rf target/assets
"$bin" generate all --out target/assets >&2

# --strip: the release profile keeps line tables (debug = 1) for backtraces in target/; the
# package ships without them (131 MB -> 20 MB installed, a 5.5 MB .deb). cargo-deb prints the package's
# path as its last line of stdout.
deb=$(cargo deb --no-build --strip | tail -n 1)
if [[ ! -f "$deb" ]]; then
    echo "build-deb.sh: cargo deb did not report a package (got: $deb)" >&2
    exit 1
fi
echo "$deb"

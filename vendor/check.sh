#!/usr/bin/env bash
# Proves that vendor/pingora-core is crates.io's pingora-core 0.9.1 with exactly the patches in
# vendor/patches/ applied in order (and Cargo.lock, benches/, examples/ and the crate's VCS note
# left out), so that an update of Pingora cannot drop a patch unnoticed. Run by .ci/run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=0.9.1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# cargo fetches the published crate into its cache (a no-op when it is there already).
mkdir -p "$work/probe/src"
echo 'fn main() {}' >"$work/probe/src/main.rs"
cat >"$work/probe/Cargo.toml" <<TOML
[package]
name = "vendor-check"
version = "0.0.0"
edition = "2021"
[dependencies]
pingora-core = { version = "=$version", default-features = false }
TOML
(cd "$work/probe" && cargo fetch --quiet)
crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/pingora-core-$version.crate | head -n 1)

mkdir "$work/published"
tar -xzf "$crate" -C "$work/published"
tree="$work/published/pingora-core-$version"
rm -rf "$tree/Cargo.lock" "$tree/benches" "$tree/examples" "$tree/.cargo_vcs_info.json"
for p in "$root"/vendor/patches/*.patch; do
    if ! patch --quiet --forward --no-backup-if-mismatch -p1 -d "$tree" <"$p"; then
        echo "vendor check: $(basename "$p") does not apply to pingora-core $version" >&2
        exit 1
    fi
done
if ! diff -r "$tree" "$root/vendor/pingora-core" >"$work/diff"; then
    echo "vendor check: vendor/pingora-core differs from pingora-core $version plus vendor/patches:" >&2
    head -n 60 "$work/diff" >&2
    exit 1
fi
echo "vendor check: vendor/pingora-core = pingora-core $version + $(ls "$root"/vendor/patches/*.patch | wc -l) patches"

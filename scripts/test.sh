#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need if missing, then
# fmt, clippy, and every test (including those behind the `external-tests` feature).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the external tests (cargo feature `external-tests`) use:
# chromium + chromium-driver for the dashboard test in a real browser, dnsmasq-base for a
# real DNS server behind a UDP listener, nginx as a real reader of lb's PROXY headers, curl
# (with nghttp2) as a real HTTP/2-over-TLS client of http listeners, redis-server as the
# store two lb processes share a rate limit through, keepalived + iproute2 for the VRRP
# failover between two lb instances in network namespaces (and curl for its track_script);
# dpkg (always there) installs and purges the package scripts/package.sh builds.
PACKAGES=(chromium chromium-driver dnsmasq-base nginx curl redis-server keepalived iproute2)
missing=()
for p in "${PACKAGES[@]:-}"; do
  [ -n "$p" ] && ! dpkg -s "$p" >/dev/null 2>&1 && missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== cargo test"
cargo test --workspace --all-features
# Both HTTP paths give clients the same answers: the gateway suites again with every request
# on the general path (the lean path's byte-level tests say they do not apply).
echo "== cargo test -p lb-l7, LB_HTTP_PATH=general"
LB_HTTP_PATH=general cargo test -p lb-l7 --all-features
# The fuzz targets are built (so they cannot rot) and run once over their seed corpora.
echo "== fuzz targets"
# They build into the workspace's target directory from the workspace's lock file, so every
# dependency the tests already compiled is reused rather than built and stored a second time.
cp Cargo.lock fuzz/Cargo.lock
CARGO_TARGET_DIR="$PWD/target" cargo build --manifest-path fuzz/Cargo.toml --bins --quiet
for target in fuzz/fuzz_targets/*.rs; do
  name=$(basename "$target" .rs)
  ls fuzz/corpus/"$name"/*.* >/dev/null  # every target has seeds
  target/debug/"$name" -runs=0 fuzz/corpus/"$name" 2>&1 | tail -n 1
done

#!/usr/bin/env bash
# Builds the Debian package target/debian/lb_<version>_<arch>.deb with dpkg-deb from a layout
# this script writes (no cargo-deb: installing it would compile ~150 crates on every CI run):
#   /usr/bin/lb                        the binary
#   /lib/systemd/system/lb.service     conf/systemd/lb.service (Type=notify, hardened)
#   /etc/lb/lb.toml                    conf/debian/lb.toml, a conffile (edits survive upgrades)
#   /usr/share/doc/lb/                 README.md, the reference config, `lb --help` texts, copyright
# The binary is `cargo build --release --locked` unless LB_BINARY names one already built (the
# package test uses the one cargo built for the tests: the release profile's fat LTO takes
# minutes on two cores, and what is tested here is the packaging, not the optimiser).
# The version is the binary's own (`lb --version`), so package and binary cannot disagree.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${LB_BINARY:-}"
if [ -z "$bin" ]; then
  cargo build --release --locked --bin lb
  bin=target/release/lb
fi
version=$("$bin" --version | awk '{print $2}')
case "$version" in
  [0-9]*) ;;
  *) echo "package.sh: cannot read a version from $bin --version" >&2; exit 1 ;;
esac
arch=$(dpkg --print-architecture)

"$bin" check --config conf/debian/lb.toml >/dev/null  # the default config must pass lb check

out=target/debian
root="$out/lb_${version}_${arch}"
rm -rf "$root"
install -D -m 0755 "$bin" "$root/usr/bin/lb"
strip --strip-unneeded "$root/usr/bin/lb" 2>/dev/null || true
install -D -m 0644 conf/systemd/lb.service "$root/lib/systemd/system/lb.service"
install -D -m 0644 conf/debian/lb.toml "$root/etc/lb/lb.toml"
doc="$root/usr/share/doc/lb"
install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 conf/lb.toml "$doc/lb.toml"
install -D -m 0644 conf/keepalived/keepalived.conf "$doc/keepalived/keepalived.conf"
install -D -m 0755 conf/keepalived/lb-notify.sh "$doc/keepalived/lb-notify.sh"
{
  "$bin" --help
  for sub in run check demo; do
    printf '\n\n== lb %s --help\n\n' "$sub"
    "$bin" "$sub" --help
  done
} > "$doc/help.txt"
chmod 0644 "$doc/help.txt"
cat > "$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: lb
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT

mkdir -p "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: lb
Version: $version
Architecture: $arch
Maintainer: lb maintainers <lb@localhost>
Section: net
Priority: optional
Installed-Size: $size
Depends: libc6, libgcc-s1
Suggests: keepalived, curl
Description: TCP/UDP load balancer and HTTP gateway
 lb balances TCP and UDP connections and HTTP requests over pools of backends
 with health checks, hot reload and zero-downtime binary upgrades. It runs as
 a systemd Type=notify service (lb.service) and answers /api/ready for
 keepalived's track_script.
CONTROL
echo /etc/lb/lb.toml > "$root/DEBIAN/conffiles"
# The service is installed, not started: the default config forwards to a placeholder.
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
POSTINST
cat > "$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop lb.service || true
fi
PRERM
cat > "$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
if [ "$1" = purge ]; then
  rmdir /etc/lb 2>/dev/null || true
fi
POSTRM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

deb="$out/lb_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
rm -rf "$root"
echo "$deb"

#!/bin/sh
# Installs the Debian packages that building and testing gatehouse need,
# when they are missing. As root it runs apt-get; otherwise it only names
# what is missing. Used by ./dev (before make exists), "make check" and
# "make run". binutils: objcopy, for the stripped binary of make install.
# dnsmasq-base: the DNS server test_resolver.py runs on loopback.
# libhiredis-dev: the "redis" client (limit zones' sync=); redis-server:
# the Redis test_redis_limits.py runs on loopback.
# libmaxminddb-dev: the geoip2 module; mmdb-bin (mmdblookup) and
# libmaxmind-db-writer-perl: its tests write and cross-check .mmdb files.
# prometheus: promtool, which test_metrics.py runs on the metrics page.
# libnghttp2-dev: HTTP/2 (src/http/v2); python3-h2 and nghttp2-client
# (nghttp, h2load): test_http2.py speaks raw frames and counts with them.
set -u
PKGS="g++ make binutils pkg-config libssl-dev libpcre2-dev zlib1g-dev libjemalloc-dev
      libcrypt-dev libbrotli-dev libzstd-dev
      libmaxminddb-dev mmdb-bin libmaxmind-db-writer-perl
      doctest-dev python3 python3-pytest python3-brotli python3-zstandard curl openssl man-db groff-base
      dnsmasq-base libhiredis-dev redis-server
      prometheus libnghttp2-dev python3-h2 nghttp2-client"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing Debian packages:$missing (run as root, or: sudo apt-get install$missing)" >&2
    exit 0
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || exit 1
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing || exit 1

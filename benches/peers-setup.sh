#!/bin/bash
# Self-contained, so a clone of sluice alone can run benches/e2e.py. Run as root (apt-get).
# Installs the peer daemons side by side: syslog-ng (with its load generator loggen) from Debian,
# and rsyslog unpacked into a private prefix (the two packages conflict in Debian).
set -eu
PREFIX=${PEERS_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-peers}
# syslog-ng-mod-http and syslog-ng-scl: elasticsearch-http() for the es case.
if ! command -v loggen >/dev/null || [[ ! -f /usr/lib/syslog-ng/3.38/libhttp.so ]]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq syslog-ng-core \
    syslog-ng-mod-http syslog-ng-scl >/dev/null
fi
if [[ ! -x $PREFIX/rsyslog-root/usr/sbin/rsyslogd \
      || ! -f $PREFIX/rsyslog-root/usr/lib/x86_64-linux-gnu/rsyslog/omelasticsearch.so ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libestr0 libfastjson4 liblognorm5 >/dev/null
  mkdir -p "$PREFIX" && cd "$PREFIX"
  apt-get download rsyslog rsyslog-openssl rsyslog-elasticsearch >/dev/null 2>&1
  for f in rsyslog*.deb; do dpkg -x "$f" "$PREFIX/rsyslog-root"; done
fi
echo "peers ready: $(command -v syslog-ng) $(command -v loggen) $PREFIX/rsyslog-root/usr/sbin/rsyslogd"

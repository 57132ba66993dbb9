#!/bin/bash
# Self-contained, so a clone of sluice alone can run benches/e2e.py. Run as root (apt-get).
# Installs the peer daemons side by side: syslog-ng (with its load generator loggen) from Debian,
# and rsyslog unpacked into a private prefix (the two packages conflict in Debian); for
# benches/kafka.py their Kafka modules (syslog-ng-mod-rdkafka, rsyslog-kafka) and a newer
# librdkafka from PyPI (confluent-kafka's wheel bundles it) in $PREFIX/librdkafka: Debian 12's
# librdkafka 2.0.2 cannot talk to tansu 0.6 (ApiVersion v3 "Read underflow"), so the bench runs
# the peers with LD_LIBRARY_PATH=$PREFIX/librdkafka.
set -eu
PREFIX=${PEERS_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-peers}
# syslog-ng-mod-http and syslog-ng-scl: elasticsearch-http() for the es case.
# syslog-ng-mod-rdkafka: kafka-c() for benches/kafka.py.
if ! command -v loggen >/dev/null || [[ ! -f /usr/lib/syslog-ng/3.38/libhttp.so ]] \
    || [[ ! -f /usr/lib/syslog-ng/3.38/libkafka.so ]]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq syslog-ng-core \
    syslog-ng-mod-http syslog-ng-scl syslog-ng-mod-rdkafka >/dev/null
fi
RSYSLOG_MODS=$PREFIX/rsyslog-root/usr/lib/x86_64-linux-gnu/rsyslog
if [[ ! -x $PREFIX/rsyslog-root/usr/sbin/rsyslogd || ! -f $RSYSLOG_MODS/omelasticsearch.so \
      || ! -f $RSYSLOG_MODS/omkafka.so ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libestr0 libfastjson4 liblognorm5 >/dev/null
  mkdir -p "$PREFIX" && cd "$PREFIX"
  apt-get download rsyslog rsyslog-openssl rsyslog-elasticsearch rsyslog-kafka >/dev/null 2>&1
  for f in rsyslog*.deb; do dpkg -x "$f" "$PREFIX/rsyslog-root"; done
fi
# librdkafka 2.16.1 as confluent-kafka 2.16.1's manylinux wheel bundles it (self-contained: libc
# only), renamed to the soname the Debian modules link.
RDKAFKA_VERSION=2.16.1
if [[ ! -f $PREFIX/librdkafka/librdkafka.so.1 ]]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary :all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 -d "$tmp" "confluent-kafka==$RDKAFKA_VERSION"
  python3 -m zipfile -e "$tmp"/confluent_kafka-*.whl "$tmp/whl"
  mkdir -p "$PREFIX/librdkafka"
  cp "$tmp"/whl/confluent_kafka.libs/librdkafka-*.so.1 "$PREFIX/librdkafka/librdkafka.so.1"
  echo "librdkafka $RDKAFKA_VERSION from PyPI's confluent-kafka wheel" > "$PREFIX/librdkafka/VERSION"
  rm -rf "$tmp"
fi
echo "peers ready: $(command -v syslog-ng) $(command -v loggen) $PREFIX/rsyslog-root/usr/sbin/rsyslogd $PREFIX/librdkafka"

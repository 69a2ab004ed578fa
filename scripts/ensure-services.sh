#!/usr/bin/env bash
# Make sure everything the hub and its tests need on this machine is installed and running:
# PostgreSQL, RabbitMQ (with the management plugin, used to provision per-system users),
# xmlsec1 (the reference XML-DSig implementation, for interoperability tests) and Chromium (ops page tests).
# Installs from Debian's packages when something is missing (needs root); starts what is stopped.
set -euo pipefail

log() { printf '[services] %s\n' "$*"; }
apt_updated=0
apt_install() {
  if [[ $(id -u) -ne 0 ]]; then log "need root to install $*"; exit 1; fi
  if ((apt_updated == 0)); then DEBIAN_FRONTEND=noninteractive apt-get update -qq; apt_updated=1; fi
  log "installing $* from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # port, seconds, name
  for _ in $(seq 1 "$2"); do port_open "$1" && return 0; sleep 1; done
  log "$3 did not open port $1 within $2 s"; return 1
}

# --- PostgreSQL -------------------------------------------------------------------------------
if ! port_open 5432; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then apt_install postgresql; fi
  if [[ -z "$(ls /etc/postgresql 2>/dev/null)" ]]; then
    log "no PostgreSQL cluster found; creating one"
    pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -1)" main
  fi
  ver=$(ls /etc/postgresql | sort -V | tail -1)
  conf=/etc/postgresql/$ver/main
  # Local trust authentication over TCP, as on the reference machines.
  if ! grep -q "forestry-hub" "$conf/pg_hba.conf"; then
    sed -i '1i # forestry-hub: local trust for the hub and its tests\nhost all all 127.0.0.1/32 trust\nlocal all all trust' "$conf/pg_hba.conf"
  fi
  log "starting PostgreSQL $ver"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  wait_port 5432 60 PostgreSQL
fi

# --- RabbitMQ ---------------------------------------------------------------------------------
if ! command -v rabbitmq-server >/dev/null 2>&1; then apt_install rabbitmq-server; fi
if ! port_open 5672; then
  log "starting RabbitMQ"
  rabbitmq-server -detached || true
  wait_port 5672 120 RabbitMQ
fi
if ! port_open 15672; then
  log "enabling the RabbitMQ management plugin"
  rabbitmq-plugins enable rabbitmq_management >/dev/null
  wait_port 15672 60 "RabbitMQ management"
fi
# The broker refuses a message larger than twice the hub's own limit (HUB_MAX_MESSAGE_BYTES, 4 MiB) before it is
# stored: 406 PRECONDITION_FAILED to the publisher. Between the two limits the hub refuses with a signed
# MSG_TOO_LARGE. Persisted for restarts, and applied to the running node (read when a channel opens).
BROKER_MAX_MESSAGE_BYTES=8388608
if ! grep -q "^max_message_size" /etc/rabbitmq/rabbitmq.conf 2>/dev/null; then
  mkdir -p /etc/rabbitmq
  echo "max_message_size = $BROKER_MAX_MESSAGE_BYTES" >> /etc/rabbitmq/rabbitmq.conf
fi
rabbitmqctl -q eval "application:set_env(rabbit, max_message_size, $BROKER_MAX_MESSAGE_BYTES)." >/dev/null || true

# --- tools --------------------------------------------------------------------------------------
command -v xmlsec1 >/dev/null 2>&1 || apt_install xmlsec1
# curl: tests/integration/test_gateway_walkthrough.py runs docs/gateway.md's curl walkthrough as it is written.
command -v curl >/dev/null 2>&1 || apt_install curl
command -v chromium >/dev/null 2>&1 || apt_install chromium
# A CJK font for the ops page's browser tests: without one Chromium draws every Chinese label as empty boxes in the
# screenshots the tests write (var/screenshots/).
[[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ]] || apt_install fonts-wqy-microhei
# Java and Apache Santuario: tests/integration/test_trust_santuario.py signs and verifies with the Java side an
# agency's Java system uses (docs/gateway.md), so the profile the gateway documents is proven, not assumed.
command -v javac >/dev/null 2>&1 || apt_install default-jdk-headless
[[ -f /usr/share/java/xmlsec.jar ]] || apt_install libxml-security-java
# systemd-analyze: tests/unit/test_deploy_units.py verifies the units of deploy/systemd (nothing is started with it).
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
log "PostgreSQL, RabbitMQ (+management), xmlsec1, curl, Chromium (+ a CJK font), Java and Santuario are ready"

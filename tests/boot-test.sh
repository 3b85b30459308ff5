#!/usr/bin/env bash
# The appliance proof: boots Debian bookworm with systemd-nspawn, installs the
# amd64 .deb in it, and checks the service as a user would meet it.
#
#   tests/boot-test.sh            # builds the .debs it needs
#   BOOT_TEST_DEB=x.deb BOOT_TEST_NEWER_DEB=y.deb tests/boot-test.sh
#
# Checks: lintian on the .debs (no errors); `systemd-analyze verify` of the
# unit inside the booted system; the unit is active; a CoAP message from the
# host reaches a mosquitto on the host; `journalctl -u coap2mqtt` holds
# structured lines; SIGKILL of the main process -> restarted, queue intact;
# SIGSTOP -> restarted by the watchdog; installing a newer build keeps the
# queued messages and an edited conffile; purge removes it all.
#
# The bookworm tree is debootstrapped once into target/boot-test/rootfs (CI
# caches target/), from the mirror apt already uses. Each run boots a copy.
#
# Exit: 0 passed, or SKIPPED with the reason when this machine cannot run
# the test (not root, no systemd-nspawn, no mirror, nspawn cannot boot);
# 1 when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
dir=$root/target/boot-test
work=$dir/work
log=$dir/log
mkdir -p "$dir" "$log"

say() { printf 'boot-test: %s\n' "$*" >&2; }
skip() {
  say "SKIPPED: $*"
  exit 0
}
nspawn_pid=""
mosquitto_pid=""
cleanup() {
  set +e
  [ -n "$mosquitto_pid" ] && kill "$mosquitto_pid" 2>/dev/null
  [ -n "${subscriber_pid:-}" ] && kill "$subscriber_pid" 2>/dev/null
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill -TERM "$nspawn_pid" 2>/dev/null # asks the container to power off
    for _ in $(seq 1 30); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$nspawn_pid" 2>/dev/null
  fi
}
trap cleanup EXIT
fail() {
  say "FAILED: $*"
  say "container console: $log/console.log; journal dump: $log/journal.txt"
  in_box journalctl --no-pager -u coap2mqtt -n 200 >"$log/journal.txt" 2>&1 || true
  exit 1
}
pass() { say "ok: $*"; }
leader=""
in_box() {
  [ -n "$leader" ] || return 1
  nsenter -t "$leader" -m -u -i -n -p -- "$@"
}

# --- can this machine run it at all? -------------------------------------
[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, systemd-nspawn)"
need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
command -v coap-client-notls >/dev/null || need+=(libcoap3-bin)
command -v lintian >/dev/null || need+=(lintian)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  say "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2 ||
    skip "cannot install ${need[*]}"
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

# --- the packages ---------------------------------------------------------
deb=${BOOT_TEST_DEB:-}
newer=${BOOT_TEST_NEWER_DEB:-}
if [ -z "$deb" ] || [ -z "$newer" ]; then
  version=$(cargo metadata --no-deps --format-version 1 --locked |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')
  say "building the .debs ($version, and $version+boot1 as the newer build)"
  DEB_VERSION=$version packaging/build-debs amd64 >"$log/build.log" 2>&1 ||
    fail "packaging/build-debs amd64 (see $log/build.log)"
  DEB_VERSION=$version+boot1 packaging/build-debs amd64 >>"$log/build.log" 2>&1 ||
    fail "packaging/build-debs amd64, newer (see $log/build.log)"
  deb=$root/target/debs/coap2mqtt_${version}_amd64.deb
  newer=$root/target/debs/coap2mqtt_${version}+boot1_amd64.deb
fi

for f in "$deb" "$newer"; do [ -f "$f" ] || fail "no package $f"; done
say "lintian"
lintian --tag-display-limit 0 "$deb" "$newer" >"$log/lintian.txt" 2>&1 || true
if grep -q '^E:' "$log/lintian.txt"; then
  cat "$log/lintian.txt" >&2
  fail "lintian reports errors"
fi
pass "lintian: no errors ($(grep -c '^W:' "$log/lintian.txt" || true) warnings)"

# --- the bookworm tree, cached -------------------------------------------
if [ ! -f "$dir/rootfs/.complete" ]; then
  # One mirror URL. (A missing sources.list must not add the fallback to
  # what was found: under pipefail that made a two-line "mirror" and a
  # failed debootstrap on machines with only deb822 .sources files.)
  mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
    sed -n 's/^URIs: *//p; s/^deb \+\(\[[^]]*\] \+\)\?\(http[^ ]*\) \+bookworm .*/\2/p' |
    grep -m1 '/debian/\?$' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  say "debootstrap bookworm from $mirror (once; cached in $dir/rootfs)"
  rm -rf "$dir/rootfs.tmp"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps \
    bookworm "$dir/rootfs.tmp" "$mirror" >"$log/debootstrap.log" 2>&1 ||
    skip "debootstrap failed (no mirror?): see $log/debootstrap.log"
  touch "$dir/rootfs.tmp/.complete"
  rm -rf "$dir/rootfs"
  mv "$dir/rootfs.tmp" "$dir/rootfs"
fi

say "copying the tree"
rm -rf "$work"
cp -a "$dir/rootfs" "$work"
echo coap2mqtt-boot >"$work/etc/hostname"
# A fast watchdog for the test (the unit ships WatchdogSec=30), so that the
# SIGSTOP check takes seconds, not a minute.
mkdir -p "$work/etc/systemd/system/coap2mqtt.service.d"
printf '[Service]\nWatchdogSec=4\nTimeoutAbortSec=3\n' \
  >"$work/etc/systemd/system/coap2mqtt.service.d/boot-test.conf"
cp "$deb" "$work/root/old.deb"
cp "$newer" "$work/root/new.deb"
# A queue written by coap2mqtt 0.1 (sled), for the upgrade from it.
rm -rf "$work/root/queue-0.1"
cp -r tests/fixtures/queue-0.1 "$work/root/queue-0.1"

# --- boot -----------------------------------------------------------------
say "booting with systemd-nspawn -b"
systemd-nspawn --quiet --register=no --keep-unit -D "$work" -M coap2mqtt-boot \
  --console=pipe -b >"$log/console.log" 2>&1 </dev/null &
nspawn_pid=$!
for _ in $(seq 1 360); do # up to 3 minutes: a busy CI machine boots slowly
  kill -0 "$nspawn_pid" 2>/dev/null || break
  # The container's systemd (PID 1 inside) is nspawn's child, or the
  # child of a helper nspawn forks in the new namespaces.
  leader=""
  leader=$(pgrep -P "$nspawn_pid" -x systemd | head -1 || true)
  for child in $(pgrep -P "$nspawn_pid" || true); do
    [ -n "$leader" ] && break
    leader=$(pgrep -P "$child" -x systemd | head -1 || true)
  done
  if [ -n "$leader" ] &&
    nsenter -t "$leader" -m -u -i -p -- systemctl is-system-running 2>/dev/null |
    grep -qE 'running|degraded'; then
    break
  fi
  sleep 0.5
done
if ! kill -0 "$nspawn_pid" 2>/dev/null || [ -z "$leader" ]; then
  say "systemd-nspawn exited or its container has no systemd (pid $nspawn_pid, leader ${leader:-none})"
  tail -20 "$log/console.log" >&2
  skip "systemd-nspawn cannot boot a container on this machine (console: $log/console.log)"
fi
state=$(in_box systemctl is-system-running 2>&1 || true)
case $state in
  running | degraded) pass "container booted ($state)" ;;
  *) skip "the container did not finish booting: $state (console: $log/console.log)" ;;
esac

free_port() {
  python3 -c 'import socket,sys
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM)
s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"
}
COAP=$(free_port udp)
MQTT=$(free_port tcp)
ADMIN=$(free_port tcp)

# The broker keeps its sessions across its own restarts, and the test's
# subscriber has a persistent QoS 1 session: what the daemon publishes the
# moment the broker comes back is kept for the subscriber, not lost in a race.
mkdir -p "$log/mosquitto"
rm -f "$log/mosquitto/"*.db
cat >"$log/mosquitto.conf" <<EOF
listener $MQTT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $log/mosquitto/
user root
EOF
start_broker() {
  "$MOSQUITTO" -c "$log/mosquitto.conf" >>"$log/mosquitto.log" 2>&1 &
  mosquitto_pid=$!
  sleep 0.5
}
stop_broker() {
  kill "$mosquitto_pid" 2>/dev/null || true
  wait "$mosquitto_pid" 2>/dev/null || true
  mosquitto_pid=""
}
# One subscriber for the whole test, with a persistent QoS 1 session: it
# reconnects when the broker comes back and gets what was published
# meanwhile. received PATTERN COUNT SECONDS waits for COUNT matching lines
# (duplicates are allowed: delivery is at-least-once).
subscriber_pid=""
subscribe() {
  mosquitto_sub -h 127.0.0.1 -p "$MQTT" -c -i coap2mqtt-boot-test -q 1 -t 'site/#' -t 'old/#' -v \
    >>"$log/received.txt" 2>>"$log/subscriber.log" &
  subscriber_pid=$!
}
received() {
  for _ in $(seq 1 $(($3 * 2))); do
    [ "$(grep -E "$1" "$log/received.txt" | sort -u | wc -l)" -ge "$2" ] && return 0
    sleep 0.5
  done
  return 1
}
post() { # path payload -> the CoAP response code, e.g. 2.04
  # (coap-client exits 0 even without an answer: read the response line.)
  coap-client-notls -v 6 -B 5 -m post -e "$2" "coap://127.0.0.1:$COAP/$1" 2>&1 |
    sed -n 's/.* t:ACK c:\([0-9]\.[0-9][0-9]\) .*/\1/p' | tail -1
}
metric() {
  curl -sf "http://127.0.0.1:$ADMIN/metrics" | awk -v m="coap2mqtt_$1" '$1 == m {print $2}'
}
main_pid() { in_box systemctl show -p MainPID --value coap2mqtt; }
# Whether the unit's journal has a line matching $1. Read whole first: with
# pipefail, `journalctl | grep -q` fails when grep stops reading early.
journal_has() {
  in_box journalctl --no-pager -u coap2mqtt >"$log/journal-now.txt" 2>&1 || true
  grep -q -- "$1" "$log/journal-now.txt"
}
restarts() { in_box systemctl show -p NRestarts --value coap2mqtt; }
wait_active() {
  for _ in $(seq 1 "$1"); do
    [ "$(in_box systemctl is-active coap2mqtt 2>/dev/null)" = active ] &&
      curl -sf "http://127.0.0.1:$ADMIN/healthz" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  return 1
}

# --- install --------------------------------------------------------------
say "dpkg -i $(basename "$deb")"
in_box dpkg -i /root/old.deb >"$log/install.log" 2>&1 || fail "dpkg -i (see $log/install.log)"
# --man=no: the minimal tree has no man-db; the page itself is checked below.
in_box systemd-analyze verify --man=no /usr/lib/systemd/system/coap2mqtt.service >"$log/verify.txt" 2>&1 ||
  fail "systemd-analyze verify: $(cat "$log/verify.txt")"
[ -s "$log/verify.txt" ] && fail "systemd-analyze verify is not clean: $(cat "$log/verify.txt")"
in_box test -s /usr/share/man/man1/coap2mqtt.1.gz || fail "no man page"
for f in /usr/share/bash-completion/completions/coap2mqtt /usr/share/zsh/vendor-completions/_coap2mqtt \
  /usr/share/fish/vendor_completions.d/coap2mqtt.fish \
  /usr/share/doc/coap2mqtt/monitoring/grafana-dashboard.json /usr/share/doc/coap2mqtt/monitoring/alerts.yml; do
  in_box test -s "$f" || fail "the package has no $f"
done
in_box grep -q 'dead-letters' /usr/share/bash-completion/completions/coap2mqtt ||
  fail "the bash completion does not know the dead-letters command"
pass "systemd-analyze verify: clean; man page, bash/zsh/fish completions and the monitoring files installed"
perm=$(in_box stat -c '%U:%G %a' /etc/coap2mqtt/psk.toml)
[ "$perm" = "root:coap2mqtt 640" ] || fail "psk.toml is $perm, expected root:coap2mqtt 640"
pass "psk.toml is $perm"

# The user's edit of the conffile: our ports (this also shows edits survive
# the upgrade below).
in_box sed -i \
  -e "s|^listen = \[\"127.0.0.1:5683\", \"\[::1\]:5683\"\]|listen = [\"127.0.0.1:$COAP\"]|" \
  -e "s|^url = \"mqtt://127.0.0.1:1883\"|url = \"mqtt://127.0.0.1:$MQTT\"|" \
  -e "s|^listen = \"127.0.0.1:9464\"|listen = \"127.0.0.1:$ADMIN\"|" \
  /etc/coap2mqtt/coap2mqtt.toml
in_box grep -q "127.0.0.1:$COAP" /etc/coap2mqtt/coap2mqtt.toml || fail "could not edit the config"
: >"$log/received.txt"
start_broker
subscribe
in_box systemctl restart coap2mqtt
wait_active 40 || fail "coap2mqtt is not active: $(in_box systemctl status coap2mqtt --no-pager 2>&1 | tail -5)"
pass "unit active; $(in_box systemctl show -p StatusText --value coap2mqtt)"
journal_has 'plain CoAP .* is served on loopback only' ||
  fail "no start-up line saying plain CoAP is on loopback only"
pass "plain CoAP on loopback only, said at start"
user=$(in_box ps -o user= -p "$(main_pid)")
[ "$user" = coap2mqtt ] || fail "the daemon runs as $user"
pass "runs as $user"

# --- a message end to end ---------------------------------------------------
code=$(post sensors/boot/temp 21.5)
received "/boot/temp 21.5$" 1 10 || fail "the broker did not get the message (CoAP said: $code)"
pass "CoAP ($code) -> host mosquitto: $(grep -m1 /boot/temp "$log/received.txt")"

# --- the journal ------------------------------------------------------------
printf 'xx' >/dev/udp/127.0.0.1/"$COAP" # too short for CoAP: a logged drop
sleep 1
in_box journalctl --no-pager -u coap2mqtt -o verbose >"$log/journal-verbose.txt" 2>&1
for field in 'SYSLOG_IDENTIFIER=coap2mqtt' 'PRIORITY=5' "MQTT_BROKER=mqtt://127.0.0.1:$MQTT" \
  'DROP_REASON=undecodable' 'COAP_PEER=127.0.0.1:' 'CODE_MODULE=coap2mqtt::'; do
  grep -q "$field" "$log/journal-verbose.txt" || fail "journal has no $field"
done
pass "journal: structured fields (MQTT_BROKER, COAP_PEER, DROP_REASON, PRIORITY)"

# --- systemctl reload: SIGHUP, the config read again ----------------------------
in_box systemctl reload coap2mqtt || fail "systemctl reload failed"
for _ in $(seq 1 20); do
  in_box journalctl --no-pager -u coap2mqtt -g 'reload: routes unchanged' -q >/dev/null 2>&1 && break
  sleep 0.5
done
in_box journalctl --no-pager -u coap2mqtt -g 'reload: routes unchanged' -q >/dev/null 2>&1 ||
  fail "systemctl reload: no 'reload:' line in the journal"
[ "$(in_box systemctl is-active coap2mqtt)" = active ] || fail "not active after reload"
pass "systemctl reload: the config read again, still active"

# --- a broken edit: ExecStartPre's check-config stops the restart ------------
in_box cp /etc/coap2mqtt/coap2mqtt.toml /root/good.toml
in_box sh -c 'printf "\n[gateway]\nidd = \"typo\"\n" >>/etc/coap2mqtt/coap2mqtt.toml'
in_box systemctl restart coap2mqtt >/dev/null 2>&1 && fail "systemctl restart succeeded with a broken config"
# systemctl status names the failed step; the file:line:key message is in
# the unit's journal (systemctl status shows only the auto-restart attempt's
# lines once Restart= has scheduled the next one).
in_box systemctl status coap2mqtt --no-pager -l >"$log/broken-status.txt" 2>&1 || true
grep -q 'ExecStartPre=/usr/bin/coap2mqtt check-config .*status=2' "$log/broken-status.txt" ||
  fail "systemctl status does not show the check-config step failing: $(tail -5 "$log/broken-status.txt")"
for _ in $(seq 1 20); do
  journal_has 'coap2mqtt.toml:[0-9][0-9]*: ' && break
  sleep 0.5
done
journal_has 'coap2mqtt.toml:[0-9][0-9]*: ' || fail "the journal does not name the file and line of the broken config"
cp "$log/journal-now.txt" "$log/broken-journal.txt"
in_box cp /root/good.toml /etc/coap2mqtt/coap2mqtt.toml
in_box systemctl restart coap2mqtt
wait_active 40 || fail "not active after the config was fixed"
pass "a broken edit: restart refused by ExecStartPre check-config (systemctl status), $(grep -o 'coap2mqtt.toml:[0-9]*:' "$log/broken-journal.txt" | head -1) in the journal; fixed, active again"

# --- SIGKILL: restarted, queue intact ---------------------------------------
stop_broker
for i in 1 2 3; do
  code=$(post "sensors/boot/kill$i" "k$i")
  [ "$code" = 2.04 ] || fail "post kill$i answered $code"
done
[ "$(metric queue_messages)" = 3 ] || fail "queue holds $(metric queue_messages), expected 3"
before=$(main_pid)
in_box systemctl kill -s KILL --kill-whom=main coap2mqtt
for _ in $(seq 1 40); do
  now=$(main_pid)
  [ "$now" != 0 ] && [ "$now" != "$before" ] && wait_active 2 && break
  sleep 0.5
done
[ "$(main_pid)" != "$before" ] || fail "not restarted after SIGKILL"
[ "$(metric queue_messages)" = 3 ] || fail "after SIGKILL the queue holds $(metric queue_messages)"
pass "SIGKILL: restarted (pid $before -> $(main_pid)), 3 messages still queued"
start_broker
received "/boot/kill[123] k[123]$" 3 45 || fail "after SIGKILL the broker got: $(cat "$log/received.txt")"
pass "the 3 queued messages reached the broker"

# --- SIGSTOP: the watchdog restarts it ---------------------------------------
before=$(main_pid)
n=$(restarts)
in_box systemctl kill -s STOP --kill-whom=main coap2mqtt
for _ in $(seq 1 60); do
  [ "$(restarts)" -gt "$n" ] && [ "$(main_pid)" != "$before" ] && wait_active 2 && break
  sleep 0.5
done
[ "$(main_pid)" != "$before" ] || fail "a stopped daemon was not restarted"
journal_has 'Watchdog timeout' ||
  fail "restarted, but not by the watchdog"
pass "SIGSTOP: the watchdog restarted it (pid $before -> $(main_pid))"

# --- upgrade: queue and conffile edits kept ------------------------------------
stop_broker
for i in 1 2; do
  code=$(post "sensors/boot/upgrade$i" "u$i")
  [ "$code" = 2.04 ] || fail "post upgrade$i answered $code"
done
[ "$(metric queue_messages)" = 2 ] || fail "queue holds $(metric queue_messages), expected 2"
in_box dpkg -i /root/new.deb >"$log/upgrade.log" 2>&1 || fail "upgrade (see $log/upgrade.log)"
in_box grep -q "127.0.0.1:$COAP" /etc/coap2mqtt/coap2mqtt.toml || fail "the upgrade lost the conffile edit"
wait_active 40 || fail "not active after the upgrade"
version=$(in_box dpkg-query -W -f='${Version}' coap2mqtt)
[ "$(metric queue_messages)" = 2 ] || fail "after the upgrade the queue holds $(metric queue_messages)"
pass "upgraded to $version: conffile edit kept, 2 messages still queued"
start_broker
received "/boot/upgrade[12] u[12]$" 2 45 || fail "after the upgrade the broker got: $(cat "$log/received.txt")"
pass "the queued messages reached the broker after the upgrade"

# --- a queue of version 0.1 (sled) converted in place ---------------------------
in_box systemctl stop coap2mqtt
in_box rm -rf /var/lib/coap2mqtt/coap2mqtt-queue
in_box cp -r /root/queue-0.1 /var/lib/coap2mqtt/coap2mqtt-queue
in_box chown -R coap2mqtt:coap2mqtt /var/lib/coap2mqtt/coap2mqtt-queue
in_box systemctl start coap2mqtt
wait_active 40 || fail "not active on a 0.1 queue: $(in_box systemctl status coap2mqtt --no-pager 2>&1 | tail -5)"
journal_has 'converted the coap2mqtt 0.1 store: 60 queued messages' ||
  fail "the 0.1 queue was not converted: $(in_box journalctl --no-pager -u coap2mqtt | tail -5)"
received "^old/d[012] v01-[0-9]+$" 60 45 || fail "after the conversion the broker got $(grep -c '^old/' "$log/received.txt") of 60"
pass "a 0.1 queue (sled) converted in place: 60 messages delivered"

# --- status for a person --------------------------------------------------------
in_box coap2mqtt status >"$log/status.txt" 2>&1 || fail "coap2mqtt status: $(cat "$log/status.txt")"
pass "coap2mqtt status: $(head -1 "$log/status.txt")"

# --- purge -------------------------------------------------------------------------
in_box dpkg --purge coap2mqtt >"$log/purge.log" 2>&1 || fail "purge (see $log/purge.log)"
for path in /var/lib/coap2mqtt /etc/coap2mqtt /usr/bin/coap2mqtt /usr/lib/systemd/system/coap2mqtt.service; do
  in_box test -e "$path" && fail "$path is still there after purge"
done
in_box dpkg-statoverride --list /etc/coap2mqtt/psk.toml >/dev/null 2>&1 && fail "statoverride left behind"
in_box systemctl is-active coap2mqtt >/dev/null 2>&1 && fail "still running after purge"
pass "purge removed the queue, the config and the unit"

say "PASSED"

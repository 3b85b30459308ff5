#!/usr/bin/env bash
# The ARM proof: runs the packaged arm64 or armhf coap2mqtt in an emulated
# ARM machine and checks it as a Raspberry Pi-class gateway would be used.
#
#   tests/arm-test.sh arm64
#   tests/arm-test.sh armhf
#   ARM_TEST_DEB=path/to/coap2mqtt_x_armhf.deb tests/arm-test.sh armhf
#
# Why full-system emulation: qemu-user hangs at the first thread on these
# machines, and a cross-built binary that only links proves little. Here a
# Debian kernel of the architecture boots under qemu-system (TCG) with an
# initramfs built from Debian packages (busybox-static, libc6, libgcc-s1, the
# kernel's virtio modules), the binary from the .deb in target/debs/ runs on
# an ext4 data disk, and the host talks to it only through qemu's user-mode
# network on 127.0.0.1: libcoap's clients (CoAP and DTLS-PSK) forwarded into
# the guest, and a mosquitto on the host's loopback reached by the guest as
# 10.0.2.2. The guest is driven by a small agent on a virtio-serial port
# (tests/arm-test/agent); its console goes to a log file.
#
# Checks: the daemon starts; CoAP CON and NON POSTs reach the broker intact
# and in order; a DTLS-PSK device is served (and a wrong key is not); with
# the broker down, acknowledged messages survive kill -9 and are delivered
# when it is back; 100,000 queued messages are stored, reopened after a
# restart and drained. Printed: boot time, the daemon's VmRSS idle and with
# the queue full, ingest and drain rates (emulated, a sanity figure only).
#
# Everything fetched is cached in target/arm-test/<arch>/ (a second run
# starts in seconds); each run works in target/arm-test/<arch>/run/.
# Output: one "PASS name" or "FAIL name: reason" line per check, then
# "arm-test <arch>: N passed, M failed". Exit 1 when a check failed; 0 with
# SKIPPED and the reason only when this machine cannot run the test at all.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

arch=${1:-}
case $arch in
  arm64)
    qemu="qemu-system-aarch64"
    machine=(-M virt -cpu cortex-a53) # the Raspberry Pi 3's and Zero 2's core
    ;;
  armhf)
    qemu="qemu-system-arm"
    machine=(-M "virt,highmem=off" -cpu cortex-a7) # the Raspberry Pi 2's core
    ;;
  *)
    echo "usage: tests/arm-test.sh arm64|armhf" >&2
    exit 2
    ;;
esac
MESSAGES=${ARM_TEST_MESSAGES:-100000}

cache=$root/target/arm-test/$arch
run=$cache/run
started=$SECONDS

# Seconds since an $EPOCHREALTIME, one decimal.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}'; }
say() { printf 'arm-test %s: %s\n' "$arch" "$*" >&2; }
skip() {
  echo "SKIPPED arm-test $arch: $*"
  exit 0
}
passed=0
failed=0
pass() {
  echo "PASS $1${2:+: $2}"
  passed=$((passed + 1))
}
fail() {
  echo "FAIL $1: $2"
  failed=$((failed + 1))
}

# --- cleanup: the guest and every process we started -----------------------
qemu_pid=""
broker_pid=""
subscriber_pid=""
flood_pid=""
stop_pid() { # pid
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
  set +e
  stop_pid "$subscriber_pid"
  stop_pid "$broker_pid"
  stop_pid "$qemu_pid"
  stop_pid "$flood_pid"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- host tools --------------------------------------------------------------
install_host_tools() {
  local need=()
  command -v "$qemu" >/dev/null || need+=(qemu-system-arm)
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
  command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
  command -v coap-client-openssl >/dev/null || need+=(libcoap3-bin)
  command -v cpio >/dev/null || need+=(cpio)
  command -v mkfs.ext4 >/dev/null || [ -x /usr/sbin/mkfs.ext4 ] || need+=(e2fsprogs)
  command -v curl >/dev/null || need+=(curl)
  command -v python3 >/dev/null || need+=(python3)
  ((${#need[@]})) || return 0
  [ "$(id -u)" -eq 0 ] || skip "needs ${need[*]} installed (apt-get, as root)"
  say "installing ${need[*]}"
  apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${need[@]}" >&2 ||
    skip "cannot install ${need[*]}"
}
install_host_tools
PATH=$PATH:/usr/sbin

# --- the guest image: Debian's kernel, an initramfs, libc (cached) ------------
# tests/arm-test/guest-image fetches and builds it in $cache once: vmlinuz,
# base.cpio.gz (busybox, the agent, the kernel's virtio modules) and
# sysroot/ (the guest's libc6 and libgcc-s1, for guest_libraries).

# Copies into $1 the shared libraries the ELF file $2 needs, and theirs,
# from the guest's libc6 and libgcc-s1.
guest_libraries() {
  local dest=$1 todo=("$2") seen=" " file name path interp
  interp=$(readelf -l "$2" | sed -n 's/.*program interpreter: \(.*\)\]/\1/p')
  if [ -n "$interp" ]; then
    mkdir -p "$dest$(dirname "$interp")"
    cp -L "$cache/sysroot$interp" "$dest$interp"
  fi
  while ((${#todo[@]})); do
    file=${todo[0]}
    todo=("${todo[@]:1}")
    for name in $(readelf -d "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      [[ $seen == *" $name "* ]] && continue
      seen+="$name "
      path=$(find "$cache/sysroot/lib" "$cache/sysroot/usr/lib" -name "$name" 2>/dev/null | head -1)
      [ -n "$path" ] || { say "library $name not in the guest's libc6/libgcc-s1"; return 1; }
      mkdir -p "$dest$(dirname "${path#"$cache/sysroot"}")"
      cp -L "$path" "$dest${path#"$cache/sysroot"}"
      todo+=("$path")
    done
  done
}

# --- this run: the binary from the .deb, its config, a fresh data disk -------
free_port() { # tcp|udp
  python3 -c 'import socket,sys
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM)
s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"
}
COAP=$(free_port udp)
COAPS=$(free_port udp)
ADMIN=$(free_port tcp)
MQTT=$(free_port tcp)
PSK_IDENTITY=sensor-01
PSK_KEY=arm-test-key-0123

write_guest_config() {
  cat <<CONF
[gateway]
id = "arm-$arch"

[coap]
listen = ["0.0.0.0:5683"]

[dtls]
listen = ["0.0.0.0:5684"]
psk_file = "/etc/coap2mqtt/psk.toml"

[mqtt]
url = "mqtt://10.0.2.2:$MQTT"
# Back soon after the broker is: the drain is timed from its start.
reconnect_max_s = 2

[store]
path = "/data/queue"

[admin]
listen = "0.0.0.0:9464"

[[route]]
resource = "sensors/{device}/{metric}"
topic = "site/{gateway}/{device}/{metric}"

# Only the DTLS device whose identity is {device} may post here.
[[route]]
resource = "secure/{device}/{metric}"
topic = "secure/{gateway}/{device}/{metric}"
identity = "{device}"
CONF
}

prepare_run() {
  local overlay=$run/overlay
  rm -rf "$run"
  mkdir -p "$overlay/usr/bin" "$overlay/etc/coap2mqtt" "$run/pkg" "$run/mosquitto"
  dpkg-deb -x "$deb" "$run/pkg" || return 1
  cp "$run/pkg/usr/bin/coap2mqtt" "$overlay/usr/bin/coap2mqtt"
  guest_libraries "$overlay" "$overlay/usr/bin/coap2mqtt" || return 1
  write_guest_config >"$overlay/etc/coap2mqtt/coap2mqtt.toml"
  printf '[psk]\n"%s" = "%s"\n' "$PSK_IDENTITY" "$PSK_KEY" >"$overlay/etc/coap2mqtt/psk.toml"
  chmod 0600 "$overlay/etc/coap2mqtt/psk.toml"
  # The kernel unpacks concatenated archives one after the other.
  (cd "$overlay" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$run/overlay.cpio.gz"
  cat "$cache/base.cpio.gz" "$run/overlay.cpio.gz" >"$run/initrd"
  # The queue's disk: ext4, as on a Pi's SD card. Sparse; fresh every run.
  truncate -s 2G "$run/data.img"
  mkfs.ext4 -q -F -L data "$run/data.img"
}

# --- the broker on the host, and one subscriber for the whole run ------------
# The broker keeps its sessions across its own restarts, and the subscriber's
# session is persistent (QoS 1): what the daemon publishes the moment the
# broker is back is kept for the subscriber, not lost in a race.
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
start_broker() {
  cat >"$run/mosquitto.conf" <<CONF
listener $MQTT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $run/mosquitto/
max_queued_messages 1000000
user root
CONF
  "$MOSQUITTO" -c "$run/mosquitto.conf" >>"$run/mosquitto.log" 2>&1 &
  broker_pid=$!
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$MQTT") 2>/dev/null && return 0
    sleep 0.1
  done
  say "mosquitto did not start (see $run/mosquitto.log)"
  return 1
}
stop_broker() {
  stop_pid "$broker_pid"
  wait "$broker_pid" 2>/dev/null || true
  broker_pid=""
}
received=$run/received.txt
start_subscriber() {
  : >"$received"
  mosquitto_sub -h 127.0.0.1 -p "$MQTT" -c -i "arm-test-$arch" -q 1 \
    -t 'site/#' -t 'secure/#' -v >>"$received" 2>>"$run/subscriber.log" &
  subscriber_pid=$!
}
# Waits up to SECONDS for COUNT distinct lines matching the regex.
wait_received() { # regex count seconds
  local deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    [ "$(grep -E "$1" "$received" | sort -u | wc -l)" -ge "$2" ] && return 0
    sleep 0.5
  done
  return 1
}

# --- the guest -----------------------------------------------------------------
boot_seconds=""
boot_guest() {
  mkfifo "$run/ctl.in" "$run/ctl.out"
  local boot_start=$EPOCHREALTIME
  "$qemu" "${machine[@]}" -smp 2 -m 512 -nodefaults -display none -no-reboot \
    -kernel "$cache/vmlinuz" -initrd "$run/initrd" \
    -append "console=ttyAMA0 rdinit=/init panic=-1" \
    -serial "file:$run/console.log" \
    -drive "file=$run/data.img,format=raw,if=none,id=data,cache=unsafe" \
    -device virtio-blk-device,drive=data \
    -netdev "user,id=net,hostfwd=udp:127.0.0.1:$COAP-:5683,hostfwd=udp:127.0.0.1:$COAPS-:5684,hostfwd=tcp:127.0.0.1:$ADMIN-:9464" \
    -device virtio-net-device,netdev=net \
    -chardev "pipe,id=ctl,path=$run/ctl" \
    -device virtio-serial-device -device virtserialport,chardev=ctl,name=ctl \
    >"$run/qemu.log" 2>&1 &
  qemu_pid=$!
  # qemu opens both FIFOs read-write, so these opens do not block.
  sleep 0.5
  kill -0 "$qemu_pid" 2>/dev/null || { cat "$run/qemu.log" >&2; return 1; }
  exec {to_guest}>"$run/ctl.in" {from_guest}<"$run/ctl.out"
  local line
  if IFS= read -r -t 180 line <&"$from_guest" && [[ $line == @@ready* ]]; then
    boot_seconds=$(since "$boot_start")
    say "guest up in ${boot_seconds} s (kernel uptime ${line#@@ready })"
    return 0
  fi
  say "the guest's agent did not answer within 180 s; console: $run/console.log"
  return 1
}

# guest TIMEOUT_S COMMAND: runs the shell command in the guest, where
# busybox's timeout ends it after TIMEOUT_S. Its output is in $guest_out,
# its exit status is guest's; 125 when the agent did not answer in time.
guest_out=""
guest_seq=0
guest() {
  local limit=$1 line deadline id
  shift
  # Unique also when called in a $(subshell), whose count is not kept.
  guest_seq=$((guest_seq + 1))
  id=$BASHPID.$guest_seq
  guest_out=""
  printf '%s %s %s\n' "$id" "$limit" "$*" >&"$to_guest"
  deadline=$((SECONDS + limit + 10))
  while ((SECONDS < deadline)); do
    IFS= read -r -t $((deadline - SECONDS)) line <&"$from_guest" || continue
    if [[ $line =~ ^(.*)@@done\ $id\ ([0-9]+)$ ]]; then
      guest_out+=${BASH_REMATCH[1]}
      guest_out=${guest_out%$'\n'}
      return "${BASH_REMATCH[2]}"
    fi
    guest_out+=$line$'\n'
  done
  guest_out+="(no answer from the guest's agent within $((limit + 10)) s)"
  return 125
}

# --- the daemon in the guest ----------------------------------------------------
metric() { # name -> value from /metrics, through the forwarded admin port
  curl -sf --max-time 5 "http://127.0.0.1:$ADMIN/metrics" |
    awk -v m="coap2mqtt_$1" '$1 == m {print $2}'
}
wait_metric() { # name value seconds
  local deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    [ "$(metric "$1")" = "$2" ] && return 0
    sleep 0.5
  done
  return 1
}
daemon_pid=""
# Starts the daemon in the guest and waits until /healthz answers 200; when
# it does not, $daemon_problem says why, with the end of its log.
daemon_problem=""
start_daemon() { # seconds
  local deadline=$((SECONDS + $1))
  daemon_problem=""
  guest 10 "echo '--- start' >>/data/daemon.log; cd /data;" \
    "coap2mqtt run --config /etc/coap2mqtt/coap2mqtt.toml >>/data/daemon.log 2>&1 & echo \$!" || {
    daemon_problem="could not start it: $guest_out"
    return 1
  }
  daemon_pid=$guest_out
  while ((SECONDS < deadline)); do
    curl -sf --max-time 5 "http://127.0.0.1:$ADMIN/healthz" >/dev/null && return 0
    if ! guest 5 "test -d /proc/$daemon_pid && ! grep -q '^State:.*Z' /proc/$daemon_pid/status"; then
      daemon_problem="it exited: $(daemon_log_tail)"
      return 1
    fi
    sleep 0.5
  done
  daemon_problem="not healthy within $1 s: $(daemon_log_tail)"
  return 1
}
daemon_gone() { # waits up to 10 s for the daemon's process to end
  guest 15 "for i in \$(seq 1 100); do" \
    "{ test -d /proc/$daemon_pid && ! grep -q '^State:.*Z' /proc/$daemon_pid/status; } || exit 0;" \
    "usleep 100000; done; exit 1"
}
rss_kb() { # the daemon's VmRSS, and the anonymous part of it, in kB
  guest 5 "awk '/^VmRSS:/ {r = \$2} /^RssAnon:/ {a = \$2} END {print r \" kB (anon \" a \")\"}'" \
    "/proc/$daemon_pid/status" && echo "$guest_out"
}
daemon_log_tail() {
  guest 5 "tail -5 /data/daemon.log" || true
  echo "$guest_out" | tr '\n' '|'
}

# coap_post URL PAYLOAD [coap-client options...] -> the answer, e.g. "ACK 2.04".
# (coap-client exits 0 even without an answer: its -v 6 output is read.)
coap_post() {
  local url=$1 payload=$2 client=coap-client-notls
  shift 2
  [[ $url == coaps://* ]] && client=coap-client-openssl
  timeout 20 "$client" -v 6 -B 8 -m post -e "$payload" "$@" "$url" 2>&1 |
    sed -n 's/.* t:\(ACK\|NON\|RST\) c:\([0-9]\.[0-9][0-9]\) .*/\1 \2/p' | tail -1
}

# Per-topic order: for each topic, the first arrival of each payload must
# come in the order the payloads were sent (the number after the last "-").
in_order_per_topic() { # topic-regex file
  grep -E "$1" "$2" | awk '
    seen[$0]++ { next }
    { n = $NF; sub(/.*-/, "", n); n += 0
      if ($1 in last && n <= last[$1]) bad++
      last[$1] = n }
    END { exit bad > 0 }'
}

# --- the checks -------------------------------------------------------------------
# Each prints its PASS or FAIL line. Figures for the summary:
idle_rss="" queued_rss="" reopened_rss="" ingest_rate="" drain_rate="" store_kb="" reopen_s=""
topic_prefix="site/arm-$arch"

check_daemon_starts() {
  local version start=$SECONDS
  guest 10 "coap2mqtt --version && coap2mqtt check-config --config /etc/coap2mqtt/coap2mqtt.toml" || {
    fail daemon-starts "coap2mqtt --version / check-config in the guest: $(echo "$guest_out" | tr '\n' '|')"
    return 1
  }
  version=$(echo "$guest_out" | head -1)
  start_daemon 60 || {
    fail daemon-starts "$daemon_problem"
    return 1
  }
  wait_metric mqtt_connected 1 30 || {
    fail daemon-starts "not connected to the broker at 10.0.2.2:$MQTT: $(daemon_log_tail)"
    return 1
  }
  sleep 2 # settled: connected, nothing queued
  idle_rss=$(rss_kb)
  pass daemon-starts "$version ($(file -b "$run/overlay/usr/bin/coap2mqtt" | cut -d, -f1-2)), healthy and connected in $((SECONDS - start)) s; idle VmRSS $idle_rss"
}

# N POSTs of one type, one after the other; all must be answered 2.04 and
# reach the broker intact, in the order sent.
check_coap() { # name CON|NON count
  local name=$1 kind=$2 n=$3 i payload answer topic expected bad=0
  expected=$run/$name.expected
  local options=()
  [ "$kind" = NON ] && options=(-N)
  topic="$topic_prefix/${kind,,}/seq"
  : >"$expected"
  for i in $(seq 1 "$n"); do
    payload="{\"seq\":$i,\"text\":\"$kind über 127.0.0.1 & <qemu> 'quoted'\"}"
    # The last one is long: 1,000 bytes in one datagram.
    ((i == n)) && payload="$payload $(head -c 740 /dev/urandom | base64 -w0)"
    answer=$(coap_post "coap://127.0.0.1:$COAP/sensors/${kind,,}/seq" "$payload" "${options[@]}")
    [ "$answer" = "$( [ "$kind" = CON ] && echo ACK || echo NON) 2.04" ] || {
      bad=$((bad + 1))
      say "$name: POST $i answered '${answer:-nothing}'"
    }
    echo "$topic $payload" >>"$expected"
  done
  ((bad == 0)) || {
    fail "$name" "$bad of $n $kind POSTs not answered 2.04: $(daemon_log_tail)"
    return 1
  }
  wait_received "^$topic " "$n" 30 || {
    fail "$name" "the broker got $(grep -c "^$topic " "$received") of $n"
    return 1
  }
  # Intact and in order (a duplicate, which at-least-once allows, counts once).
  if grep "^$topic " "$received" | awk '!seen[$0]++' | cmp -s - "$expected"; then
    pass "$name" "$n $kind POSTs answered 2.04; the broker got all $n intact (UTF-8, quotes, 1,000 bytes), in order"
  else
    fail "$name" "what the broker got differs from what was sent (see $run/$name.expected, $received)"
  fi
}

check_dtls_psk() {
  local answer topic="secure/arm-$arch/$PSK_IDENTITY/temp"
  answer=$(coap_post "coaps://127.0.0.1:$COAPS/secure/$PSK_IDENTITY/temp" "dtls 21.5" \
    -u "$PSK_IDENTITY" -k "$PSK_KEY")
  [ "$answer" = "ACK 2.04" ] || {
    fail dtls-psk "coap-client-openssl with the right key got '${answer:-nothing}': $(daemon_log_tail)"
    return 1
  }
  wait_received "^$topic dtls 21.5$" 1 20 || {
    fail dtls-psk "answered 2.04 but the broker did not get it"
    return 1
  }
  pass dtls-psk "PSK identity $PSK_IDENTITY: DTLS handshake, 2.04, delivered to $topic"
}

check_dtls_refuses() {
  local wrong plain
  wrong=$(coap_post "coaps://127.0.0.1:$COAPS/secure/$PSK_IDENTITY/temp" "wrong key" \
    -u "$PSK_IDENTITY" -k not-the-key-00000)
  plain=$(coap_post "coap://127.0.0.1:$COAP/secure/$PSK_IDENTITY/temp" "no identity")
  sleep 1
  if [ -z "$wrong" ] && [ "$plain" = "ACK 4.03" ] &&
    ! grep -qE 'wrong key|no identity' "$received"; then
    pass dtls-refuses "a wrong key gets no answer, plain CoAP on the identity route 4.03; neither reached the broker"
  else
    fail dtls-refuses "wrong key answered '${wrong:-nothing}', plain CoAP '${plain:-nothing}'"
  fi
}

# With the broker down, acknowledged messages survive kill -9 of the daemon
# and reach the broker once it is back.
check_kill9() {
  local n=10 i answer bad=0 before
  stop_broker
  wait_metric mqtt_connected 0 30 || {
    fail kill9 "the daemon still reports a broker connection"
    return 1
  }
  for i in $(seq 1 $n); do
    answer=$(coap_post "coap://127.0.0.1:$COAP/sensors/kill/k" "kill9-$i")
    [ "$answer" = "ACK 2.04" ] || bad=$((bad + 1))
  done
  ((bad == 0)) || {
    fail kill9 "$bad of $n POSTs not answered 2.04 with the broker down"
    return 1
  }
  wait_metric queue_messages $n 10 || {
    fail kill9 "queue holds $(metric queue_messages), expected $n"
    return 1
  }
  before=$daemon_pid
  guest 5 "kill -9 $daemon_pid" && daemon_gone || {
    fail kill9 "kill -9 $daemon_pid: the daemon did not die"
    return 1
  }
  start_daemon 60 || {
    fail kill9 "no restart after kill -9: $daemon_problem"
    return 1
  }
  wait_metric queue_messages $n 10 || {
    fail kill9 "after kill -9 the queue holds $(metric queue_messages), expected $n"
    return 1
  }
  start_broker || {
    fail kill9 "mosquitto did not start again"
    return 1
  }
  wait_received "^$topic_prefix/kill/k kill9-[0-9]+$" $n 60 || {
    fail kill9 "the broker got $(grep -c "/kill/k " "$received") of $n after kill -9"
    return 1
  }
  if in_order_per_topic "^$topic_prefix/kill/k " "$received"; then
    pass kill9 "$n acknowledged with the broker down; kill -9 (pid $before); restarted with $n queued; all $n delivered in order"
  else
    fail kill9 "all $n delivered, out of order"
  fi
}

# A store of MESSAGES queued messages: stored with the broker down, reopened
# after a restart (check_queue_reopen), drained (check_queue_drain).
check_queue_fill() {
  local report acked unanswered seconds
  stop_broker
  wait_metric mqtt_connected 0 30 || {
    fail queue-fill "the daemon still reports a broker connection"
    return 1
  }
  say "queueing $MESSAGES messages through CoAP (emulated: a minute or more)"
  timeout 1800 python3 tests/arm-test/coap-flood.py --target "127.0.0.1:$COAP" \
    --count "$MESSAGES" --devices 16 --path-prefix sensors/flood >"$run/flood.json" &
  flood_pid=$!
  wait "$flood_pid" || true
  flood_pid=""
  report=$(cat "$run/flood.json")
  read -r acked unanswered seconds < <(python3 -c 'import json,sys
r = json.load(sys.stdin)
print(r["answers"].get("2.04", 0), r["unanswered"], r["seconds"])' <<<"$report" 2>/dev/null ||
    echo "0 ? 0")
  [ "$acked" = "$MESSAGES" ] || {
    fail queue-fill "of $MESSAGES CON POSTs, $acked answered 2.04 ($report)"
    return 1
  }
  ingest_rate=$(awk -v n="$MESSAGES" -v s="$seconds" 'BEGIN {printf "%d", n / s}')
  wait_metric queue_messages "$MESSAGES" 10 || {
    fail queue-fill "the queue holds $(metric queue_messages), expected $MESSAGES; the flood: $report; $(curl -sf --max-time 5 "http://127.0.0.1:$ADMIN/metrics" | grep -E '^coap2mqtt_(coap_exchange_events_total\{.*(duplicate|message_id_reused)|queue_(appended|removed|dropped_oldest)_total)' | tr '\n' ' ')"
    return 1
  }
  queued_rss=$(rss_kb)
  guest 10 "du -sk /data/queue | cut -f1" && store_kb=$guest_out
  pass queue-fill "$MESSAGES CON POSTs answered 2.04 in $seconds s ($ingest_rate msg/s, $unanswered unanswered); queue $MESSAGES, $store_kb kB on disk; VmRSS $queued_rss"
}

# The full store opens again: a clean stop (SIGTERM), a new start.
check_queue_reopen() {
  local start
  guest 5 "kill -TERM $daemon_pid" && daemon_gone || {
    fail queue-reopen "SIGTERM: the daemon did not stop within 10 s"
    return 1
  }
  start=$EPOCHREALTIME
  start_daemon 120 || {
    fail queue-reopen "starting on $MESSAGES queued: $daemon_problem"
    return 1
  }
  reopen_s=$(since "$start")
  wait_metric queue_messages "$MESSAGES" 10 || {
    fail queue-reopen "after a restart the queue holds $(metric queue_messages), expected $MESSAGES"
    return 1
  }
  reopened_rss=$(rss_kb)
  pass queue-reopen "SIGTERM, restart: healthy in $reopen_s s with $MESSAGES queued; VmRSS $reopened_rss"
}

# The broker back: every message delivered, in order per device.
check_queue_drain() {
  local start drain_s
  start_broker || {
    fail queue-drain "mosquitto did not start again"
    return 1
  }
  start=$EPOCHREALTIME
  wait_received "^$topic_prefix/flood[0-9]+/m d[0-9]+-[0-9]+$" "$MESSAGES" 1200 || {
    fail queue-drain "the broker got $(grep -c '/flood' "$received") of $MESSAGES within 1200 s"
    return 1
  }
  drain_s=$(since "$start")
  drain_rate=$(awk -v n="$MESSAGES" -v s="$drain_s" 'BEGIN {printf "%d", n / s}')
  wait_metric queue_messages 0 30 || {
    fail queue-drain "all delivered, but the queue still holds $(metric queue_messages)"
    return 1
  }
  if in_order_per_topic "^$topic_prefix/flood[0-9]+/m " "$received"; then
    pass queue-drain "all $MESSAGES delivered in $drain_s s ($drain_rate msg/s), in order per device; queue empty"
  else
    fail queue-drain "all $MESSAGES delivered, but not in order per device"
  fi
}

# --- the run ---------------------------------------------------------------------
deb=${ARM_TEST_DEB:-}
if [ -z "$deb" ]; then
  version=$(cargo metadata --no-deps --format-version 1 --locked |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')
  deb=$root/target/debs/coap2mqtt_${version}_$arch.deb
  if [ ! -f "$deb" ]; then
    say "no $deb: packaging/build-debs $arch"
    packaging/build-debs "$arch" >&2 || { fail package "packaging/build-debs $arch failed"; }
  fi
fi
summary() {
  echo "figures $arch: boot ${boot_seconds:-?} s; idle VmRSS ${idle_rss:-?};" \
    "VmRSS with $MESSAGES queued ${queued_rss:-?}, ${reopened_rss:-?} after a restart;" \
    "ingest ${ingest_rate:-?} msg/s, drain ${drain_rate:-?} msg/s (emulated);" \
    "store ${store_kb:-?} kB; restart on the full store ${reopen_s:-?} s; test $((SECONDS - started)) s"
  ((failed == 0)) || say "logs: $run (console.log, daemon.log, mosquitto.log, received.txt)"
  echo "arm-test $arch: $passed passed, $failed failed"
  ((failed == 0))
}
[ -f "$deb" ] || { fail package "no package $deb"; summary; exit 1; }
[ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || {
  fail package "$deb is not an $arch package"
  summary
  exit 1
}

image_status=0
tests/arm-test/guest-image "$arch" "$cache" >&2 || image_status=$?
case $image_status in
  0) ;;
  3) skip "cannot fetch the guest's Debian packages (see above)" ;;
  *)
    fail guest-image "tests/arm-test/guest-image $arch failed (see above)"
    summary
    exit 1
    ;;
esac
prepare_run || { fail run "could not prepare the run (see above)"; summary; exit 1; }
start_broker || { fail broker "mosquitto did not start"; summary; exit 1; }
start_subscriber

if boot_guest; then
  guest 10 'echo "Debian kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPUs, $(free -m | awk "/^Mem:/ {print \$2}") MiB"' || true
  pass boot "$guest_out (${machine[*]}); agent up ${boot_seconds} s after qemu started"
else
  fail boot "no agent within 180 s: $(tail -3 "$run/console.log" | tr '\n' '|')"
  summary
  exit 1
fi

if check_daemon_starts; then
  check_coap coap-con CON 20 || true
  check_coap coap-non NON 20 || true
  check_dtls_psk || true
  check_dtls_refuses || true
  check_kill9 || true
  if ! check_queue_fill; then
    fail queue-reopen "not run: queue-fill failed"
    fail queue-drain "not run: queue-fill failed"
  elif ! check_queue_reopen; then
    fail queue-drain "not run: queue-reopen failed"
  else
    check_queue_drain || true
  fi
else
  for name in coap-con coap-non dtls-psk dtls-refuses kill9 queue-fill queue-reopen queue-drain; do
    fail "$name" "not run: the daemon did not start"
  done
fi
guest 10 "cat /data/daemon.log" >/dev/null 2>&1 || true
echo "$guest_out" >"$run/daemon.log"
summary

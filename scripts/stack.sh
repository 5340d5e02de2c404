#!/usr/bin/env bash
# A real local stack for integration tests: one Kafka 4.x broker (KRaft, broker+controller in one JVM)
# and one Redis, both on 127.0.0.1, both throwaway (fresh storage on every start, no persistence).
#
# There is no Docker engine on our machines, so Kafka runs from the official jars, resolved by Maven
# from Maven Central (scripts/kafka/pom.xml) and cached, so later runs need no network.
#
# Usage: scripts/stack.sh up|down|status
#   up      start what is not running, wait until both answer, write $STACK_DIR/env
#   down    stop exactly the processes `up` started (by pidfile, command line checked)
#   status  print what runs; exit 0 only if both run
# Env:    STACK_DIR (default <repo>/.stack), STACK_KAFKA_PORT (9092), STACK_REDIS_PORT (6379):
#         a busy port, or 0, means any free port. CA_CACHE_DIR: jar cache. KAFKA_HEAP_OPTS.
#         STACK_POD_ADDRESS: also listen on this local address (the test cluster's bridge, scripts/k8s.sh), for
#         clients in pods: Kafka gets a second listener advertised there, and $STACK_DIR/env gains
#         POD_KAFKA_BOOTSTRAP_SERVERS and POD_REDIS_URL. Clients on the host keep 127.0.0.1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$ROOT/scripts/kafka/pom.xml"
STACK_DIR="${STACK_DIR:-$ROOT/.stack}"
mkdir -p "$STACK_DIR"
STACK_DIR="$(cd "$STACK_DIR" && pwd)"   # absolute: it is part of the command line we check
CACHE_DIR="${CA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/complaints-allocation}"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
JARS="$CACHE_DIR/kafka-$KAFKA_VERSION/jars"
PYTHON="${PYTHON:-python3}"
START_TIMEOUT="${STACK_START_TIMEOUT:-60}"

say() { echo "stack: $*"; }
die() { echo "stack: error: $*" >&2; exit 1; }

# ---- process bookkeeping -------------------------------------------------------------------------

# ours NAME PID: true if PID is alive and is the process we started for NAME (pids get reused).
ours() {
  local cmd
  cmd="$(tr '\0' ' ' <"/proc/$2/cmdline" 2>/dev/null)" || return 1
  case "$1" in
    kafka) [[ "$cmd" == *kafka.Kafka*"$STACK_DIR/kafka/server.properties"* ]] ;;
    # redis soon rewrites its title to "redis-server 127.0.0.1:PORT" (its exe is redis-check-rdb).
    redis) local port
           port="$(cat "$STACK_DIR/redis.port" 2>/dev/null)"
           [[ "$cmd" == *redis-server* && ("$cmd" == *" 127.0.0.1:$port "* || "$cmd" == *" --port $port "*) ]] ;;
  esac
}

# running NAME: prints the pid if NAME runs; removes a stale pidfile.
running() {
  local pidfile="$STACK_DIR/$1.pid" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile")"
  if [[ -n "$pid" ]] && ours "$1" "$pid"; then
    echo "$pid"
    return 0
  fi
  say "removing stale $1 pidfile (pid ${pid:-?} is not our $1)" >&2
  rm -f "$pidfile"
  return 1
}

# pick_ports PREFERRED...: one port per argument; the preferred one if free, else any free one.
# All sockets stay bound until every port is chosen, so two requests never get the same port.
pick_ports() {
  "$PYTHON" - "$@" <<'EOF'
import socket, sys
held = []
for want in map(int, sys.argv[1:]):
    for port in (want, 0) if want else (0,):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        held.append(s)
        print(s.getsockname()[1])
        break
EOF
}

# ---- prerequisites ------------------------------------------------------------------------------

apt_install() {
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    die "$1 is missing; install package $2"
  fi
  say "installing $2 with apt-get"
  apt-get install -y -q "$2" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "$2" >/dev/null; }
}

need_java() {
  local major
  major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)" || true
  if [[ -z "$major" ]]; then
    apt_install java openjdk-17-jre-headless
    major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
  fi
  (( major >= 17 )) || die "Kafka $KAFKA_VERSION needs Java 17+, found Java $major"
}

# The jar set is keyed by the pom's digest: a changed pom resolves again, an unchanged one never
# touches the network.
need_jars() {
  local digest
  digest="$(sha256sum "$POM" | cut -d' ' -f1)"
  [[ "$(cat "$JARS/.pom-sha256" 2>/dev/null)" == "$digest" ]] && return 0
  command -v mvn >/dev/null || apt_install mvn maven
  say "resolving Kafka $KAFKA_VERSION jars with Maven into $JARS"
  rm -rf "$JARS"
  mvn -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$JARS" \
    >"$STACK_DIR/maven.log" 2>&1 || { tail -n 40 "$STACK_DIR/maven.log" >&2; die "Maven could not resolve $POM"; }
  echo "$digest" >"$JARS/.pom-sha256"
}

# ---- Kafka --------------------------------------------------------------------------------------

start_kafka() {
  local port="$1" cport="$2" pport="${3:-}" dir="$STACK_DIR/kafka"
  local listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
  local advertised="PLAINTEXT://127.0.0.1:$port" protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  rm -f "$STACK_DIR/kafka.pod-port"
  if [[ -n "$pport" ]]; then
    # Each client is told the address of the listener it connected to: pods get the pod-side one.
    listeners+=",PODS://$STACK_POD_ADDRESS:$pport"
    advertised+=",PODS://$STACK_POD_ADDRESS:$pport"
    protocols+=",PODS:PLAINTEXT"
    echo "$pport" >"$STACK_DIR/kafka.pod-port"
  fi
  need_java
  need_jars
  rm -rf "$dir"   # fresh cluster on each start: tests never see an earlier run's topics or offsets
  mkdir -p "$dir"
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$protocols
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
# One node: internal topics cannot have more replicas than brokers.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer internal partitions: faster first group/transaction coordinator load.
offsets.topic.num.partitions=5
transaction.state.log.num.partitions=5
# Tests: no waiting for more members, topics only as the code creates them.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
num.partitions=1
EOF
  # Log4j 2: INFO to stdout (the log file), minus per-partition chatter from tests' many topics.
  cat >"$dir/log4j2.properties" <<'EOF'
appender.out.type=Console
appender.out.name=OUT
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=INFO
rootLogger.appenderRef.out.ref=OUT
logger.log.name=org.apache.kafka.storage.internals.log
logger.log.level=WARN
logger.unifiedlog.name=kafka.log
logger.unifiedlog.level=WARN
logger.partition.name=kafka.cluster
logger.partition.level=WARN
logger.statechange.name=state.change.logger
logger.statechange.level=WARN
EOF
  local heap java
  read -ra heap <<<"${KAFKA_HEAP_OPTS:--Xmx512m -Xms128m}"   # a test broker needs little memory
  java=(java "${heap[@]}" -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$dir/log4j2.properties" -cp "$JARS/*")
  "${java[@]}" kafka.tools.StorageTool format --ignore-formatted -t "$(cluster_id)" \
    -c "$dir/server.properties" >"$STACK_DIR/kafka-format.log" 2>&1 \
    || { cat "$STACK_DIR/kafka-format.log" >&2; die "formatting Kafka storage failed"; }
  # setsid: its own session, so a Ctrl-C in the shell that ran `up` does not stop the broker.
  # 9>&-: the broker must not inherit (and so hold) our lock.
  setsid "${java[@]}" kafka.Kafka "$dir/server.properties" >"$STACK_DIR/kafka.log" 2>&1 </dev/null 9>&- &
  echo $! >"$STACK_DIR/kafka.pid"
  echo "$port" >"$STACK_DIR/kafka.port"
  say "started Kafka $KAFKA_VERSION (pid $!) on 127.0.0.1:$port, waiting for it to answer"
}

# What `kafka-storage.sh random-uuid` prints: 16 random bytes, base64url, no padding. Like Kafka's
# Uuid.randomUuid(), draw again when it starts with "-": 1 start in 64 would otherwise hand the storage tool
# an id that its argument parser takes for an option ("argument --cluster-id/-t: expected one argument").
cluster_id() {
  "$PYTHON" - <<'EOF'
import base64
import uuid

while (cid := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
    pass
print(cid)
EOF
}

# A broker that listens is not yet ready: wait until a client gets metadata from it (or, before
# the Python deps are installed, until the broker logs that it started).
kafka_answers() {
  if ! "$PYTHON" -c 'import kafka' 2>/dev/null; then
    grep -q 'Kafka Server started' "$STACK_DIR/kafka.log"
    return
  fi
  "$PYTHON" - "127.0.0.1:$1" <<'EOF' >/dev/null 2>&1
import sys
from kafka import KafkaAdminClient
# Short timeouts: the default bootstrap wait (30 s) would hide a broker that came up meanwhile.
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], bootstrap_timeout_ms=3000, request_timeout_ms=3000)
try:
    admin.list_topics()
finally:
    admin.close()
EOF
}

# ---- Redis --------------------------------------------------------------------------------------

start_redis() {
  local port="$1"
  command -v redis-server >/dev/null || apt_install redis-server redis-server
  mkdir -p "$STACK_DIR/redis"
  echo "$port" >"$STACK_DIR/redis.port"
  # In the foreground of its own session, like Kafka: its pid is $!, known before it is ready.
  local bind=(127.0.0.1)
  # Protected mode refuses every non-loopback client without a password; the bind already limits who can connect
  # to loopback and the test cluster's bridge.
  [[ -n "${STACK_POD_ADDRESS:-}" ]] && bind+=("$STACK_POD_ADDRESS" --protected-mode no)
  setsid redis-server --bind "${bind[@]}" --port "$port" --save '' --appendonly no --dir "$STACK_DIR/redis" \
    >"$STACK_DIR/redis.log" 2>&1 </dev/null 9>&- &
  echo $! >"$STACK_DIR/redis.pid"
  say "started Redis (pid $!) on 127.0.0.1:$port"
}

redis_answers() { [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == PONG ]]; }

# ---- commands -----------------------------------------------------------------------------------

# started NAME: the process whose pid `up` wrote for NAME has not exited (a zombie has). Not `running`:
# the pid is written between fork and exec, and until the exec its command line is this script's, which
# `ours` rightly refuses; asking `running` then took a starting server for a dead one and lost its pidfile.
started() {
  local pid
  pid="$(cat "$STACK_DIR/$1.pid" 2>/dev/null)" && [[ -n "$pid" ]] || return 1
  grep -q '^State:[[:space:]]*[^Z[:space:]]' "/proc/$pid/status" 2>/dev/null
}

# wait_ready NAME CHECK PORT: polls CHECK until it passes, the process dies, or the timeout.
wait_ready() {
  local name="$1" check="$2" port="$3" deadline=$((SECONDS + START_TIMEOUT)) why
  until "$check" "$port"; do
    why=""
    started "$name" || why="exited"
    (( SECONDS < deadline )) || why="did not answer in ${START_TIMEOUT}s"
    if [[ -n "$why" ]]; then
      echo "stack: $name $why; last lines of $STACK_DIR/$name.log:" >&2
      tail -n 40 "$STACK_DIR/$name.log" >&2 || true
      stop "$name"
      exit 1
    fi
    sleep 0.5
  done
}

up() {
  local t0=$SECONDS kport rport ports
  if running kafka >/dev/null; then
    kport="$(cat "$STACK_DIR/kafka.port")"
    say "Kafka is already running on 127.0.0.1:$kport"
  fi
  if running redis >/dev/null; then
    rport="$(cat "$STACK_DIR/redis.port")"
    say "Redis is already running on 127.0.0.1:$rport"
  fi
  if [[ -z "${kport:-}" ]]; then
    mapfile -t ports < <(pick_ports "${STACK_KAFKA_PORT:-9092}" 0 0)
    (( ${#ports[@]} == 3 )) || die "no free port for Kafka"
    kport="${ports[0]}"
    start_kafka "$kport" "${ports[1]}" "${STACK_POD_ADDRESS:+${ports[2]}}"
  fi
  if [[ -z "${rport:-}" ]]; then
    rport="$(pick_ports "${STACK_REDIS_PORT:-6379}")"
    [[ -n "$rport" ]] || die "no free port for Redis"
    start_redis "$rport"
  fi
  wait_ready redis redis_answers "$rport"
  wait_ready kafka kafka_answers "$kport"
  printf 'KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:%s\nREDIS_URL=redis://127.0.0.1:%s/0\n' "$kport" "$rport" \
    >"$STACK_DIR/env"
  if [[ -n "${STACK_POD_ADDRESS:-}" ]]; then
    [[ -f "$STACK_DIR/kafka.pod-port" ]] || die "Kafka runs without a pod listener: stop this stack first"
    printf 'POD_KAFKA_BOOTSTRAP_SERVERS=%s:%s\nPOD_REDIS_URL=redis://%s:%s/0\n' "$STACK_POD_ADDRESS" \
      "$(cat "$STACK_DIR/kafka.pod-port")" "$STACK_POD_ADDRESS" "$rport" >>"$STACK_DIR/env"
  fi
  say "ready in $((SECONDS - t0))s; environment in $STACK_DIR/env:"
  sed 's/^/  /' "$STACK_DIR/env"
}

# stop NAME: TERM, wait (Kafka shuts down cleanly in a few seconds), KILL as a last resort.
stop() {
  local pid i
  if ! pid="$(running "$1")"; then
    say "$1 is not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do
    ours "$1" "$pid" || break
    sleep 0.5
  done
  if ours "$1" "$pid"; then
    say "$1 (pid $pid) ignored SIGTERM for 30s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
    while ours "$1" "$pid"; do sleep 0.1; done
  fi
  rm -f "$STACK_DIR/$1.pid"
  say "stopped $1 (pid $pid)"
}

down() {
  stop kafka
  stop redis
  rm -f "$STACK_DIR/env"
}

status() {
  local rc=0 name pid
  for name in kafka redis; do
    if pid="$(running "$name")"; then
      say "$name running (pid $pid) on 127.0.0.1:$(cat "$STACK_DIR/$name.port")"
    else
      say "$name not running"
      rc=1
    fi
  done
  return "$rc"
}

# One `up`/`down` at a time per state dir: concurrent callers would start two brokers.
exec 9>"$STACK_DIR/stack.lock"
flock -w 300 9 || die "another stack.sh has held $STACK_DIR/stack.lock for 5 minutes"

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac

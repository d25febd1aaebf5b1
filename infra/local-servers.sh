#!/usr/bin/env bash
# Starts, stops and reports the real local servers used for development and CI:
#   - Apache Kafka (one KRaft node, broker + controller) from Maven Central jars, Java 17
#   - FerretDB v1.24 (MongoDB wire protocol, SQLite backend) built from the Go module proxy
#
# Usage: infra/local-servers.sh {install|up|down|status} [kafka|mongo|all]
#
# Configuration (environment variables, all optional):
#   STREAMSCORE_LOCAL_DIR      state folder (jars, binaries, data, logs)  default: <repo>/.local
#   STREAMSCORE_KAFKA_PORT     Kafka client port on 127.0.0.1             default: 9092
#   STREAMSCORE_KAFKA_CONTROLLER_PORT  KRaft controller port              default: 9093
#   STREAMSCORE_KAFKA_HEAP     JVM heap for the broker                    default: 768m
#   STREAMSCORE_MONGO_PORT     FerretDB port on 127.0.0.1                 default: 27017
#   STREAMSCORE_UP_TIMEOUT     seconds to wait for each server            default: 90
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL_DIR="${STREAMSCORE_LOCAL_DIR:-$ROOT/.local}"
KAFKA_PORT="${STREAMSCORE_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${STREAMSCORE_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP="${STREAMSCORE_KAFKA_HEAP:-768m}"
MONGO_PORT="${STREAMSCORE_MONGO_PORT:-27017}"
UP_TIMEOUT="${STREAMSCORE_UP_TIMEOUT:-90}"
FERRETDB_VERSION="v1.24.2"

KAFKA_DIR="$LOCAL_DIR/kafka"
KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_DATA="$KAFKA_DIR/data-$KAFKA_PORT"
KAFKA_LOG="$KAFKA_DIR/kafka-$KAFKA_PORT.log"
KAFKA_PID="$KAFKA_DIR/kafka-$KAFKA_PORT.pid"
MONGO_DIR="$LOCAL_DIR/ferretdb"
MONGO_BIN="$LOCAL_DIR/bin/ferretdb"
MONGO_DATA="$MONGO_DIR/data-$MONGO_PORT"
MONGO_LOG="$MONGO_DIR/ferretdb-$MONGO_PORT.log"
MONGO_PID="$MONGO_DIR/ferretdb-$MONGO_PORT.pid"

say() { printf '[local-servers] %s\n' "$*"; }
die() { printf '[local-servers] ERROR: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# ---------------------------------------------------------------- install
install_kafka() {
  if compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null; then return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the Kafka jars"
  command -v java >/dev/null || die "Java 17+ is needed to run Kafka"
  say "fetching Apache Kafka jars from Maven Central into $KAFKA_LIBS (first time only)"
  mkdir -p "$KAFKA_LIBS"
  mvn -q -B -Dstyle.color=never -f "$ROOT/infra/kafka/pom.xml" -DoutputDirectory="$KAFKA_LIBS" package \
    || die "Maven could not resolve the Kafka jars (see output above)"
}

install_mongo() {
  if [[ -x "$MONGO_BIN" ]]; then return 0; fi
  command -v go >/dev/null || die "Go is needed to build FerretDB"
  say "building FerretDB $FERRETDB_VERSION from the Go module proxy into $LOCAL_DIR/bin (first time only)"
  local module_dir src="$LOCAL_DIR/src/ferretdb-$FERRETDB_VERSION"
  module_dir="$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$module_dir" ]] || die "go mod download of FerretDB $FERRETDB_VERSION failed"
  # The module as published leaves build/version/version.txt empty (it is generated from git
  # in FerretDB's own tree), so the binary refuses to start. Build from a writable copy with
  # that one file filled in.
  rm -rf "$src"; mkdir -p "$(dirname "$src")"
  cp -r "$module_dir" "$src"; chmod -R u+w "$src"
  echo "$FERRETDB_VERSION" >"$src/build/version/version.txt"
  mkdir -p "$LOCAL_DIR/bin"
  (cd "$src" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$MONGO_BIN" ./cmd/ferretdb) \
    || die "could not build FerretDB $FERRETDB_VERSION (see output above)"
}

# ---------------------------------------------------------------- kafka
write_kafka_config() {
  mkdir -p "$KAFKA_DATA"
  cat >"$KAFKA_DIR/server-$KAFKA_PORT.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=1
auto.create.topics.enable=false
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
message.max.bytes=1048588
PROPS
  cat >"$KAFKA_DIR/log4j2.properties" <<'PROPS'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
PROPS
}

kafka_java() {
  java "-Xmx$KAFKA_HEAP" "-Xms256m" -XX:+UseG1GC \
    "-Dlog4j2.configurationFile=$KAFKA_DIR/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" "$@"
}

up_kafka() {
  install_kafka
  if pid_alive "$KAFKA_PID" && port_open "$KAFKA_PORT"; then
    say "kafka already running on 127.0.0.1:$KAFKA_PORT (pid $(cat "$KAFKA_PID"))"; return 0
  fi
  if port_open "$KAFKA_PORT"; then
    die "port $KAFKA_PORT is taken by another process; set STREAMSCORE_KAFKA_PORT"
  fi
  write_kafka_config
  if [[ ! -f "$KAFKA_DATA/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$KAFKA_DIR/server-$KAFKA_PORT.properties" >>"$KAFKA_LOG" 2>&1 \
      || die "kafka storage format failed; see $KAFKA_LOG"
  fi
  say "starting kafka on 127.0.0.1:$KAFKA_PORT (log: $KAFKA_LOG)"
  local from; from=$(( $(wc -l <"$KAFKA_LOG" 2>/dev/null || echo 0) + 1 ))
  nohup setsid java "-Xmx$KAFKA_HEAP" "-Xms256m" -XX:+UseG1GC \
    "-Dlog4j2.configurationFile=$KAFKA_DIR/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server-$KAFKA_PORT.properties" \
    >>"$KAFKA_LOG" 2>&1 </dev/null &
  echo $! >"$KAFKA_PID"
  wait_for kafka "$KAFKA_PORT" "$KAFKA_PID" "$KAFKA_LOG" "Kafka Server started" "$from"
}

# ---------------------------------------------------------------- mongo
up_mongo() {
  install_mongo
  if pid_alive "$MONGO_PID" && port_open "$MONGO_PORT"; then
    say "ferretdb already running on 127.0.0.1:$MONGO_PORT (pid $(cat "$MONGO_PID"))"; return 0
  fi
  if port_open "$MONGO_PORT"; then
    die "port $MONGO_PORT is taken by another process; set STREAMSCORE_MONGO_PORT"
  fi
  mkdir -p "$MONGO_DATA" "$MONGO_DIR/state-$MONGO_PORT"
  say "starting ferretdb on 127.0.0.1:$MONGO_PORT (log: $MONGO_LOG)"
  nohup setsid "$MONGO_BIN" \
    --listen-addr="127.0.0.1:$MONGO_PORT" \
    --handler=sqlite --sqlite-url="file:$MONGO_DATA/" \
    --state-dir="$MONGO_DIR/state-$MONGO_PORT" \
    --debug-addr=- --telemetry=disable --log-level=warn \
    >>"$MONGO_LOG" 2>&1 </dev/null &
  echo $! >"$MONGO_PID"
  wait_for ferretdb "$MONGO_PORT" "$MONGO_PID" "$MONGO_LOG"
}

# ---------------------------------------------------------------- common
wait_for() {  # name port pidfile logfile [ready-pattern, searched in the log from line N]
  local name="$1" port="$2" pidfile="$3" log="$4" pattern="${5:-}" from="${6:-1}"
  local deadline=$((SECONDS + UP_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! pid_alive "$pidfile"; then
      tail -n 20 "$log" >&2 || true
      die "$name exited during start-up; see $log"
    fi
    if port_open "$port" && { [[ -z $pattern ]] || tail -n "+$from" "$log" | grep -q "$pattern"; }; then
      say "$name is up on 127.0.0.1:$port"; return 0
    fi
    sleep 0.5
  done
  die "$name did not answer on 127.0.0.1:$port within ${UP_TIMEOUT}s; see $log"
}

stop_one() {  # name pidfile
  local name="$1" pidfile="$2"
  if ! pid_alive "$pidfile"; then rm -f "$pidfile"; say "$name is not running"; return 0; fi
  local pid; pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then say "$name did not stop in 30s, killing"; kill -KILL "$pid" || true; fi
  rm -f "$pidfile"; say "$name stopped"
}

status_one() {  # name port pidfile
  if pid_alive "$3" && port_open "$2"; then say "$1: running on 127.0.0.1:$2 (pid $(cat "$3"))"
  elif pid_alive "$3"; then say "$1: process $(cat "$3") alive but port $2 not answering"; return 1
  else say "$1: stopped"; return 1; fi
}

cmd="${1:-status}"; which="${2:-all}"
case "$which" in kafka|mongo|all) ;; *) die "unknown server '$which' (kafka|mongo|all)";; esac
mkdir -p "$KAFKA_DIR" "$MONGO_DIR"
case "$cmd" in
  install)
    [[ $which != mongo ]] && install_kafka
    [[ $which != kafka ]] && install_mongo
    true ;;
  up)
    [[ $which != mongo ]] && up_kafka
    [[ $which != kafka ]] && up_mongo
    true ;;
  down)
    [[ $which != mongo ]] && stop_one kafka "$KAFKA_PID"
    [[ $which != kafka ]] && stop_one ferretdb "$MONGO_PID"
    true ;;
  status)
    rc=0
    [[ $which != mongo ]] && { status_one kafka "$KAFKA_PORT" "$KAFKA_PID" || rc=1; }
    [[ $which != kafka ]] && { status_one ferretdb "$MONGO_PORT" "$MONGO_PID" || rc=1; }
    exit $rc ;;
  *) die "unknown command '$cmd' (install|up|down|status)";;
esac

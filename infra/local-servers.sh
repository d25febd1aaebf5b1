#!/usr/bin/env bash
# Starts, stops and reports the real local servers used for development and CI:
#   - Apache Kafka (one KRaft node, broker + controller) from Maven Central jars, Java 17
#   - a MongoDB-compatible server (MongoDB wire protocol), one of
#       mongo-java-server  de.bwaldvogel:mongo-java-server 1.47 from Maven Central, H2 file
#                          backend, served by the project's launcher (infra/mongo-java-server/)
#                          [default: uses its unique _id index for {_id: {$in: [...]}}]
#       ferretdb           FerretDB v1.24 (SQLite backend) built from the Go module proxy
#
# Usage: infra/local-servers.sh {install|up|down|status} [kafka|mongo|all]
#
# Configuration (environment variables, all optional):
#   STREAMSCORE_LOCAL_DIR      state folder (jars, binaries, data, logs)  default: <repo>/.local
#   STREAMSCORE_KAFKA_PORT     Kafka client port on 127.0.0.1             default: 9092
#   STREAMSCORE_KAFKA_CONTROLLER_PORT  KRaft controller port              default: 9093
#   STREAMSCORE_KAFKA_HEAP     JVM heap for the broker                    default: 768m
#   STREAMSCORE_MONGO_PORT     MongoDB-compatible server's port           default: 27017
#   STREAMSCORE_LOCAL_MONGO    mongo-java-server | ferretdb               default: mongo-java-server
#   STREAMSCORE_MONGO_HEAP     JVM heap for mongo-java-server             default: 512m
#   STREAMSCORE_UP_TIMEOUT     seconds to wait for each server            default: 240
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL_DIR="${STREAMSCORE_LOCAL_DIR:-$ROOT/.local}"
KAFKA_PORT="${STREAMSCORE_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${STREAMSCORE_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP="${STREAMSCORE_KAFKA_HEAP:-768m}"
MONGO_PORT="${STREAMSCORE_MONGO_PORT:-27017}"
LOCAL_MONGO="${STREAMSCORE_LOCAL_MONGO:-mongo-java-server}"
MONGO_HEAP="${STREAMSCORE_MONGO_HEAP:-512m}"
UP_TIMEOUT="${STREAMSCORE_UP_TIMEOUT:-240}"
FERRETDB_VERSION="v1.24.2"

KAFKA_DIR="$LOCAL_DIR/kafka"
KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_DATA="$KAFKA_DIR/data-$KAFKA_PORT"
KAFKA_LOG="$KAFKA_DIR/kafka-$KAFKA_PORT.log"
KAFKA_PID="$KAFKA_DIR/kafka-$KAFKA_PORT.pid"
FERRET_DIR="$LOCAL_DIR/ferretdb"
FERRET_BIN="$LOCAL_DIR/bin/ferretdb"
FERRET_DATA="$FERRET_DIR/data-$MONGO_PORT"
FERRET_LOG="$FERRET_DIR/ferretdb-$MONGO_PORT.log"
FERRET_PID="$FERRET_DIR/ferretdb-$MONGO_PORT.pid"
MJS_SRC="$ROOT/infra/mongo-java-server"
MJS_DIR="$LOCAL_DIR/mongo-java-server"
MJS_LIBS="$MJS_DIR/libs"
MJS_CLASSES="$MJS_DIR/classes"
MJS_LAUNCHER="$MJS_CLASSES/dev/streamscore/infra/Launcher.class"
MJS_DATA="$MJS_DIR/data-$MONGO_PORT"
MJS_LOG="$MJS_DIR/mongo-java-server-$MONGO_PORT.log"
MJS_PID="$MJS_DIR/mongo-java-server-$MONGO_PORT.pid"
case "$LOCAL_MONGO" in
  mongo-java-server) MONGO_PID="$MJS_PID"; MONGO_LOG="$MJS_LOG"; OTHER_MONGO=ferretdb; OTHER_PID="$FERRET_PID" ;;
  ferretdb) MONGO_PID="$FERRET_PID"; MONGO_LOG="$FERRET_LOG"; OTHER_MONGO=mongo-java-server; OTHER_PID="$MJS_PID" ;;
  *) printf '[local-servers] ERROR: STREAMSCORE_LOCAL_MONGO=%s: use mongo-java-server or ferretdb\n' "$LOCAL_MONGO" >&2; exit 1 ;;
esac

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
  if [[ $LOCAL_MONGO == ferretdb ]]; then install_ferretdb; else install_mongo_java_server; fi
}

install_mongo_java_server() {
  command -v java >/dev/null || die "Java 17+ is needed to run mongo-java-server"
  if ! compgen -G "$MJS_LIBS/mongo-java-server-core-*.jar" >/dev/null; then
    command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the mongo-java-server jars"
    say "fetching mongo-java-server jars from Maven Central into $MJS_LIBS (first time only)"
    mkdir -p "$MJS_LIBS"
    mvn -q -B -Dstyle.color=never -f "$MJS_SRC/pom.xml" -DoutputDirectory="$MJS_LIBS" package \
      || die "Maven could not resolve the mongo-java-server jars (see output above)"
  fi
  # The project's launcher declares a current wire version (see Launcher.java). Compiled with
  # the machine's javac directly: Maven's default compiler plugin here targets Java 5 and fails.
  if [[ ! -f $MJS_LAUNCHER || $MJS_SRC/Launcher.java -nt $MJS_LAUNCHER ]]; then
    command -v javac >/dev/null || die "a JDK (javac, 17+) is needed to build the mongo-java-server launcher"
    say "compiling the mongo-java-server launcher into $MJS_CLASSES"
    rm -rf "$MJS_CLASSES"; mkdir -p "$MJS_CLASSES"
    javac --release 17 -nowarn -d "$MJS_CLASSES" -cp "$MJS_LIBS/*" "$MJS_SRC/Launcher.java" \
      || die "javac could not compile $MJS_SRC/Launcher.java (see output above)"
  fi
}

install_ferretdb() {
  if [[ -x "$FERRET_BIN" ]]; then return 0; fi
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
  (cd "$src" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$FERRET_BIN" ./cmd/ferretdb) \
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
  local from=1; [[ -f $KAFKA_LOG ]] && from=$(( $(wc -l <"$KAFKA_LOG") + 1 ))
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
    say "$LOCAL_MONGO already running on 127.0.0.1:$MONGO_PORT (pid $(cat "$MONGO_PID"))"; return 0
  fi
  if pid_alive "$OTHER_PID"; then
    die "$OTHER_MONGO runs on port $MONGO_PORT (pid $(cat "$OTHER_PID")); stop it first with" \
      "'$0 down mongo', or set STREAMSCORE_LOCAL_MONGO=$OTHER_MONGO"
  fi
  if port_open "$MONGO_PORT"; then
    die "port $MONGO_PORT is taken by another process; set STREAMSCORE_MONGO_PORT"
  fi
  local from=1; [[ -f $MONGO_LOG ]] && from=$(( $(wc -l <"$MONGO_LOG") + 1 ))
  say "starting $LOCAL_MONGO on 127.0.0.1:$MONGO_PORT (log: $MONGO_LOG)"
  if [[ $LOCAL_MONGO == ferretdb ]]; then
    mkdir -p "$FERRET_DATA" "$FERRET_DIR/state-$MONGO_PORT"
    nohup setsid "$FERRET_BIN" \
      --listen-addr="127.0.0.1:$MONGO_PORT" \
      --handler=sqlite --sqlite-url="file:$FERRET_DATA/" \
      --state-dir="$FERRET_DIR/state-$MONGO_PORT" \
      --debug-addr=- --telemetry=disable --log-level=warn \
      >>"$MONGO_LOG" 2>&1 </dev/null &
  else
    mkdir -p "$MJS_DATA"
    nohup setsid java "-Xmx$MONGO_HEAP" -Xms64m -XX:+UseSerialGC \
      -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -Dorg.slf4j.simpleLogger.showDateTime=true \
      -cp "$MJS_LIBS/*:$MJS_CLASSES" dev.streamscore.infra.Launcher \
      127.0.0.1 "$MONGO_PORT" "$MJS_DATA/streamscore.mv.db" \
      >>"$MONGO_LOG" 2>&1 </dev/null &
  fi
  echo $! >"$MONGO_PID"
  wait_for "$LOCAL_MONGO" "$MONGO_PORT" "$MONGO_PID" "$MONGO_LOG" "" "$from" wire_ping
}

wire_ping() {  # port: a real ping over the MongoDB wire protocol (see infra/wire_ping.py)
  python3 "$ROOT/infra/wire_ping.py" "$1" 2
}

# ---------------------------------------------------------------- common
wait_for() {  # name port pidfile logfile [ready-pattern, searched in the log from line N] [probe]
  local name="$1" port="$2" pidfile="$3" log="$4" pattern="${5:-}" from="${6:-1}" probe="${7:-port_open}"
  local deadline=$((SECONDS + UP_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! pid_alive "$pidfile"; then
      tail -n 20 "$log" >&2 || true
      die "$name exited during start-up; see $log"
    fi
    if "$probe" "$port" && { [[ -z $pattern ]] || tail -n "+$from" "$log" | grep -q "$pattern"; }; then
      say "$name is up on 127.0.0.1:$port"; return 0
    fi
    sleep 0.5
  done
  die "$name did not answer on 127.0.0.1:$port within ${UP_TIMEOUT}s (a data folder holding thousands of partitions takes minutes to load: raise STREAMSCORE_UP_TIMEOUT, or make clean); see $log"
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

stop_mongo() {  # whichever MongoDB-compatible server runs on this port
  local stopped=0
  if pid_alive "$MJS_PID"; then stop_one mongo-java-server "$MJS_PID"; stopped=1; fi
  if pid_alive "$FERRET_PID"; then stop_one ferretdb "$FERRET_PID"; stopped=1; fi
  rm -f "$MJS_PID" "$FERRET_PID"
  ((stopped)) || say "no MongoDB-compatible server is running on port $MONGO_PORT"
}

status_one() {  # name port pidfile
  if pid_alive "$3" && port_open "$2"; then say "$1: running on 127.0.0.1:$2 (pid $(cat "$3"))"
  elif pid_alive "$3"; then say "$1: process $(cat "$3") alive but port $2 not answering"; return 1
  else say "$1: stopped"; return 1; fi
}

cmd="${1:-status}"; which="${2:-all}"
case "$which" in kafka|mongo|all) ;; *) die "unknown server '$which' (kafka|mongo|all)";; esac
mkdir -p "$KAFKA_DIR" "$FERRET_DIR" "$MJS_DIR"
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
    # Whichever MongoDB-compatible server runs on this port, whatever STREAMSCORE_LOCAL_MONGO says.
    [[ $which != kafka ]] && stop_mongo
    true ;;
  status)
    rc=0
    [[ $which != mongo ]] && { status_one kafka "$KAFKA_PORT" "$KAFKA_PID" || rc=1; }
    [[ $which != kafka ]] && { status_one "$LOCAL_MONGO" "$MONGO_PORT" "$MONGO_PID" || rc=1; }
    [[ $which != kafka ]] && pid_alive "$OTHER_PID" && say "note: $OTHER_MONGO runs on $MONGO_PORT (pid $(cat "$OTHER_PID"))"
    exit $rc ;;
  *) die "unknown command '$cmd' (install|up|down|status)";;
esac

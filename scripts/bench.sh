#!/usr/bin/env bash
# End-to-end benchmark of lb against HAProxy and nginx (stream) on this machine.
#
#   scripts/bench.sh                 # all scenarios, 3 interleaved repeats, 5 s each
#   REPEATS=5 DURATION=10 scripts/bench.sh
#   SCENARIOS="bulk rps" PROXIES="lb lb-copy haproxy" scripts/bench.sh
#   LB_BASE=/tmp/lb-old PROXIES="lb lb-base nginx" scripts/bench.sh   # before/after a change
#   LB_L7_EXTRA='request_id = "off"' SCENARIOS=l7 PROXIES=lb scripts/bench.sh  # l7 listener keys
#   LB_TOP_EXTRA=$'[tracing]\notlp_endpoint = "http://127.0.0.1:4318"' SCENARIOS=l7 PROXIES=lb scripts/bench.sh  # top-level tables
#   WORKERS=2 SCENARIOS="rps bulk4" scripts/bench.sh                  # scaling over workers
#   PIN=0 SCENARIOS="rps conn" scripts/bench.sh                       # nothing pinned
#   SCENARIOS="rps conn" PROXIES="direct lb nginx uring" scripts/bench.sh  # vs an io_uring floor
#
# Every proxy gets WORKERS workers (default 1: lb `workers`, HAProxy `nbthread`, nginx
# `worker_processes`) pinned to CPUs 0..WORKERS-1; load generators and backends run on CPUs
# 1.. — with WORKERS > 1 on a small machine they share cores with the proxy, and the output
# says so. Runs are interleaved (A B C A B C …) and the median is reported with the min–max
# spread, raw and per proxy CPU-second (user+sys from /proc over the run). For request-rate
# scenarios the whole machine's busy CPU per request (/proc/stat, all cores: load, backends,
# kernel work elsewhere included) is reported too, and what a proxy adds over `direct` — the
# fair figure when a proxy moves work into the kernel. For the same scenarios the proxy's own
# CPU per request is split into user and kernel (utime/stime): how much of it is lb's code at
# all. PROXIES=uring adds scripts/experiments/uring-relay (plain TCP scenarios only): the
# cheapest io_uring relay, no decisions at all, as the floor an io_uring lb would run against.
# PIN=0 pins nothing. Results go to
# stdout and to target/bench/results.{md,json}. Only loopback is used; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

REPEATS=${REPEATS:-3}
DURATION=${DURATION:-5}
SCENARIOS=${SCENARIOS:-"bulk bulk4 rps conn dns tls-rps tls-conn idle l7 l7-idle gateway"}
# Idle connections held open for the RSS-per-connection scenario (each costs the proxy two
# descriptors; the container limit here is 20000).
IDLE_CONNS=${IDLE_CONNS:-5000}
PROXIES=${PROXIES:-"direct lb lb-copy lb-ws haproxy nginx"}
OUT=target/bench
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

need() {
  local missing=()
  for bin in wrk iperf3 haproxy nginx taskset dnsperf dnsmasq openssl; do command -v "$bin" >/dev/null || missing+=("$bin"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: wrk iperf3 haproxy nginx dnsperf dnsmasq-base openssl (missing: ${missing[*]})" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk iperf3 haproxy nginx util-linux dnsperf dnsmasq-base openssl >/dev/null
  fi
  # Debian ships nginx's stream proxy as a dynamic module.
  if [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
    echo "installing: libnginx-mod-stream" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnginx-mod-stream >/dev/null
  fi
}
need
if [ -n "${LB_BIN:-}" ]; then
  LB=$LB_BIN   # a release binary built already (fat LTO takes minutes on a small machine)
else
  echo "building lb (release)…" >&2
  cargo build --release --quiet
  LB=target/release/lb
fi
if [[ " $PROXIES " == *" uring "* ]]; then
  echo "building scripts/experiments/uring-relay (release)…" >&2
  cargo build --release --quiet --manifest-path scripts/experiments/uring-relay/Cargo.toml --target-dir target/uring-relay
  URING=target/uring-relay/release/uring-relay
fi

# Room for 10,000+ idle connections per proxy (each costs two descriptors).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
# HAProxy needs ~2.5 descriptors per connection (two sockets, plus splice pipes).
HAPROXY_MAXCONN=$(( (NOFILE - 500) * 2 / 5 < 100000 ? (NOFILE - 500) * 2 / 5 : 100000 ))
NCPU=$(nproc)
WORKERS=${WORKERS:-1}
PROXY_CPU=$([ "$WORKERS" -gt 1 ] && echo "0-$((WORKERS - 1))" || echo 0)
LOAD_CPUS=$([ "$NCPU" -gt 1 ] && echo "1-$((NCPU - 1))" || echo 0)
# PIN=0: nothing is pinned and the kernel places proxy, load and backends (work a proxy moves
# into the kernel, e.g. splice, then lands where the kernel puts it, as in production).
PIN=${PIN:-1}
if [ "$PIN" = 1 ]; then
  ON_PROXY=(taskset -c "$PROXY_CPU"); ON_LOAD=(taskset -c "$LOAD_CPUS")
else
  ON_PROXY=(); ON_LOAD=(); PROXY_CPU=any; LOAD_CPUS=any
fi
if [ "$WORKERS" -ge "$NCPU" ]; then
  echo "note: $WORKERS proxy workers on $NCPU CPUs share cores with the load generator and backends;" \
       "raw rates are then bounded by the load side" >&2
fi

# Ports: backends 181xx, proxies 182xx.
HTTP_BE=127.0.0.1:18101
IPERF_PORT=18102
DNS_PORT=18103
declare -A PORT=([lb]=18201 [lb-copy]=18202 [lb-ws]=18203 [haproxy]=18204 [nginx]=18205 [lb-base]=18206 [uring]=18207)

# Waits until something listens on 127.0.0.1:PORT (bounded: 5 s).
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

# --- backends (on the load CPUs) ---------------------------------------------------------
cat > "$WORK/nginx-be.conf" <<NGX
worker_processes 1; daemon off; pid $WORK/nginx-be.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen $HTTP_BE backlog=4096; location / { return 200 "hello from the backend\n"; } } }
NGX
"${ON_LOAD[@]}" nginx -c "$WORK/nginx-be.conf" -e stderr & PIDS+=($!)
"${ON_LOAD[@]}" iperf3 -s -B 127.0.0.1 -p $IPERF_PORT >/dev/null 2>&1 & PIDS+=($!)
"${ON_LOAD[@]}" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
  --bind-interfaces --listen-address=127.0.0.1 --port=$DNS_PORT --address=/www.example/10.1.2.3 \
  --cache-size=1000 --pid-file= & PIDS+=($!)
printf 'www.example A\n' > "$WORK/queries.txt"
# One ECDSA P-256 certificate for every TLS-terminating proxy (HAProxy wants cert and key in
# one file).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -keyout "$WORK/tls.key" -out "$WORK/tls.pem" 2>/dev/null
cat "$WORK/tls.pem" "$WORK/tls.key" > "$WORK/tls-combined.pem"
# An HS256 token for the gateway scenario (lb reads the secret from the environment).
export LB_BENCH_JWT_SECRET=bench-secret-0123456789abcdef
JWT=$(python3 - <<'PYJ'
import base64, hmac, hashlib, json, os, time
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
head = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b(json.dumps({"sub": "bench", "exp": int(time.time()) + 86400}).encode())
sig = hmac.new(os.environ["LB_BENCH_JWT_SECRET"].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
print(f"{head}.{body}.{b(sig)}")
PYJ
)
wait_port "${HTTP_BE##*:}"; wait_port $IPERF_PORT

# --- proxies -----------------------------------------------------------------------------
lb_conf() { # name port splice
  cat > "$WORK/$1.toml" <<TOML
[global]
workers = $WORKERS
splice = $3
[[listener]]
name = "http"
bind = "127.0.0.1:$2"
pool = "http"
[[listener]]
name = "bulk"
bind = "127.0.0.1:$(( $2 + 50 ))"
pool = "bulk"
[[listener]]
name = "https"
bind = "127.0.0.1:$(( $2 + 70 ))"
pool = "http"
tls = { cert = "$WORK/tls.pem", key = "$WORK/tls.key" }
[[listener]]
name = "dns"
bind = "127.0.0.1:$(( $2 + 60 ))"
protocol = "udp"
pool = "dns"
[[listener]]
name = "l7"
bind = "127.0.0.1:$(( $2 + 80 ))"
protocol = "http"
pool = "http"
${LB_L7_EXTRA:-}
# The gateway scenario: every request verifies a JWT and passes a local rate limit (set
# high enough never to refuse), so its cost against plain "l7" is the policies' cost.
[[listener]]
name = "gw"
bind = "127.0.0.1:$(( $2 + 90 ))"
protocol = "http"
[[route]]
listener = "gw"
pool = "http"
policies = ["auth", "limit"]
[policy.auth]
kind = "jwt"
algorithms = ["HS256"]
secret_env = "LB_BENCH_JWT_SECRET"
[policy.limit]
kind = "rate_limit"
requests = 1000000000
per = "1s"
key = "jwt:sub"
[[pool]]
name = "dns"
backends = [{ addr = "127.0.0.1:$DNS_PORT" }]
[[pool]]
name = "http"
backends = [{ addr = "$HTTP_BE" }]
[[pool]]
name = "bulk"
backends = [{ addr = "127.0.0.1:$IPERF_PORT" }]
${LB_TOP_EXTRA:-}
TOML
}
start_proxy() { # name → PROXY_PID
  local name=$1 port=${PORT[$1]:-0}
  case $name in
    lb)      lb_conf lb "$port" true;  "${ON_PROXY[@]}" "$LB" run --config "$WORK/lb.toml" 2>"$WORK/lb.log" & ;;
    lb-copy) lb_conf lb-copy "$port" false; "${ON_PROXY[@]}" "$LB" run --config "$WORK/lb-copy.toml" 2>"$WORK/lb-copy.log" & ;;
    lb-base) lb_conf lb-base "$port" true; "${ON_PROXY[@]}" "${LB_BASE:?LB_BASE=path of another lb binary}" run --config "$WORK/lb-base.toml" 2>"$WORK/lb-base.log" & ;;
    lb-ws)   lb_conf lb-ws "$port" true; "${ON_PROXY[@]}" "$LB" run --threading work-stealing --config "$WORK/lb-ws.toml" 2>"$WORK/lb-ws.log" & ;;
    uring)   "${ON_PROXY[@]}" "$URING" "127.0.0.1:$port=$HTTP_BE" "127.0.0.1:$(( port + 50 ))=127.0.0.1:$IPERF_PORT" 2>"$WORK/uring.log" & ;;
    haproxy)
      cat > "$WORK/haproxy.cfg" <<HAP
global
  nbthread $WORKERS
  maxconn $HAPROXY_MAXCONN
  # wrk (OpenSSL) lists TLS_AES_256_GCM_SHA384 first and rustls follows the client's order:
  # pin HAProxy to the same suite so both do the same work per record.
  ssl-default-bind-ciphersuites TLS_AES_256_GCM_SHA384
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode tcp
  timeout connect 3s
  timeout client 5m
  timeout server 5m
  option splice-auto
frontend http
  bind 127.0.0.1:$port
  default_backend http
backend http
  server be $HTTP_BE
frontend bulk
  bind 127.0.0.1:$(( port + 50 ))
  default_backend bulk
frontend https
  bind 127.0.0.1:$(( port + 70 )) ssl crt $WORK/tls-combined.pem
  default_backend http
backend bulk
  server be 127.0.0.1:$IPERF_PORT
# HTTP mode with keep-alive to the backend (http-reuse safe, the default), adding
# X-Forwarded-For as lb does.
frontend l7
  mode http
  option forwardfor
  bind 127.0.0.1:$(( port + 80 ))
  default_backend l7
backend l7
  mode http
  server be $HTTP_BE
HAP
      "${ON_PROXY[@]}" haproxy -f "$WORK/haproxy.cfg" -db 2>"$WORK/haproxy.log" & ;;
    nginx)
      cat > "$WORK/nginx-lb.conf" <<NGX
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes $WORKERS; daemon off; pid $WORK/nginx-lb.pid; error_log stderr error;
worker_rlimit_nofile $NOFILE;
events { worker_connections $(( NOFILE / 2 )); }
stream {
  upstream http { server $HTTP_BE; }
  upstream bulk { server 127.0.0.1:$IPERF_PORT; }
  upstream dns { server 127.0.0.1:$DNS_PORT; }
  server { listen 127.0.0.1:$(( port + 60 )) udp; proxy_pass dns; proxy_timeout 10s; }
  server { listen 127.0.0.1:$port backlog=4096; proxy_pass http; }
  server { listen 127.0.0.1:$(( port + 50 )) backlog=4096; proxy_pass bulk; }
  # TLS termination, pinned to the suite lb and HAProxy use (see HAProxy's config).
  server {
    listen 127.0.0.1:$(( port + 70 )) ssl backlog=4096;
    ssl_certificate $WORK/tls.pem; ssl_certificate_key $WORK/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_conf_command Ciphersuites TLS_AES_256_GCM_SHA384;
    proxy_pass http;
  }
}
# HTTP proxy with a keep-alive upstream pool, adding X-Forwarded-For as lb does.
http {
  access_log off;
  upstream l7 { server $HTTP_BE; keepalive 64; }
  server {
    listen 127.0.0.1:$(( port + 80 )) backlog=4096;
    location / {
      proxy_pass http://l7;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
  # The gateway scenario's nearest equivalent: nginx has no JWT check without NGINX Plus or
  # a module (auth_request would add a subrequest lb does not make), so it runs the rate
  # limit alone, per client address, set high enough never to refuse.
  limit_req_zone \$binary_remote_addr zone=gw:1m rate=1000000r/s;
  server {
    listen 127.0.0.1:$(( port + 90 )) backlog=4096;
    location / {
      limit_req zone=gw burst=1000000 nodelay;
      proxy_pass http://l7;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
NGX
      "${ON_PROXY[@]}" nginx -c "$WORK/nginx-lb.conf" -e stderr 2>"$WORK/nginx-lb.log" & ;;
    *) echo "unknown proxy $name" >&2; exit 2 ;;
  esac
  PROXY_PID=$!
}
# Busy ticks of every CPU (user nice system irq softirq steal): what a request costs the whole
# machine, kernel work on other cores and in kworkers included, not only the proxy process.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
cpu_ticks() { # pid → "utime stime" of the process and its children (nginx/haproxy workers)
  local user=0 sys=0 p u s
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    [ -r "/proc/$p/stat" ] || continue
    read -r u s < <(awk '{print $14, $15}' "/proc/$p/stat")
    user=$(( user + u )); sys=$(( sys + s ))
  done
  echo "$user $sys"
}

# --- scenarios: print "<value>" (higher is better) ----------------------------------------
run_scenario() { # scenario port
  local s=$1 port=$2
  case $s in
    bulk)  "${ON_LOAD[@]}" iperf3 -c 127.0.0.1 -p $(( port + 50 )) -t "$DURATION" -J 2>/dev/null | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9,2))' ;;
    bulk4) "${ON_LOAD[@]}" iperf3 -c 127.0.0.1 -p $(( port + 50 )) -P 4 -t "$DURATION" -J 2>/dev/null | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9,2))' ;;
    rps)   "${ON_LOAD[@]}" wrk -t1 -c50 -d"${DURATION}s" --latency "http://127.0.0.1:$port/" | awk '/Requests\/sec/ {r=$2} / 99%/ {p=$2} END {print r" "p}' ;;
    # The tail-latency study: L4 keep-alive at 64 and 256 connections over two load threads
    # (run with REPEATS=10; every run's p99 is kept, since the target is "in every run").
    tail64|tail256) "${ON_LOAD[@]}" wrk -t2 -c"${s#tail}" -d"${DURATION}s" --latency "http://127.0.0.1:$port/" | awk '/Requests\/sec/ {r=$2} / 99%/ {p=$2} END {print r" "p}' ;;
    dns)   "${ON_LOAD[@]}" dnsperf -s 127.0.0.1 -p $(( port + 60 )) -d "$WORK/queries.txt" -l "$DURATION" -c 8 -q 200 2>/dev/null \
             | awk '/Queries per second/ {q=$4} /Queries lost/ {l=$4} END {print q" "l}' ;;
    idle)  idle_rss "$port" ;;
    l7-idle) idle_rss $(( port + 80 )) ;;
    conn)  "${ON_LOAD[@]}" wrk -t1 -c50 -d"${DURATION}s" -H "Connection: close" "http://127.0.0.1:$port/" | awk '/Requests\/sec/ {print $2}' ;;
    tls-rps)  "${ON_LOAD[@]}" wrk -t1 -c50 -d"${DURATION}s" --latency "https://127.0.0.1:$(( port + 70 ))/" | awk '/Requests\/sec/ {r=$2} / 99%/ {p=$2} END {print r" "p}' ;;
    gateway) "${ON_LOAD[@]}" wrk -t1 -c50 -d"${DURATION}s" --latency -H "Authorization: Bearer $JWT" "http://127.0.0.1:$(( port + 90 ))/" | awk '/Requests\/sec/ {r=$2} / 99%/ {p=$2} END {print r" "p}' ;;
    l7)    "${ON_LOAD[@]}" wrk -t1 -c50 -d"${DURATION}s" --latency "http://127.0.0.1:$(( port + 80 ))/" | awk '/Requests\/sec/ {r=$2} / 99%/ {p=$2} END {print r" "p}' ;;
    # Each request is a new TLS connection: its latency is the handshake's and one exchange's
    # (p50/p99 kept).
    # tls-conn8: the same with 8 connections, where the load generator's own handshakes leave
    # it CPU to spare, so the latency is the proxy's rather than the client's queue.
    tls-conn|tls-conn8) "${ON_LOAD[@]}" wrk -t1 -c"$([ "$s" = tls-conn8 ] && echo 8 || echo 50)" -d"${DURATION}s" --latency -H "Connection: close" "https://127.0.0.1:$(( port + 70 ))/" | awk '/Requests\/sec/ {r=$2} / 50%/ {m=$2} / 99%/ {p=$2} END {print r" p50:"m"/p99:"p}' ;;
  esac
}
rss_kib() { # pid [field] → a /proc status field (default VmRSS) of the process and its children, KiB
  local total=0 p field=${2:-VmRSS}
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    [ -r "/proc/$p/status" ] && total=$(( total + $(awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status") ))
  done
  echo $total
}
# Opens IDLE_CONNS connections through the proxy (each sends one request so the backend side
# is established too), holds them, and prints the proxy's growth per connection in bytes of
# anonymous memory (heap and stacks: what connections cost), then of all its RSS (which also
# counts the pages of its own program file first read while serving: a fixed cost, ~1.2 MB
# for lb's 18 MB binary, that a per-connection figure should not carry).
idle_rss() {
  local port=$1 before after anon0 anon1
  before=$(rss_kib "$CUR_PID"); anon0=$(rss_kib "$CUR_PID" RssAnon)
  python3 - "$port" "$IDLE_CONNS" "$WORK/idle.ready" <<'PYI' &
import socket, sys, time, os
port, n, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conns.append(s)
    # One at a time: each connection then parks idle after its answer, and the proxy holds
    # one backend connection rather than as many as there were requests in flight at once
    # (that number varies from run to run and is not the idle client connection's cost).
    s.settimeout(5)
    s.recv(4096)
open(ready, "w").close()
time.sleep(30)
PYI
  local client=$!
  for _ in $(seq 600); do [ -e "$WORK/idle.ready" ] && break; sleep 0.1; done
  sleep 1
  after=$(rss_kib "$CUR_PID"); anon1=$(rss_kib "$CUR_PID" RssAnon)
  kill $client 2>/dev/null; wait $client 2>/dev/null || true
  rm -f "$WORK/idle.ready"
  echo "$(( (anon1 - anon0) * 1024 / IDLE_CONNS )) rss:$(( (after - before) * 1024 / IDLE_CONNS ))"
}
unit() { case $1 in bulk|bulk4) echo "Gbit/s";; rps|tls-rps|l7|gateway|tail64|tail256) echo "req/s";; conn|tls-conn|tls-conn8) echo "conn/s";; dns) echo "queries/s (lost)";; idle) echo "bytes anonymous RSS per idle connection (lower is better)";; l7-idle) echo "bytes anonymous RSS per idle HTTP keep-alive connection (lower is better)";; esac; }

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
for s in $SCENARIOS; do
  for r in $(seq "$REPEATS"); do
    for p in $PROXIES; do
      # HAProxy has no UDP proxying.
      if [ "$s" = dns ] && [ "$p" = haproxy ]; then continue; fi
      # There is no direct TLS path to the plain backend.
      case $s in tls-*) [ "$p" = direct ] && continue ;; esac
      # The io_uring relay moves plain TCP streams and nothing else.
      if [ "$p" = uring ]; then case $s in rps|conn|bulk|bulk4|tail64|tail256) ;; *) continue ;; esac; fi
      # Gateway policies: lb (and lb-base), and nginx's nearest equivalent (limit_req alone).
      if [ "$s" = gateway ]; then case $p in lb|lb-base|nginx) ;; *) continue ;; esac; fi
      # RSS per connection is a proxy's figure; there is no direct path to measure.
      case $s in idle|l7-idle) [ "$p" = direct ] && continue ;; esac
      if [ "$p" = direct ]; then
        case $s in
          rps|conn|tail64|tail256) port=${HTTP_BE##*:} ;;
          l7) port=$(( ${HTTP_BE##*:} - 80 )) ;;
          dns) port=$(( DNS_PORT - 60 )) ;;
          *) port=$(( IPERF_PORT - 50 )) ;;
        esac
        m0=$(machine_ticks); v=$(run_scenario "$s" "$port"); m1=$(machine_ticks); cpu=0; user=0
      else
        start_proxy "$p" >/dev/null; pid=$PROXY_PID; CUR_PID=$pid; PIDS+=("$pid"); wait_port "${PORT[$p]}"; wait_port $(( ${PORT[$p]} + 50 ))
        read -r u0 s0 < <(cpu_ticks "$pid"); m0=$(machine_ticks)
        v=$(run_scenario "$s" "${PORT[$p]}")
        read -r u1 s1 < <(cpu_ticks "$pid"); m1=$(machine_ticks)
        user=$(( u1 - u0 )); cpu=$(( user + s1 - s0 )); kill "$pid"; wait "$pid" 2>/dev/null || true
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$p" "$r" "$v" "$cpu" "$(( m1 - m0 ))" "$user" >> "$RESULTS"
      printf '  %-6s %-8s run %s: %s %s (proxy cpu %s ticks)\n' "$s" "$p" "$r" "$v" "$(unit "$s")" "$cpu" >&2
    done
  done
done

python3 - "$RESULTS" "$OUT" "$DURATION" "$(getconf CLK_TCK)" "$WORKERS" "$PROXY_CPU" "$LOAD_CPUS" "$PIN" <<'PY'
import json, statistics, sys, collections, platform, os
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
out, dur, tck = sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
units = {"idle": "bytes anonymous RSS per idle connection (lower is better; all RSS in the last column)", "l7-idle": "bytes anonymous RSS per idle HTTP keep-alive connection (lower is better; all RSS in the last column)", "bulk": "Gbit/s (1 stream)", "bulk4": "Gbit/s (4 streams)", "rps": "keep-alive req/s", "conn": "new conn/s", "dns": "UDP DNS queries/s", "tls-rps": "TLS keep-alive req/s", "tls-conn": "TLS new handshakes/s", "tls-conn8": "TLS new handshakes/s, 8 conns", "l7": "HTTP-mode keep-alive req/s", "tail64": "keep-alive req/s, 64 conns (p99 of every run)", "tail256": "keep-alive req/s, 256 conns (p99 of every run)", "gateway": "HTTP mode + JWT + rate limit req/s"}
data = collections.defaultdict(list)
# Scenarios whose figure is a rate of requests (queries, connections): for these the whole
# machine's CPU per request is reported, and what a proxy adds over the direct path.
rates = {"rps", "conn", "dns", "tls-rps", "tls-conn", "tls-conn8", "l7", "gateway", "tail64", "tail256"}
for s, p, r, v, cpu, mach, user in rows:
    parts = v.split()
    if not parts: continue
    val = float(parts[0]); p99 = parts[1] if len(parts) > 1 else ""
    per_cpu = val / (int(cpu) / tck) if int(cpu) > 0 else None
    us_per_req = int(mach) / tck / (val * dur) * 1e6 if s in rates and val > 0 else None
    # The proxy's own CPU per request, and the part of it spent in user space.
    proxy_us = int(cpu) / tck / (val * dur) * 1e6 if s in rates and val > 0 and int(cpu) > 0 else None
    user_us = int(user) / tck / (val * dur) * 1e6 if proxy_us is not None else None
    data[(s, p)].append((val, per_cpu, p99, us_per_req, proxy_us, user_us))
table, md = [], []
cpuinfo = open("/proc/cpuinfo").read()
model = next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("model name")), "?")
workers, proxy_cpus, load_cpus = sys.argv[5], sys.argv[6], sys.argv[7]
pinned = sys.argv[8] == "1"
placement = f"pinned to CPU {proxy_cpus}; load and backends on CPU {load_cpus}" if pinned else "unpinned (PIN=0): the kernel places proxy, load and backends"
md.append(f"Machine: {os.cpu_count()} CPUs ({model}), kernel {platform.release()}. Proxy: {workers} worker(s), {placement}.")
md.append("Machine µs/req: busy time of all CPUs (/proc/stat) per request, load generator and backend included; added: that minus the direct path's.")
md.append("")
md.append("Proxy µs/req (user): the proxy's own CPU per request (utime+stime), and of it the time in user space; the rest is the kernel's, in the proxy's system calls.")
md.append("")
md.append("| scenario | proxy | median | min–max | per proxy CPU-s | vs haproxy | vs nginx | vs direct | machine µs/req | added µs/req | proxy µs/req (user) | p99 / lost |")
md.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
for s in dict.fromkeys(k[0] for k in data):
    med = {p: statistics.median(v[0] for v in vals) for (ss, p), vals in data.items() if ss == s}
    for (ss, p), vals in data.items():
        if ss != s: continue
        vs = [v[0] for v in vals]; pc = [v[1] for v in vals if v[1]]
        m = statistics.median(vs)
        pcm = statistics.median(pc) if pc and s not in ("idle", "l7-idle") else None
        rh = m / med["haproxy"] if med.get("haproxy") else None
        rn = m / med["nginx"] if med.get("nginx") else None
        rd = m / med["direct"] if med.get("direct") else None
        # The tail scenarios keep every run's p99 (in run order); others the median run's.
        p99 = " ".join(v[2] for v in vals) if s.startswith("tail") else sorted(vals, key=lambda v: v[0])[len(vals)//2][2]
        mu = [v[3] for v in vals if v[3] is not None]
        mus = statistics.median(mu) if mu else None
        du = [v[3] for v in data.get((s, "direct"), []) if v[3] is not None]
        added = mus - statistics.median(du) if mus is not None and du and p != "direct" else None
        # The median run's split (the run with the median rate), so user and total agree.
        mid = sorted(vals, key=lambda v: v[0])[len(vals)//2]
        pus, uus = mid[4], mid[5]
        row = dict(scenario=s, unit=units.get(s, s), proxy=p, median=m, min=min(vs), max=max(vs), per_cpu_second=pcm, vs_haproxy=rh, vs_nginx=rn, vs_direct=rd, machine_us_per_request=mus, added_us_per_request=added, proxy_us_per_request=pus, proxy_user_us_per_request=uus, p99_or_lost=p99, runs=len(vs), pinned=pinned)
        table.append(row)
        f = lambda x: "–" if x is None else f"{x:.2f}"
        md.append(f"| {units.get(s,s)} | {p} | {m:.2f} | {min(vs):.2f}–{max(vs):.2f} | {'–' if pcm is None else (f'{pcm:.2f}' if pcm < 100 else f'{pcm:.0f}')} | {f(rh)} | {f(rn)} | {f(rd)} | {f(mus)} | {f(added)} | {'–' if pus is None else f'{pus:.2f} ({uus:.2f})'} | {p99 or '–'} |")
open(os.path.join(out, "results.json"), "w").write(json.dumps(table, indent=1))
open(os.path.join(out, "results.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY

#!/usr/bin/env bash
# Memory and stalls under backend churn (issue 15): what a big pool costs, and whether a
# reload that adds and then removes it gives everything back.
#
#   scripts/churn.sh                       # 10,000-backend pool, 3 add/remove cycles
#   N=100000 CYCLES=1 scripts/churn.sh     # the 100k-backend figures
#   LB=target/release/lb scripts/churn.sh  # another build (default: target/debug/lb)
#   PROTOCOL=http scripts/churn.sh         # the big pool behind an http listener
#   SMAPS=1 scripts/churn.sh               # also lb's biggest resident mappings at the end
#
# Prints, for each step: lb's RSS (VmRSS from /proc), the /metrics size, requests through an
# http listener while the adding reload runs (count, failures, slowest), and how long one
# /api/status took while the reload that adds the pool was running; then `lb check`'s peak
# RSS on the big config (/usr/bin/time -v). Backends are loopback addresses nobody listens
# on; the big pool has no health checks, so no sockets are opened to them. Loopback only;
# every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-10000}
CYCLES=${CYCLES:-3}
LB=${LB:-target/debug/lb}
[ -x "$LB" ] || cargo build -q --bin lb
WORK=$(mktemp -d)
LBPID=
ORIGINPID=
cleanup() {
  [ -n "$LBPID" ] && kill "$LBPID" 2>/dev/null
  [ -n "$ORIGINPID" ] && kill "$ORIGINPID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
ADMIN_PORT=$(free_port)
MAIN_PORT=$(free_port)
ORIGIN_PORT=$(free_port)
# A plain HTTP origin behind listener "main", to time requests while reloads run.
mkdir -p "$WORK/www" && echo ok >"$WORK/www/index.html"
python3 -m http.server "$ORIGIN_PORT" --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
ORIGINPID=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$ORIGIN_PORT/" && break; sleep 0.1; done
base() {
  cat <<CONF
[global]
workers = 2
[admin]
bind = "127.0.0.1:$ADMIN_PORT"
[[listener]]
name = "main"
bind = "127.0.0.1:$MAIN_PORT"
protocol = "http"
pool = "p"
[[pool]]
name = "p"
backends = [{ addr = "127.0.0.1:$ORIGIN_PORT" }]
CONF
}
big() {
  base
  printf '[[listener]]\nname = "big"\nbind = "127.0.0.1:0"\nprotocol = "%s"\npool = "big"\n' "${PROTOCOL:-tcp}"
  printf '[[pool]]\nname = "big"\nalgorithm = "%s"\nbackends = [\n' "${ALGORITHM:-consistent-hash}"
  # 127.x.y.z:PORT: loopback addresses nothing listens on, different in every cycle ($1),
  # as when a deployment's backends come and go.
  python3 -c "
for i in range($N):
    print('  { addr = \"127.%d.%d.%d:%d\" },' % (1 + i // 62500, i // 250 % 250, i % 250 + 1, 10000 + $1))
"
  printf ']\n'
}
base >"$WORK/base.toml"
for c in $(seq "$CYCLES"); do big "$c" >"$WORK/big$c.toml"; done

rss() { awk '/VmRSS/ {printf "%.1f MB", $2/1024}' "/proc/$LBPID/status"; }
metrics_size() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | wc -c | awk '{printf "%.2f MB", $1/1048576}'; }
reload() {
  cp "$1" "$WORK/lb.toml"
  curl -s -o /dev/null -w '%{http_code} in %{time_total}s' -X POST "http://127.0.0.1:$ADMIN_PORT/api/reload"
}

cp "$WORK/base.toml" "$WORK/lb.toml"
"$LB" run --config "$WORK/lb.toml" 2>"$WORK/lb.log" &
LBPID=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$ADMIN_PORT/api/status" && break; sleep 0.1; done
echo "lb $LB, $N backends, $CYCLES cycles"
echo "start: rss $(rss), /metrics $(metrics_size)"
for c in $(seq "$CYCLES"); do
  reload "$WORK/big$c.toml" >"$WORK/code" &
  RPID=$!
  # Requests through "main" while the reload runs (at most 2,000), one after another.
  (for _ in $(seq 2000); do
     kill -0 "$RPID" 2>/dev/null || break
     curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "http://127.0.0.1:$MAIN_PORT/"
   done >"$WORK/requests") &
  QPID=$!
  # /api/status while the reload runs (the first answer after the reload was asked for).
  sleep 0.05
  st=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$ADMIN_PORT/api/status")
  wait "$RPID"
  wait "$QPID"
  rq=$(awk '{n++; if ($1 != 200) bad++; if ($2 > max) max = $2} END {printf "%d requests, %d not 200, slowest %.3fs", n, bad, max}' "$WORK/requests")
  m=$(metrics_size)
  sleep 1
  echo "cycle $c add ($(cat "$WORK/code")): rss $(rss) a second later, /metrics $m, /api/status during the reload ${st}s; during it: $rq"
  code=$(reload "$WORK/base.toml")
  # The removed pool is freed when the old listener's accept loops let go of it, on lb's
  # reclaim thread after 100 ms without new frees (lb-core/src/reclaim.rs), and its series go
  # with it: look a second later.
  sleep 1
  echo "cycle $c remove ($code): rss $(rss) a second later, /metrics $(metrics_size)"
done
if [ -n "${SMAPS:-}" ]; then
  # Where the rest is: lb's biggest resident mappings (heap arenas are the anonymous ones).
  awk '/^[0-9a-f]+-/ {m=$0} /^Rss:/ && $2 > 2000 {print $2 " KiB", m}' "/proc/$LBPID/smaps" | sort -rn | head
fi
kill "$LBPID"; wait "$LBPID" 2>/dev/null || true; LBPID=
/usr/bin/time -v "$LB" check --config "$WORK/big1.toml" 2>"$WORK/time" >/dev/null || true
echo "lb check on the big config: peak rss $(awk '/Maximum resident/ {printf "%.1f MB", $6/1024}' "$WORK/time"), $(awk -F': ' '/Elapsed/ {print $2}' "$WORK/time") elapsed"

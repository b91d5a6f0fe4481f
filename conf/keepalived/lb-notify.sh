#!/bin/sh
# keepalived's notify hook: called as  lb-notify.sh TYPE NAME STATE [PRIORITY]
# (TYPE = INSTANCE or GROUP, STATE = MASTER | BACKUP | FAULT | STOP). Logs the transition with
# the local lb's readiness, so the journal shows why the VIP moved.
# LB_NOTIFY_LOG=FILE appends the same line to FILE as well (the failover test reads it).
ready=$(/usr/bin/curl -s --max-time 1 -o /dev/null -w '%{http_code}' http://127.0.0.1:9900/api/ready 2>/dev/null || echo none)
line="vrrp $1 $2 is now $3 (lb /api/ready: $ready)"
logger -t lb-keepalived "$line" 2>/dev/null || true
if [ -n "${LB_NOTIFY_LOG:-}" ]; then
  echo "$(date +%s.%N) $line" >> "$LB_NOTIFY_LOG"
fi

#!/bin/sh
# GET /cgi-bin/status: one line of key=value fields (no spaces inside values) for tests and the lab.
printf 'Content-Type: text/plain\r\n\r\n'
read -r l1 l5 l15 _ < /proc/loadavg
read -r up _ < /proc/uptime
set -- $(cat /run/dirty.state 2>/dev/null)
echo "host=$(hostname) ip=$(cat /run/ip 2>/dev/null) load=$l1,$l5,$l15 uptime=$up tick=$(cat /run/tick 2>/dev/null) disk=$(cat /data/counter 2>/dev/null) boots=$(cat /data/boots 2>/dev/null) ncpu=$(nproc) memtotal_kb=$(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo) memfree_kb=$(sed -n 's/^MemFree: *\([0-9]*\).*/\1/p' /proc/meminfo) dirty_mb=${1:-0} dirty_passes=${2:-0} disk_sectors=$(cat /sys/block/vda/size 2>/dev/null)"

#!/bin/bash
# stat.sh KILN BOOTSTRAP N: drive.py with `perf stat` on kiln serve over the N measured calls
# (context switches, run time, the system calls of a warm call). MEM and BODY as for drive.py.
set -e
dir=${WARM_CPU_DIR:-/tmp/warm-cpu}
mkdir -p "$dir"; rm -f "$dir/go" "$dir/done" "$dir/drive.out"
here=$(dirname "$0")
python3 "$here/drive.py" "$1" "$2" "$3" hold > "$dir/drive.out" 2>&1 &
for _ in $(seq 200); do grep -q PID "$dir/drive.out" 2>/dev/null && break; sleep 0.1; done
pid=$(awk '/^PID/{print $2}' "$dir/drive.out")
perf stat -e context-switches,task-clock -e 'syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_accept4,syscalls:sys_enter_close,syscalls:sys_enter_epoll_ctl' \
  -p "$pid" -o "$dir/stat.out" &
perf=$!
sleep 0.5; touch "$dir/go"
while [ ! -e "$dir/done" ]; do sleep 0.1; done
kill -INT $perf; wait $perf || true
wait
grep -v '^PID' "$dir/drive.out"
grep -E '^ +[0-9]' "$dir/stat.out" | awk -v n="$3" '{gsub(",","",$1); name=($2=="msec") ? $3 " (ms)" : $2; printf "  %-36s %10s  %8.3f per call\n", name, $1, $1/n}'

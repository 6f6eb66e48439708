#!/bin/bash
# threads.sh KILN BOOTSTRAP N: drive.py's calls, with each kiln serve thread's voluntary and
# involuntary context switches and run time per call over the N measured calls (which threads
# a warm call wakes). MEM, BODY and WORKERS as for drive.py.
set -e
dir=${WARM_CPU_DIR:-/tmp/warm-cpu}
mkdir -p "$dir"; rm -f "$dir/go" "$dir/done" "$dir/drive.out"
here=$(dirname "$0")
LINGER=2 WARM_CPU_DIR=$dir python3 "$here/drive.py" "$1" "$2" "$3" hold > "$dir/drive.out" 2>&1 &
for _ in $(seq 200); do grep -q PID "$dir/drive.out" 2>/dev/null && break; sleep 0.1; done
pid=$(awk '/^PID/{print $2}' "$dir/drive.out")
snap() {
  for t in /proc/"$pid"/task/*; do
    echo "$(basename "$t") $(tr ' ' _ < "$t/comm") $(awk '/^voluntary/{v=$2} /^nonvoluntary/{n=$2} END{print v, n}' "$t/status") $(awk '{print $1}' "$t/schedstat")"
  done 2>/dev/null | sort
}
snap > "$dir/threads.0"; touch "$dir/go"
while [ ! -e "$dir/done" ]; do sleep 0.05; done
snap > "$dir/threads.1"; wait
grep -v '^PID' "$dir/drive.out"
join "$dir/threads.0" "$dir/threads.1" | awk -v n="$3" \
  '{printf "  %-8s %-18s voluntary %6.3f  involuntary %6.3f  cpu %7.1f us per call\n", $1, $2, ($7-$3)/n, ($8-$4)/n, ($9-$5)/n/1000}'

#!/bin/bash
# callgrind.sh KILN BOOTSTRAP N OUT: user-space instructions of `kiln serve --isolation none`
# over N warm calls (valgrind's callgrind; the sandbox does not start under valgrind).
# Zeroes the counts after 100 warm-up calls and dumps them after the N calls into OUT.1
# (read it with `callgrind_annotate` or count `summary:` / N).
set -e
kiln=$1; boot=$2; n=$3; out=$4
work=$(mktemp -d /tmp/warm-cpu-cg.XXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --callgrind-out-file="$out" "$kiln" serve --isolation none \
  --addr 127.0.0.1:$port --data-dir "$work/data" > "$work/log" 2>&1 &
export VG_PID=$!
for _ in $(seq 300); do curl -s -o /dev/null http://127.0.0.1:$port/2015-03-31/functions/ && break; sleep 0.2; done
mkdir "$work/fn"; cp "$boot" "$work/fn/bootstrap"
"$kiln" deploy fn "$work/fn" --memory 1769 --endpoint http://127.0.0.1:$port > /dev/null
python3 - "$port" "$n" <<'PY'
import http.client, os, subprocess, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
def call():
    c.request("POST", "/2015-03-31/functions/fn/invocations", body=b'{"name":"bench"}')
    r = c.getresponse(); r.read()
    if r.status != 200: raise SystemExit(f"invoke answered {r.status}")
for _ in range(100): call()
subprocess.run(["callgrind_control", "-z", os.environ["VG_PID"]], check=True, stdout=subprocess.DEVNULL)
for _ in range(n): call()
subprocess.run(["callgrind_control", "-d", "measured", os.environ["VG_PID"]], check=True, stdout=subprocess.DEVNULL)
PY
kill -TERM $VG_PID; wait $VG_PID || true
rm -rf "$work"
echo "instructions per call: $(( $(awk '/^summary:/{print $2}' "$out.1") / n ))"

#!/bin/bash
# record.sh NAME CMD... : runs CMD (drive.py or bare.py) with MARK=1 under a system-wide
# `perf record` that is enabled only around each call, then writes NAME.txt for steps.py and
# boot.py. Only a few system calls are recorded (perf's own writes would feed back otherwise).
set -e
DIR=${COLD_TRACE_DIR:-/tmp/cold-trace}
mkdir -p "$DIR"
[ -p "$DIR/ctl" ] || mkfifo "$DIR/ctl"; [ -p "$DIR/ack" ] || mkfifo "$DIR/ack"
name=$1; shift
# sendmsg recvmsg connect accept execve poll epoll_wait epoll_pwait getpriority setpriority
# move_mount sethostname clone clone3 exit_group pwrite64 openat sendto recvfrom writev chdir
# unshare open_tree mount_setattr mmap mprotect brk
F='id == 46 || id == 47 || id == 42 || id == 43 || id == 288 || id == 59 || id == 7 || id == 232 || id == 281 || id == 140 || id == 141 || id == 429 || id == 170 || id == 56 || id == 435 || id == 231 || id == 18 || id == 257 || id == 44 || id == 45 || id == 20 || id == 80 || id == 272 || id == 428 || id == 442 || id == 9 || id == 10 || id == 12'
MARK=1 COLD_TRACE_DIR="$DIR" perf record -o "$DIR/$name.data" -D -1 --control "fifo:$DIR/ctl,$DIR/ack" -a \
  -e sched:sched_switch,sched:sched_wakeup,sched:sched_wakeup_new,sched:sched_process_exec,sched:sched_process_fork,exceptions:page_fault_user \
  -e raw_syscalls:sys_enter --filter "$F" -e raw_syscalls:sys_exit --filter "$F" -- "$@" > "$DIR/$name.log" 2>&1 < /dev/null || { tail -5 "$DIR/$name.log" >&2; exit 1; }
perf script -i "$DIR/$name.data" -F comm,pid,tid,cpu,time,event,trace > "$DIR/$name.txt" 2>/dev/null

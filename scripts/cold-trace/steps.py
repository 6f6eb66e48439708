#!/usr/bin/python3
"""Per cold call steps (p50/p10/p90 of each step's time since the previous one) from
`perf script -F comm,pid,tid,cpu,time,event,trace` of a record.sh run of drive.py."""
import re, sys, statistics
rx = re.compile(r'^\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s+(.*)$')
ev = []
for line in open(sys.argv[1]):
    m = rx.match(line)
    if not m: continue
    comm, pid, tid, cpu, t, name, rest = m.groups()
    ev.append((float(t), comm, int(pid), int(tid), int(cpu), name, rest))
# windows
wins = []; cur = None
for e in ev:
    if e[5] == 'raw_syscalls:sys_enter:' or e[5] == 'raw_syscalls:sys_enter':
        pass
for i, e in enumerate(ev):
    t, comm, pid, tid, cpu, name, rest = e
    if comm == 'python3' and 'sys_enter' in name and rest.startswith('NR 140 (0, 1092'):
        cur = [i]
    elif comm == 'python3' and 'sys_enter' in name and rest.startswith('NR 140 (0, 1093') and cur:
        cur.append(i); wins.append(cur); cur = None
keys = ['req', 'claim', 'init_rx', 'unpark', 'exec_in', 'exec_done', 'started_tx', 'kiln_started', 'ld_open1', 'ld_last_miss', 'connect', 'next_tx', 'next_rx', 'event_tx', 'resp_tx', 'client_rx']
rows = []
for a, b in wins:
    w = ev[a:b+1]
    r = {}
    def first(pred, key, after=None):
        for e in w:
            if after is not None and e[0] < after: continue
            if pred(e):
                r[key] = e[0]; return e
        return None
    t0 = w[0][0]
    first(lambda e: e[1]=='python3' and 'sys_enter' in e[5] and e[6].startswith('NR 44 '), 'req')
    ce = first(lambda e: e[1].startswith('tokio') and 'sys_enter' in e[5] and e[6].startswith('NR 46 ') , 'claim')
    boot = None
    ex = first(lambda e: e[5].startswith('sched:sched_process_exec') and 'bootstrap' in e[6], 'exec_done')
    if ex: boot = ex[3]
    if boot:
        first(lambda e: e[3]==boot and 'sys_enter' in e[5] and e[6].startswith('NR 59 '), 'exec_in')
        first(lambda e: e[3]==boot and 'sys_enter' in e[5] and e[6].startswith('NR 257 '), 'ld_open1', r.get('exec_done'))
        last = None
        for e in w:
            if e[3]==boot and 'sys_exit' in e[5] and e[6].startswith('NR 257 ') and e[6].endswith('= -2'): last = e[0]
        if last: r['ld_last_miss'] = last
        first(lambda e: e[2]==boot and 'sys_enter' in e[5] and e[6].startswith('NR 42 '), 'connect')
        first(lambda e: e[2]==boot and 'sys_enter' in e[5] and e[6].startswith('NR 20 '), 'next_tx')
    # init: the process that woke with recvmsg exit of the claim (len > 100) and comm kiln-zygote
    # (or ':<pid>' when its blank was built while the trace was off, so perf never saw its comm)
    ie = first(lambda e: (e[1]=='kiln-zygote' or e[1].startswith(':')) and 'sys_exit' in e[5] and e[6].startswith('NR 47 =') and int(e[6].split('=')[1]) > 100, 'init_rx', r.get('claim'))
    if ie:
        init = ie[3]
        first(lambda e: e[3]==init and 'sys_exit' in e[5] and e[6].startswith('NR 141 '), 'unpark')
        first(lambda e: e[3]==init and 'sys_enter' in e[5] and e[6].startswith('NR 46 '), 'started_tx', r.get('exec_done'))
    first(lambda e: e[1].startswith('tokio') and e[2]!=boot and 'sys_exit' in e[5] and e[6].startswith('NR 47 = 12'), 'kiln_started', r.get('claim'))
    if 'next_tx' in r:
        first(lambda e: e[1].startswith('tokio') and e[2]!=boot and 'sys_exit' in e[5] and e[6].startswith('NR 45 =') and not e[6].endswith('-11'), 'next_rx', r['next_tx'])
        ete = first(lambda e: e[1].startswith('tokio') and e[2]!=boot and 'sys_enter' in e[5] and (e[6].startswith('NR 44 ') or e[6].startswith('NR 20 ')), 'event_tx', r.get('next_rx'))
        first(lambda e: e[2]==boot and 'sys_enter' in e[5] and e[6].startswith('NR 20 '), 'resp_tx', r.get('event_tx'))
    # client response: python recvfrom exit after resp
    first(lambda e: e[1]=='python3' and 'sys_exit' in e[5] and e[6].startswith('NR 45 ') and not e[6].endswith('-11'), 'client_rx', r.get('resp_tx'))
    r['t0'] = t0
    rows.append(r)
print("%-13s %7s %6s %6s   (ms since the previous step; n)" % ("step", "p50", "p10", "p90"))
prev = None
for k in keys:
    if prev is not None:
        ds = [ (r[k]-r[prev])*1000 for r in rows if k in r and prev in r]
        if ds:
            ds.sort()
            print("%-13s %7.3f %6.3f %6.3f  n=%d" % (prev+"->"+k if len(prev+k)<12 else k, statistics.median(ds), ds[len(ds)//10], ds[9*len(ds)//10], len(ds)))
    prev = k
tot = sorted((r['client_rx']-r['req'])*1000 for r in rows if 'client_rx' in r and 'req' in r)
print("req->client_rx p50 %.3f" % statistics.median(tot))
ini = sorted((r['next_rx']-r['claim'])*1000 for r in rows if 'next_rx' in r and 'claim' in r)
print("claim->next_rx p50 %.3f" % statistics.median(ini))

#!/usr/bin/python3
"""Bootstrap start phases (bare vs sandbox): exec_done -> ld first open -> last ENOENT -> first clone -> connect -> GET next written."""
import re, sys, statistics
rx = re.compile(r'^\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s+(.*)$')
ev = []
for line in open(sys.argv[1]):
    m = rx.match(line)
    if m:
        comm, pid, tid, cpu, t, name, rest = m.groups()
        ev.append((float(t), comm, int(pid), int(tid), int(cpu), name, rest))
procs = {}
for i, e in enumerate(ev):
    if e[5].startswith('sched:sched_process_exec') and ('bootstrap' in e[6] or 'hello' in e[6]):
        procs[e[2]] = {'exec_done': e[0], 'faults': 0, 'misses': 0, 'oncpu': 0.0, 'runq': 0.0}
state = {}
for e in ev:
    t, comm, pid, tid, cpu, name, rest = e
    p = procs.get(pid)
    if name.startswith('sched:sched_switch'):
        m = re.search(r'prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=.* next_pid=(\d+)', rest)
        if m:
            pp, st, np_ = int(m.group(1)), m.group(2), int(m.group(3))
            if pp in procs and 'connect' not in procs[pp] and t > procs[pp]['exec_done']:
                s = state.pop(pp, None)
                if s: procs[pp]['oncpu'] += t - s
                if st.startswith('R'): state[('rq', pp)] = t
            if np_ in procs and 'connect' not in procs[np_] and t >= procs[np_]['exec_done']:
                state[np_] = t
                q = state.pop(('rq', np_), None)
                if q: procs[np_]['runq'] += t - q
        continue
    if p is None or tid != pid and 'clone' in p: 
        if p is None: continue
    if t < p['exec_done']: continue
    if name.startswith('exceptions:page_fault_user') and 'connect' not in p: p['faults'] += 1
    if 'sys_enter' in name and rest.startswith('NR 257 ') and 'ld_open1' not in p: p['ld_open1'] = t
    if 'sys_exit' in name and rest.startswith('NR 257 ') and rest.endswith('= -2'): p['misses'] += 1; p['last_miss'] = t
    if 'sys_enter' in name and (rest.startswith('NR 435 ') or rest.startswith('NR 56 ')) and 'clone' not in p: p['clone'] = t
    if 'sys_enter' in name and rest.startswith('NR 42 ') and 'connect' not in p:
        p['connect'] = t
        s = state.pop(pid, None)
        if s: p['oncpu'] += t - s
    if 'sys_enter' in name and rest.startswith('NR 20 ') and 'next_tx' not in p: p['next_tx'] = t
rows = list(procs.values())
def col(a, b):
    d = sorted((r[b]-r[a])*1000 for r in rows if a in r and b in r)
    return "%7.3f %7.3f %7.3f n=%d" % (statistics.median(d), d[len(d)//10], d[9*len(d)//10], len(d)) if d else "-"
for a, b in [('exec_done','ld_open1'), ('ld_open1','clone'), ('clone','connect'), ('connect','next_tx'), ('exec_done','connect'), ('exec_done', 'next_tx')]:
    print("%-22s p50/p10/p90 %s" % (a+'->'+b, col(a,b)))
for k in ['faults', 'misses', 'oncpu', 'runq']:
    d = sorted(r[k]*(1000 if k in ('oncpu','runq') else 1) for r in rows)
    print("%-10s p50 %.3f p10 %.3f p90 %.3f" % (k, statistics.median(d), d[len(d)//10], d[9*len(d)//10]))

"""gdb script for scripts/heap-trace: records every jemalloc allocation made while the inferior runs
(size, and the first callers outside the allocator) and forgets it when freed; `dumplive FILE` writes
those still live, largest first. The allocation's address is read at its caller's return address, where
a breakpoint per call site is set once (gdb's FinishBreakpoint does not fire from another breakpoint's
stop handler)."""
import collections, os

import gdb
live = {}
stats = collections.Counter()
SKIP = ('alloc::', 'core::', '__rust', '_rjem', 'std::alloc', '<alloc', 'hashbrown', 'tikv_jemallocator', '<tikv')
def bt():
    out = []
    f = gdb.newest_frame()
    n = 0
    while f is not None and n < 40 and len(out) < 6:
        name = f.name() or '?'
        if not name.startswith(SKIP):
            out.append(name[:150])
        f = f.older(); n += 1
    return tuple(out)
pending = {}  # (thread, return address) -> [(size, trace, old)]
class Ret(gdb.Breakpoint):
    def __init__(self, addr):
        super().__init__('*%d' % addr, internal=True); self.addr = addr
    def stop(self):
        stats['fin'] += 1
        key = (gdb.selected_thread().num, self.addr)
        waiting = pending.get(key)
        if not waiting:
            return False
        size, trace, old = waiting.pop()
        ptr = int(gdb.parse_and_eval('$rax')) & 0xffffffffffffffff
        if old is not None:
            live.pop(old, None)
        live[ptr] = (size, trace)
        return False
rets = {}
def Fin(size, trace, old=None):
    addr = int(gdb.parse_and_eval('*(unsigned long*)$rsp')) & 0xffffffffffffffff
    if addr not in rets:
        rets[addr] = Ret(addr)
    pending.setdefault((gdb.selected_thread().num, addr), []).append((size, trace, old))
class Alloc(gdb.Breakpoint):
    def __init__(self, spec, kind):
        super().__init__(spec, internal=True); self.kind = kind
    def stop(self):
        stats[self.kind] += 1
        rdi = int(gdb.parse_and_eval('$rdi')); rsi = int(gdb.parse_and_eval('$rsi'))
        if self.kind == 'malloc': Fin(rdi, bt())
        elif self.kind == 'calloc': Fin(rdi * rsi, bt())
        elif self.kind == 'realloc': Fin(rsi, bt(), old=rdi)
        else: live.pop(rdi, None)
        return False
Alloc('*_rjem_malloc', 'malloc'); Alloc('*_rjem_mallocx', 'malloc'); Alloc('*_rjem_calloc', 'calloc')
Alloc('*_rjem_rallocx', 'realloc'); Alloc('*_rjem_realloc', 'realloc'); Alloc('*_rjem_sdallocx', 'free')
class Dump(gdb.Command):
    def __init__(self): super().__init__('dumplive', gdb.COMMAND_USER)
    def invoke(self, arg, from_tty):
        total = sum(s for s, _ in live.values())
        with open(arg, 'w') as out:
            out.write('stats %s\n' % dict(stats))
            out.write('live allocations: %d, %d bytes\n' % (len(live), total))
            for ptr, (size, trace) in sorted(live.items(), key=lambda kv: -kv[1][0]):
                out.write('%6d  %s\n' % (size, ' <- '.join(trace)))
Dump()

# Tells scripts/heap-trace that the breakpoints are in.
with open(os.environ['HEAP_TRACE_READY'], 'w') as ready:
    ready.write('ready')

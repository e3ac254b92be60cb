#!/usr/bin/env python3
# usage: walsample.py BUILD MIB (BUILD: main = /work/main, anything else = this worktree) -> runs reopen.mjs's writer with that build into a fresh dir,
# samples the total size of *.wal files every 10 ms until MIB are written, kills the writer,
# prints the distribution of "WAL a kill would replay" (bytes on disk in .wal files).
import os, sys, subprocess, time, shutil
b, mib = sys.argv[1], int(sys.argv[2])
repo = '/work/main' if b == 'main' else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
d = os.path.join(os.environ.get('TMPDIR', '/tmp'), f'walsample-{b}')
shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
p = subprocess.Popen(['node', 'benchmark/reopen.mjs', '--role', 'writer', '--store', 'toondb', '--dir', d,
                      '--value-size', '1000', '--toondb-options', '{}'], cwd=repo, stdout=subprocess.PIPE, text=True)
os.set_blocking(p.stdout.fileno(), False)
target = mib * 1048576 // 1016000
samples = []; last = -1; buf = ''
while True:
    try:
        chunk = p.stdout.read()
    except Exception:
        chunk = None
    if chunk:
        buf += chunk
        lines = buf.split('\n'); buf = lines[-1]
        for l in lines[:-1]:
            if l.strip().isdigit(): last = int(l)
    if last >= target:
        p.kill(); break
    if last >= 0:
        tot = 0
        try:
            for e in os.scandir(d):
                if e.name.endswith('.wal'):
                    try: tot += e.stat().st_size
                    except FileNotFoundError: pass
        except FileNotFoundError: pass
        samples.append(tot)
    time.sleep(0.01)
p.wait()
shutil.rmtree(d, ignore_errors=True)
s = sorted(samples); n = len(s)
q = lambda f: s[min(n - 1, int(f * n))] / 1e6
over = sum(1 for x in s if x > 5.2e6) / n
print(f'WALSAMP build={b} mib={mib} samples={n} p50={q(0.5):.1f}MB p90={q(0.9):.1f}MB p99={q(0.99):.1f}MB max={s[-1]/1e6:.1f}MB share>5.2MB={over*100:.1f}%')

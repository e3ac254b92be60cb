"""Warm reopen of one kill image, two builds alternating (A/B).

  python3 benchmark/open_ab.py engine IMAGE KEY N BASE_OPEN_TIMING NEW_OPEN_TIMING
  python3 benchmark/open_ab.py node IMAGE KEYINDEX N BASE_INDEX_JS NEW_INDEX_JS
  ... [cold]   drop the page cache before each try (root only)

Each try opens a fresh copy of IMAGE (tables hard-linked: an open never
writes them; everything else copied; then `sync`, so the page cache holds
the files clean, as after a kill). `engine` runs examples/open_timing
(open + first read of KEY, e.g. key0001668424951); `node` runs
benchmark/reopen.mjs --role reader with TOONDB_BENCH_ENTRY (KEYINDEX is
the number in the key). With `cold`, the page cache is dropped after the
`sync` (`echo 3 > /proc/sys/vm/drop_caches`), as `reopen.mjs` does for
its cold figures. Prints min / median / max per build. Run it under
`flock /work/bench.lock`.
"""
import json, os, re, shutil, statistics, subprocess, sys, tempfile

mode, img, key, n, base, new = sys.argv[1:7]
cold = sys.argv[7:8] == ['cold']
here = os.path.dirname(os.path.abspath(__file__))
builds = {'base': base, 'new': new}
res = {b: [] for b in builds}
cpu = {b: [] for b in builds}
work = tempfile.mkdtemp(prefix='open-ab-')
copy = os.path.join(work, 'db')
try:
    for i in range(int(n)):
        for b in (['base', 'new'] if i % 2 == 0 else ['new', 'base']):
            shutil.rmtree(copy, ignore_errors=True)
            os.makedirs(copy)
            for name in os.listdir(img):
                (os.link if name.endswith('.sst') else shutil.copy2)(os.path.join(img, name), os.path.join(copy, name))
            subprocess.run(['sync'], check=True)
            if cold:
                with open('/proc/sys/vm/drop_caches', 'w') as f:
                    f.write('3')
            if mode == 'engine':
                out = subprocess.run([builds[b], copy, key], capture_output=True, text=True).stderr
                m = re.search(r'first read: found true at ([\d.]+)(ms|µs|s)', out)
                res[b].append(float(m.group(1)) * {'ms': 1, 'µs': 1e-3, 's': 1e3}[m.group(2)])
                c = re.search(r'open cpu: ([\d.]+)(ms|µs)', out)
                if c:
                    cpu[b].append(float(c.group(1)) * (1 if c.group(2) == 'ms' else 1e-3))
            else:
                env = dict(os.environ, TOONDB_BENCH_ENTRY=builds[b])
                r = subprocess.run(['node', os.path.join(here, 'reopen.mjs'), '--role', 'reader', '--store', 'toondb', '--dir', copy, '--key', key], capture_output=True, text=True, env=env, check=True)
                res[b].append(json.loads(r.stdout)['ms'])
finally:
    shutil.rmtree(work, ignore_errors=True)
for b in builds:
    r = sorted(res[b])
    extra = f"; opening thread CPU median {statistics.median(cpu[b]):.2f} ms" if cpu[b] else ''
    print(f"{b}: open + first read ms min / median / max {r[0]:.2f} / {statistics.median(r):.2f} / {r[-1]:.2f}{extra}; all {[round(x, 1) for x in res[b]]}")

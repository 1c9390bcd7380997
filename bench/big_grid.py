"""Write a G x G float32 grid of the trained homework network to Zarr band by band; report time and peak RSS.

    PYTHONPATH=src python bench/big_grid.py 65536 local:2 /path/g.zarr   # scheduler "none": in-process

The RSS of the whole process tree (client, workers) is sampled every 0.5 s. Delete the store afterwards.
"""
import sys, threading, time
import psutil
import moonxp
from moonxp.engine import cluster, diskgrid

def monitor(stop, peak):
    me = psutil.Process()
    while not stop.is_set():
        procs = [me] + me.children(recursive=True)
        rss = {}
        for p in procs:
            try: rss[p.pid] = p.memory_info().rss
            except psutil.Error: pass
        peak["total"] = max(peak.get("total", 0), sum(rss.values()))
        peak["max_one"] = max(peak.get("max_one", 0), max(rss.values()))
        peak["client"] = max(peak.get("client", 0), rss.get(me.pid, 0))
        time.sleep(0.5)

if __name__ == "__main__":
    size, scheduler, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    X, T, params = moonxp.make_problem(0)
    trained, _ = moonxp.train(params, X, T)
    stop, peak = threading.Event(), {}
    threading.Thread(target=monitor, args=(stop, peak), daemon=True).start()
    with cluster.connect(None if scheduler == "none" else scheduler) as client:
        t = time.perf_counter()
        last = [0]
        def progress(done, total):
            if done - last[0] >= total // 16 or done == total:
                last[0] = done
                print(f"{done}/{total} bands {time.perf_counter() - t:.1f} s, peak tree RSS {peak.get('total', 0) / 2**20:.0f} MiB", flush=True)
        diskgrid.grid_to_disk(trained, path, size, client=client, progress=progress)
        elapsed = time.perf_counter() - t
    stop.set()
    print(f"size {size}: {elapsed:.1f} s, {size * size / elapsed / 1e6:.1f} M points/s; peak RSS: process tree {peak['total'] / 2**20:.0f} MiB, "
          f"largest process {peak['max_one'] / 2**20:.0f} MiB, client {peak['client'] / 2**20:.0f} MiB")

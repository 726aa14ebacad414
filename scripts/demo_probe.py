#!/usr/bin/env python3
"""demo_probe.py: timing helpers for scripts/demo.sh (one process, no curl per poll).

  demo_probe.py alive URL N TIMEOUT          wait until URL/v1/members lists N alive; print ms
  demo_probe.py state URL ID STATE TIMEOUT [SINCE_MS]
        wait until member ID has STATE; print ms (since the wall-clock SINCE_MS if given)
  demo_probe.py spread PUT_URL VALUE KEY WATCH_URL...
        open an SSE watch on every WATCH_URL, PUT VALUE to PUT_URL, and print for
        each watcher the ms from the PUT until its 'set' event for KEY arrived
"""
import json, sys, threading, time, urllib.request


def members(url):
    with urllib.request.urlopen(url + "/v1/members", timeout=2) as r:
        m = json.load(r)
    return m.get("members", m) if isinstance(m, dict) else m


def wait(pred, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if pred():
                return (time.monotonic() - t0) * 1000
        except Exception:
            pass
        time.sleep(0.005)
    return None


def main(argv):
    if argv[0] == "alive":
        url, n, timeout = argv[1], int(argv[2]), float(argv[3])
        ms = wait(lambda: sum(1 for x in members(url) if x.get("state") == "alive") == n, timeout)
    elif argv[0] == "state":
        url, mid, st, timeout = argv[1], argv[2], argv[3], float(argv[4])
        ms = wait(lambda: any(x.get("id") == mid and x.get("state") == st for x in members(url)),
                  timeout)
        if ms is not None and len(argv) > 5:
            ms = time.time() * 1000 - float(argv[5])
    elif argv[0] == "spread":
        put_url, value, key, watches = argv[1], argv[2], argv[3], argv[4:]
        ready, got, start = [], {}, [0.0]
        def watch(url):
            r = urllib.request.urlopen(url + "/v1/watch?prefix=" + key, timeout=10)
            ready.append(url)
            event = None
            for raw in r:
                line = raw.decode().strip()
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "set":
                    if json.loads(line[5:]).get("key") == key:
                        got[url] = (time.monotonic() - start[0]) * 1000
                        return
        threads = [threading.Thread(target=watch, args=(u,), daemon=True) for u in watches]
        for t in threads:
            t.start()
        wait(lambda: len(ready) == len(watches), 5)
        time.sleep(0.2)  # the streams are open on the server side too
        start[0] = time.monotonic()
        req = urllib.request.Request(put_url, data=value.encode(), method="PUT")
        urllib.request.urlopen(req, timeout=5).read()
        for t in threads:
            t.join(5)
        for u in watches:
            print("%s %s" % (u, ("%.1f" % got[u]) if u in got else "never"))
        return 0 if len(got) == len(watches) else 1
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if ms is None:
        return 1
    print("%.0f" % ms)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

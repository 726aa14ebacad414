#!/usr/bin/env python3
"""lockcheck.py: a Jepsen-style safety checker for statemesh locks under real faults.

Clients acquire, renew and release locks with random timing through real
`raftnode` processes (a store behind a line protocol: storage=raft or
storage=redis) while a nemesis SIGKILLs raft leaders, cuts a raft member off
with nftables inside its own network namespace, and kills and restarts
redis-server with and without persistence. Every operation is logged as
invoke, then ok / fail (definitely did not happen) / info (outcome unknown),
with wall-clock times taken on this one machine.

The checker then verifies, per lock name:
  * fences: a grant that completed before another was invoked has the smaller
    fence; no two grants share a fence; a renew returns its grant's fence;
  * leases: a holder holds from the moment its acquire answered ok until the
    earlier of its release (the time it sent it) and the lease end it could
    count on: the invoke time of its last successful acquire/renew + ttl
    (taken before the request left, so never later than the backend's own
    clock started). No two holders' intervals may overlap.
Unknown (info) outcomes never make a client a holder, and never extend a lease.

Raft must show no violation of either kind. Redis must show no fence
violation; its lease overlaps are measured and reported (docs/redis.md).

Usage: lockcheck.py [--tap] [--bench] [--only raft|redis|self]   (TAP by default)
"""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BUILD = os.environ.get("SM_BUILDDIR", ".")
NODE = os.path.join(BUILD, "tests", "integration", "raftnode")
REDIS = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
QUICK = os.environ.get("LOCKCHECK_SECONDS")  # override the per-scenario duration

results = []


def tap(ok, name, detail=""):
    results.append(ok)
    print(("ok" if ok else "not ok") + " %d - %s" % (len(results), name))
    if detail:
        for line in str(detail).splitlines():
            print("# " + line)
    sys.stdout.flush()


def skip(name, why):
    results.append(True)
    print("ok %d - %s # SKIP %s" % (len(results), name, why))
    sys.stdout.flush()


def note(msg):
    print("# " + msg)
    sys.stdout.flush()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# --------------------------------------------------------------------------
# history and checker

class History:
    """Thread-safe op log: one dict per event, in the order they happened."""

    def __init__(self):
        self.ev = []
        self.lock = threading.Lock()

    def add(self, **e):
        with self.lock:
            e["i"] = len(self.ev)
            self.ev.append(e)
        return e

    def dump(self, path):
        with open(path, "w") as f:
            for e in self.ev:
                f.write(json.dumps(e, sort_keys=True) + "\n")


def grants_of(events):
    """Pair invokes with completions; return the grants as dicts with their
    holding interval, plus a list of renews that changed the fence."""
    by_op = {}
    for e in events:
        by_op.setdefault((e["client"], e["op"]), []).append(e)
    grants = {}  # token -> grant
    bad_renews = []
    ops = sorted(by_op.values(), key=lambda es: es[0]["time"])
    for es in ops:
        inv = next((x for x in es if x["type"] == "invoke"), None)
        end = next((x for x in es if x["type"] != "invoke"), None)
        if not inv or not end or end["type"] != "ok":
            continue
        if inv["f"] == "acquire":
            g = grants.get(end["token"])
            if g is None:
                grants[end["token"]] = {
                    "lock": inv["lock"], "token": end["token"], "fence": end["fence"],
                    "client": inv["client"], "invoke": inv["time"], "ok": end["time"],
                    "lease_end": inv["time"] + inv["ttl"] / 1000.0, "release": None}
        elif inv["f"] == "renew":
            g = grants.get(inv["token"])
            if g is None:
                continue
            if end["fence"] != g["fence"]:
                bad_renews.append((g, end))
            g["lease_end"] = max(g["lease_end"], inv["time"] + inv["ttl"] / 1000.0)
    # a release ends the interval when it was sent, whatever its outcome
    for es in ops:
        inv = next((x for x in es if x["type"] == "invoke"), None)
        if inv and inv["f"] == "release" and inv["token"] in grants:
            g = grants[inv["token"]]
            if g["release"] is None or inv["time"] < g["release"]:
                g["release"] = inv["time"]
    for g in grants.values():
        g["end"] = g["lease_end"] if g["release"] is None else min(g["lease_end"], g["release"])
    return list(grants.values()), bad_renews


def check(events):
    """Return a summary dict: grants, fence violations, lease overlaps."""
    grants, bad_renews = grants_of(events)
    fence_bad, overlaps = [], []
    by_lock = {}
    for g in grants:
        by_lock.setdefault(g["lock"], []).append(g)
    for name, gs in by_lock.items():
        # fences: real-time order of grant operations must match fence order
        gs.sort(key=lambda g: g["ok"])
        seen = {}
        for g in gs:
            if g["fence"] in seen:
                fence_bad.append(("duplicate fence", seen[g["fence"]], g))
            seen[g["fence"]] = g
        by_invoke = sorted(gs, key=lambda g: g["invoke"])
        max_before = None  # the grant with the largest fence completed so far
        j = 0
        done = sorted(gs, key=lambda g: g["ok"])
        for g in by_invoke:
            while j < len(done) and done[j]["ok"] < g["invoke"]:
                if max_before is None or done[j]["fence"] > max_before["fence"]:
                    max_before = done[j]
                j += 1
            if max_before is not None and g["fence"] <= max_before["fence"]:
                fence_bad.append(("fence went back", max_before, g))
        # leases: sweep holding intervals by start
        iv = sorted(gs, key=lambda g: g["ok"])
        for a_i in range(len(iv)):
            a = iv[a_i]
            for b in iv[a_i + 1:]:
                if b["ok"] >= a["end"]:
                    break
                ov = min(a["end"], b["end"]) - b["ok"]
                if ov > 0:
                    overlaps.append((ov, a, b))
    for g, end in bad_renews:
        fence_bad.append(("renew changed the fence", g, end))
    n_ops = sum(1 for e in events if e["type"] == "invoke")
    kinds = {}
    for e in events:
        if e["type"] != "invoke":
            kinds[e["type"]] = kinds.get(e["type"], 0) + 1
    return {"grants": len(grants), "ops": n_ops, "outcomes": kinds, "fence_violations": fence_bad,
            "overlaps": sorted(overlaps, key=lambda o: -o[0]),
            "max_overlap_ms": max([o[0] for o in overlaps] or [0]) * 1000.0}


def describe(res, limit=3):
    out = []
    for kind, a, b in res["fence_violations"][:limit]:
        out.append("%s: %s" % (kind, json.dumps([a, b], sort_keys=True, default=str)))
    for ov, a, b in res["overlaps"][:limit]:
        out.append("overlap %.1f ms: %s fence %s [%.3f, %.3f] and %s fence %s [%.3f, %.3f]" % (
            ov * 1000, a["client"], a["fence"], a["ok"], a["end"], b["client"], b["fence"],
            b["ok"], b["end"]))
    return "\n".join(out)


# --------------------------------------------------------------------------
# line-protocol client of a raftnode

class Conn:
    def __init__(self, host, port, timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.rf = self.sock.makefile("r")
        self.wf = self.sock.makefile("w")
        self.n = 0

    def cmd(self, line, timeout=10):
        self.n += 1
        tag = "q%d" % self.n
        self.sock.settimeout(timeout)
        self.wf.write("%s %s\n" % (tag, line))
        self.wf.flush()
        while True:
            resp = self.rf.readline()
            if not resp:
                raise IOError("connection closed")
            parts = resp.strip().split(" ", 2)
            if parts[0] != tag:
                continue
            if parts[1] == "err":
                rest = (parts[2] + " ").split(" ", 1)
                return ["err", rest[0], rest[1].strip()]
            return ["ok"] + (parts[2].split() if len(parts) > 2 else [])

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# outcome of an error reply: "fail" when the operation certainly did not take
# effect, "info" when it may have
def classify(err, msg):
    err = err[4:] if err.startswith("SM_E") else err
    if err in ("LOCKED", "NOTOWNER", "INVAL"):
        return "fail"
    if err == "UNAVAILABLE" and "restarted or lost its data" in msg:
        return "fail"  # the redis lock script ran and refused
    return "info"


class Client(threading.Thread):
    """One lock user: acquire a random lock, hold it a while (maybe renewing,
    maybe letting it lapse), release it, pause, again."""

    def __init__(self, cid, hist, endpoints, locks, ttl_range, stop, seed, fast=False):
        super().__init__(daemon=True)
        self.fast = fast  # bench: release at once, no pauses (grants/s, not hold patterns)
        self.cid = "c%d" % cid
        self.hist = hist
        self.endpoints = endpoints  # callables returning (host, port) to try
        self.locks = locks
        self.ttl_range = ttl_range
        self.stop = stop
        self.rng = random.Random(seed)
        self.conn = None
        self.nop = 0
        self.grants = 0

    def connect(self):
        while not self.stop.is_set():
            ep = self.rng.choice(self.endpoints)()
            if ep:
                try:
                    self.conn = Conn(ep[0], ep[1], timeout=2)
                    return True
                except OSError:
                    pass
            time.sleep(0.05)
        return False

    def call(self, f, line, **fields):
        self.nop += 1
        op = self.nop
        self.hist.add(client=self.cid, op=op, type="invoke", f=f, time=time.time(), **fields)
        try:
            if not self.conn and not self.connect():
                raise IOError("stopped")
            r = self.conn.cmd(line, timeout=8)
        except (IOError, OSError) as e:
            if self.conn:
                self.conn.close()
            self.conn = None
            self.hist.add(client=self.cid, op=op, type="info", f=f, time=time.time(),
                          err="IO", msg=str(e))
            return None
        t = time.time()
        if r[0] == "ok":
            e = self.hist.add(client=self.cid, op=op, type="ok", f=f, time=t,
                              token=r[1], fence=int(r[2]))
            return e
        self.hist.add(client=self.cid, op=op, type=classify(r[1], r[2]), f=f, time=t, err=r[1],
                      msg=r[2][:160])
        return None

    def sleep(self, s):
        self.stop.wait(s)

    def run(self):
        self.connect()
        while not self.stop.is_set():
            name = self.rng.choice(self.locks)
            ttl = self.rng.randint(*self.ttl_range)
            t0 = time.time()
            g = self.call("acquire", "lock %s %d" % (name, ttl), lock=name, ttl=ttl)
            if not g:
                self.sleep(self.rng.uniform(0.001, 0.01) if self.fast else
                           self.rng.uniform(0.01, 0.15))
                continue
            self.grants += 1
            token, deadline = g["token"], t0 + ttl / 1000.0
            if self.fast:
                self.call("release", "unlock %s %s" % (name, token), lock=name, token=token)
                continue
            plan = self.rng.random()
            if plan < 0.1:  # walk away: the lease lapses
                self.sleep(ttl / 1000.0 + 0.05)
                continue
            renews = self.rng.randint(0, 2) if plan < 0.5 else 0
            for _ in range(renews):
                self.sleep(self.rng.uniform(0.1, 0.4) * ttl / 1000.0)
                t1 = time.time()
                if t1 > deadline - 0.05:
                    break  # too late to count on a renew: the lease is as good as gone
                r = self.call("renew", "renew %s %s %d" % (name, token, ttl), lock=name,
                              token=token, ttl=ttl)
                if r:
                    deadline = max(deadline, t1 + ttl / 1000.0)
            self.sleep(self.rng.uniform(0, 0.5) * ttl / 1000.0)
            self.call("release", "unlock %s %s" % (name, token), lock=name, token=token)
            self.sleep(self.rng.uniform(0, 0.05))
        if self.conn:
            self.conn.close()


# --------------------------------------------------------------------------
# processes

def sh(*args, check=True):
    p = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if check and p.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(args), p.stderr.decode().strip()))
    return p.returncode


class Proc:
    """A raftnode process (optionally inside a network namespace)."""

    def __init__(self, name, args, logpath, netns=None):
        self.name, self.args, self.logpath, self.netns = name, args, logpath, netns
        self.proc = None

    def start(self, timeout=20):
        log = open(self.logpath, "a")
        argv = (["ip", "netns", "exec", self.netns] if self.netns else []) + self.args
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log)
        log.close()
        line = self.proc.stdout.readline().decode().strip()
        if line != "ready":
            self.proc.wait()
            with open(self.logpath) as f:
                raise RuntimeError("%s did not start: %s" % (self.name, f.read()[-500:]))

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait()
        self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class Netns:
    """A bridge in this namespace and one namespace per raft node, each with a
    veth leg on the bridge: 10.213.<k>.<i>/24, this side .254."""

    def __init__(self, n):
        tag = "%x" % (os.getpid() & 0xfffff)
        self.k = 1 + os.getpid() % 250
        self.br = "lkb" + tag
        self.ns = ["lk%sn%d" % (tag, i) for i in range(1, n + 1)]
        self.legs = ["lk%sv%d" % (tag, i) for i in range(1, n + 1)]
        self.ok = False
        sh("ip", "link", "add", self.br, "type", "bridge")
        sh("ip", "addr", "add", "10.213.%d.254/24" % self.k, "dev", self.br)
        sh("ip", "link", "set", self.br, "up")
        for i, (ns, leg) in enumerate(zip(self.ns, self.legs), 1):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", leg, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", leg, "master", self.br)
            sh("ip", "link", "set", leg, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", self.ip(i) + "/24", "dev", "eth0")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        self.ok = True

    def ip(self, i):
        return "10.213.%d.%d" % (self.k, i)

    def partition(self, i, ctl_port):
        """Drop every packet of node i except its control connection to us."""
        rules = ("table inet lkpart {\n"
                 " chain in {\n  type filter hook input priority 0; policy accept;\n"
                 "  tcp dport %d accept\n  ip saddr 10.213.%d.0/24 drop\n }\n"
                 " chain out {\n  type filter hook output priority 0; policy accept;\n"
                 "  tcp sport %d accept\n  ip daddr 10.213.%d.0/24 drop\n }\n}\n"
                 % (ctl_port, self.k, ctl_port, self.k))
        p = subprocess.run(["ip", "netns", "exec", self.ns[i - 1], "nft", "-f", "-"],
                           input=rules.encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise RuntimeError("nft: " + p.stderr.decode())

    def heal(self, i):
        sh("ip", "netns", "exec", self.ns[i - 1], "nft", "delete", "table", "inet", "lkpart",
           check=False)

    def close(self):
        for ns in self.ns:
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", self.br, check=False)


def netns_usable():
    if os.environ.get("LOCKCHECK_NETNS") == "off":
        return "LOCKCHECK_NETNS=off"
    if os.geteuid() != 0:
        return "not root: network namespaces need CAP_NET_ADMIN"
    for tool in ("ip", "nft"):
        if not shutil.which(tool):
            return "%s not installed" % tool
    return None


# --------------------------------------------------------------------------
# raft scenario

class RaftCluster:
    def __init__(self, d, n=3, netns=None):
        self.dir, self.netns = d, netns
        certs = os.path.join(d, "certs")
        os.makedirs(certs)
        subprocess.check_call([NODE, "gencerts", certs] + ["n%d" % i for i in range(1, n + 1)])
        self.ids = list(range(1, n + 1))
        self.host = {i: (netns.ip(i) if netns else "127.0.0.1") for i in self.ids}
        self.rport = {i: free_port() for i in self.ids}
        self.cport = {i: free_port() for i in self.ids}
        peers = ",".join("%d=%s:%d" % (i, self.host[i], self.rport[i]) for i in self.ids)
        self.procs = {}
        for i in self.ids:
            args = [NODE, "ctl=%s:%d" % (self.host[i], self.cport[i]), "storage=raft",
                    "node_id=n%d" % i, "raft.id=%d" % i,
                    "raft.bind=%s:%d" % (self.host[i], self.rport[i]), "raft.peers=" + peers,
                    "raft.data_dir=" + os.path.join(d, "d%d" % i),
                    "raft.election_timeout=400ms", "raft.heartbeat=50ms", "raft.timeout=3s",
                    "raft.ca=" + os.path.join(certs, "ca"),
                    "raft.cert=%s/n%d.cert" % (certs, i), "raft.key=%s/n%d.key" % (certs, i),
                    "raft.snapshot_threshold=128", "raft.snapshot_trailing=32"]
            self.procs[i] = Proc("n%d" % i, args, os.path.join(d, "n%d.log" % i),
                                 netns.ns[i - 1] if netns else None)

    def start(self):
        for p in self.procs.values():
            p.start()

    def endpoint(self, i):
        return lambda: (self.host[i], self.cport[i]) if self.procs[i].alive() else None

    def leader(self, timeout=10):
        end = time.time() + timeout
        while time.time() < end:
            for i in self.ids:
                if not self.procs[i].alive():
                    continue
                try:
                    c = Conn(self.host[i], self.cport[i], timeout=2)
                    r = c.cmd("status", timeout=2)
                    c.close()
                    if r[0] == "ok" and r[2] == "leader":
                        return i
                except (IOError, OSError):
                    pass
            time.sleep(0.05)
        return None

    def stop(self):
        for p in self.procs.values():
            p.kill(signal.SIGTERM)


BENCH = "--bench" in sys.argv


def run_clients(hist, endpoints, n, locks, ttl_range, seconds, nemesis, seed):
    stop = threading.Event()
    if BENCH:  # throughput: more names, release at once
        locks = ["k%d" % i for i in range(8)]
    cl = [Client(i, hist, endpoints, locks, ttl_range, stop, seed * 100 + i, BENCH)
          for i in range(n)]
    for c in cl:
        c.start()
    t_end = time.time() + seconds
    faults = nemesis(t_end)
    stop.set()
    for c in cl:
        c.join(15)
    return faults


def raft_scenario(d, seconds, seed, use_netns):
    rng = random.Random(seed)
    ns = Netns(3) if use_netns else None
    cl = None
    try:
        cl = RaftCluster(d, netns=ns)
        cl.start()
        if not cl.leader(20):
            raise RuntimeError("no raft leader")
        hist = History()
        counts = {"leader_kills": 0, "partitions": 0}

        def nemesis(t_end):
            step = 0
            while time.time() < t_end - 3:
                time.sleep(rng.uniform(1.0, 2.0))
                lead = cl.leader(8)
                if ns and step % 2 == 1:
                    # cut off a member: the leader half of the time, else a follower
                    victim = lead if (lead and rng.random() < 0.5) else rng.choice(cl.ids)
                    hist.add(client="nemesis", op=step, type="info", f="partition", time=time.time(),
                             node=victim)
                    ns.partition(victim, cl.cport[victim])
                    counts["partitions"] += 1
                    time.sleep(rng.uniform(1.5, 3.0))
                    ns.heal(victim)
                    hist.add(client="nemesis", op=step, type="info", f="heal", time=time.time(),
                             node=victim)
                elif lead:
                    hist.add(client="nemesis", op=step, type="info", f="kill", time=time.time(),
                             node=lead)
                    cl.procs[lead].kill()
                    counts["leader_kills"] += 1
                    time.sleep(rng.uniform(0.5, 1.5))
                    cl.procs[lead].start()
                    hist.add(client="nemesis", op=step, type="info", f="restart",
                             time=time.time(), node=lead)
                step += 1
            time.sleep(max(0, t_end - time.time()))
            return counts

        eps = [cl.endpoint(i) for i in cl.ids]
        run_clients(hist, eps, 6, ["a", "b"], (300, 1200), seconds, nemesis, seed)
        return hist, counts
    finally:
        if cl:
            cl.stop()
        if ns:
            ns.close()


# --------------------------------------------------------------------------
# redis scenario

class Redis:
    def __init__(self, d, persist):
        self.dir, self.port = d, free_port()
        os.makedirs(d, exist_ok=True)
        self.args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", d,
                     "--save", "", "--protected-mode", "no", "--daemonize", "no",
                     "--logfile", os.path.join(d, "redis.log")]
        self.args += (["--appendonly", "yes", "--appendfsync", "everysec"] if persist
                      else ["--appendonly", "no"])
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        end = time.time() + 10
        while time.time() < end:
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=1)
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    s.close()
                    return
                s.close()
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def redis_scenario(d, seconds, seed, persist, recovery):
    rng = random.Random(seed)
    rs = Redis(os.path.join(d, "redis"), persist)
    rs.start()
    procs = []
    try:
        for i in range(2):
            cport = free_port()
            args = [NODE, "ctl=127.0.0.1:%d" % cport, "storage=redis", "node_id=r%d" % i,
                    "redis.addr=127.0.0.1:%d" % rs.port, "redis.prefix=lc:",
                    "redis.reconnect_min=20ms", "redis.reconnect_max=200ms",
                    "redis.command_timeout=2s", "redis.lock_recovery=" + recovery]
            p = Proc("r%d" % i, args, os.path.join(d, "r%d.log" % i))
            p.start()
            procs.append((p, cport))
        hist = History()
        counts = {"kills": 0}

        def nemesis(t_end):
            while time.time() < t_end - 2:
                time.sleep(rng.uniform(1.5, 3.0))
                hist.add(client="nemesis", op=counts["kills"], type="info", f="kill",
                         time=time.time(), node="redis")
                rs.kill()
                counts["kills"] += 1
                time.sleep(rng.uniform(0.1, 0.5))
                rs.start()
                hist.add(client="nemesis", op=counts["kills"], type="info",
                         f="restart", time=time.time(), node="redis")
            time.sleep(max(0, t_end - time.time()))
            return counts

        eps = [(lambda c=c: ("127.0.0.1", c)) for _, c in procs]
        run_clients(hist, eps, 6, ["a", "b"], (300, 1200), seconds, nemesis, seed)
        return hist, counts
    finally:
        for p, _ in procs:
            p.kill(signal.SIGTERM)
        rs.kill()


# --------------------------------------------------------------------------
# self-test: the checker must catch planted violations

def planted():
    def op(h, c, n, f, t0, t1, outcome="ok", **kw):
        inv = {k: v for k, v in kw.items() if k in ("lock", "ttl", "token")}
        h.add(client=c, op=n, type="invoke", f=f, time=t0, **inv)
        out = {k: v for k, v in kw.items() if k in ("token", "fence")}
        h.add(client=c, op=n, type=outcome, f=f, time=t1, **out)

    cases = []
    # clean: A holds [0.1, 1.0], released; B granted at 1.2 with a larger fence
    h = History()
    op(h, "A", 1, "acquire", 0.0, 0.1, lock="L", ttl=5000, token="ta", fence=10)
    op(h, "A", 2, "release", 1.0, 1.1, lock="L", token="ta", fence=10)
    op(h, "B", 1, "acquire", 1.1, 1.2, lock="L", ttl=5000, token="tb", fence=11)
    cases.append(("clean history", h, 0, 0))
    # fence goes back
    h = History()
    op(h, "A", 1, "acquire", 0.0, 0.1, lock="L", ttl=500, token="ta", fence=10)
    op(h, "B", 1, "acquire", 0.7, 0.8, lock="L", ttl=500, token="tb", fence=9)
    cases.append(("fence that goes back", h, 1, 0))
    # overlap: B granted while A's lease (invoke 0 + 1 s) still runs, A never released
    h = History()
    op(h, "A", 1, "acquire", 0.0, 0.1, lock="L", ttl=1000, token="ta", fence=10)
    op(h, "B", 1, "acquire", 0.5, 0.6, lock="L", ttl=1000, token="tb", fence=11)
    cases.append(("overlapping leases", h, 0, 1))
    # overlap through a renew (lease extended to 0.9 + 1 s), and a renew that changed the fence
    h = History()
    op(h, "A", 1, "acquire", 0.0, 0.1, lock="L", ttl=1000, token="ta", fence=10)
    op(h, "A", 2, "renew", 0.9, 0.95, lock="L", ttl=1000, token="ta", fence=12)
    op(h, "B", 1, "acquire", 1.2, 1.3, lock="L", ttl=1000, token="tb", fence=13)
    cases.append(("overlap after a renew, renew changing the fence", h, 1, 1))
    # an unknown (info) renew does not extend the lease: no overlap
    h = History()
    op(h, "A", 1, "acquire", 0.0, 0.1, lock="L", ttl=1000, token="ta", fence=10)
    op(h, "A", 2, "renew", 0.9, 3.0, outcome="info", lock="L", ttl=1000, token="ta")
    op(h, "B", 1, "acquire", 1.05, 1.1, lock="L", ttl=1000, token="tb", fence=13)
    cases.append(("an unknown renew extends nothing", h, 0, 0))
    # duplicate fence on two grants
    h = History()
    op(h, "A", 1, "acquire", 0.0, 0.1, lock="L", ttl=100, token="ta", fence=10)
    op(h, "B", 1, "acquire", 0.3, 0.4, lock="L", ttl=100, token="tb", fence=10)
    cases.append(("two grants sharing a fence", h, 2, 0))  # duplicate + not increasing
    return cases


def self_test():
    for name, h, want_f, want_o in planted():
        r = check(h.ev)
        got_f, got_o = len(r["fence_violations"]), len(r["overlaps"])
        tap(got_f == want_f and got_o == want_o,
            "checker self-test: %s (%d fence, %d overlap violations found)" % (name, got_f, got_o),
            "" if got_f == want_f and got_o == want_o else describe(r))


def mutate_and_check(name, hist):
    """Plant a violation in a real history: the checker must see it."""
    ev = [dict(e) for e in hist.ev]
    oks = [e for e in ev if e["type"] == "ok" and e["f"] == "acquire"]
    if len(oks) < 2:
        tap(False, "%s: too few grants to plant a violation" % name)
        return
    invokes = {(x["client"], x["op"]): x for x in ev if x["type"] == "invoke"}
    by_lock = {}
    for e in oks:
        by_lock.setdefault(invokes[(e["client"], e["op"])]["lock"], []).append(e)
    seq = max(by_lock.values(), key=len)
    seq.sort(key=lambda e: e["time"])
    last = seq[-1]
    last["fence"] = seq[0]["fence"]  # the newest grant reuses the oldest fence
    r1 = check(ev)
    # and one holder's grant moved back in time into its predecessor's lease
    ev2 = [dict(e) for e in hist.ev]
    r0 = check(ev2)
    gs = sorted(grants_of(ev2)[0], key=lambda g: g["ok"])
    planted_ov = False
    invokes2 = {(x["client"], x["op"]): x for x in ev2 if x["type"] == "invoke"}
    # a holder with a real interval, and a later grant of the same lock moved into it
    for i, a in enumerate(gs):
        later = [g for g in gs[i + 1:] if g["lock"] == a["lock"]]
        if a["end"] - a["ok"] < 0.02 or not later:
            continue
        b = later[0]
        for e in ev2:
            if e["client"] == b["client"] and e.get("token") == b["token"] and \
                    e["type"] == "ok" and e["f"] == "acquire":
                invokes2[(e["client"], e["op"])]["time"] = a["ok"] + 0.005
                e["time"] = a["ok"] + 0.01
                planted_ov = True
        break
    r2 = check(ev2)
    tap(len(r1["fence_violations"]) > 0 and planted_ov and
        len(r2["overlaps"]) > len(r0["overlaps"]),
        "%s: the checker catches violations planted in the real history "
        "(%d fence, %d overlap)" % (name, len(r1["fence_violations"]),
                                    len(r2["overlaps"]) - len(r0["overlaps"])))


# --------------------------------------------------------------------------

def summary_line(name, r, counts, seconds):
    grants_s = r["grants"] / seconds if seconds else 0
    return json.dumps({"scenario": name, "grants": r["grants"], "ops": r["ops"],
                       "outcomes": r["outcomes"], "fence_violations": len(r["fence_violations"]),
                       "overlaps": len(r["overlaps"]), "max_overlap_ms": round(r["max_overlap_ms"], 1),
                       "faults": counts, "grants_per_s": round(grants_s, 1)}, sort_keys=True)


def grant_latencies(hist):
    by = {}
    for e in hist.ev:
        if e.get("f") == "acquire":
            by.setdefault((e["client"], e["op"]), []).append(e)
    lat = []
    for es in by.values():
        inv = next((x for x in es if x["type"] == "invoke"), None)
        ok = next((x for x in es if x["type"] == "ok"), None)
        if inv and ok:
            lat.append((ok["time"] - inv["time"]) * 1000.0)
    lat.sort()
    return lat


def pct(v, p):
    if not v:
        return 0.0
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))]


def main():
    args = sys.argv[1:]
    only = args[args.index("--only") + 1] if "--only" in args else None
    bench = "--bench" in args
    # a real disk for libraft (not tmpfs): the build dir; absolute, as redis chdirs
    base = os.path.abspath(tempfile.mkdtemp(prefix="lockcheck.",
                                            dir=BUILD if os.access(BUILD, os.W_OK) else None))
    t0 = time.time()
    secs = float(QUICK) if QUICK else 20.0
    seed = int(os.environ.get("LOCKCHECK_SEED", str(int(time.time()) % 100000)))
    scenarios = []  # (name, kind, fn)
    why_no_ns = netns_usable()
    if only in (None, "raft"):
        if why_no_ns:
            scenarios.append(("raft: leader SIGKILLs", "raft",
                              lambda d: raft_scenario(d, secs, seed, False)))
        else:
            scenarios.append(("raft: leader SIGKILLs and nftables partitions in netns", "raft",
                              lambda d: raft_scenario(d, secs, seed, True)))
    if only in (None, "redis"):
        if REDIS:
            for name, persist, rec in (("redis: restarts without persistence", False, "wait"),
                                       ("redis: restarts with AOF (everysec)", True, "wait"),
                                       ("redis: restarts without persistence, "
                                        "lock_recovery=off", False, "off")):
                scenarios.append((name, "redis",
                                  lambda d, p=persist, r=rec: redis_scenario(d, secs * 0.6, seed,
                                                                             p, r)))
    n_tests = 0
    if not bench:
        n_tests = (6 if only in (None, "self") else 0)
        n_tests += sum(3 if k == "raft" else 2 for _, k, _ in scenarios)
        if only in (None, "raft") and why_no_ns:
            n_tests += 1
        if only in (None, "redis") and not REDIS:
            n_tests += 1
        print("1..%d" % n_tests)
        note("seed %d (LOCKCHECK_SEED=%d to replay the client and nemesis choices)" % (seed, seed))
        if only in (None, "self"):
            self_test()
        if only in (None, "raft") and why_no_ns:
            skip("raft: a member cut off by nftables in its own network namespace", why_no_ns)
        if only in (None, "redis") and not REDIS:
            skip("redis scenarios", "redis-server not found")
    failed = False
    for i, (name, kind, fn) in enumerate(scenarios):
        d = os.path.join(base, "s%d" % i)
        os.makedirs(d)
        ts = time.time()
        try:
            hist, counts = fn(d)
        except Exception as e:  # setup failure: report, keep the dir
            if bench:
                raise
            tap(False, name + ": scenario ran", repr(e))
            tap(False, name + ": (not checked)")
            if kind == "raft":
                tap(False, name + ": (not checked)")
            failed = True
            continue
        took = time.time() - ts
        hist.dump(os.path.join(d, "history.jsonl"))
        r = check(hist.ev)
        lat = grant_latencies(hist)
        if bench:
            b = "raft" if kind == "raft" else ("redis_aof" if "AOF" in name else
                                                ("redis_norecovery" if "off" in name else "redis"))
            for metric, value, unit in (("%s_grants_per_s" % b, r["grants"] / took, "grants/s"),
                                        ("%s_grant_ms_p50" % b, pct(lat, 50), "ms"),
                                        ("%s_grant_ms_p99" % b, pct(lat, 99), "ms"),
                                        ("%s_overlaps" % b, len(r["overlaps"]), "count"),
                                        ("%s_max_overlap_ms" % b, r["max_overlap_ms"], "ms"),
                                        ("%s_fence_violations" % b, len(r["fence_violations"]),
                                         "count")) + tuple(
                                            ("%s_%s" % (b, k), v, "count")
                                            for k, v in sorted(counts.items())):
                print(json.dumps({"bench": "locks", "metric": metric,
                                  "value": round(value, 2), "unit": unit}))
            sys.stdout.flush()
            failed |= bool(r["fence_violations"]) or (kind == "raft" and bool(r["overlaps"]))
            if r["fence_violations"] or (kind == "raft" and r["overlaps"]):
                sys.stderr.write("bench/locks: %s: %s\n" % (name, describe(r)))
            continue
        note(summary_line(name, r, counts, took))
        ok_f = not r["fence_violations"] and r["grants"] >= 10
        tap(ok_f, "%s: %d grants, fences strictly increase in grant order" % (name, r["grants"]),
            describe(r) if not ok_f else "")
        if kind == "raft":
            ok_o = not r["overlaps"]
            faults_ok = counts["leader_kills"] >= 2 and (why_no_ns or counts["partitions"] >= 1)
            tap(ok_o and faults_ok, "%s: no two holders' leases overlap (%d leader kills, "
                "%d partitions)" % (name, counts["leader_kills"], counts["partitions"]),
                describe(r) if not ok_o else ("" if faults_ok else "too few faults injected"))
            mutate_and_check(name, hist)
            failed |= not (ok_f and ok_o and faults_ok)
        else:
            # a documented weakness: measured and reported, not a failure
            tap(counts["kills"] >= 2,
                "%s: %d kills; lease overlaps measured: %d (longest %.1f ms)" % (
                    name, counts["kills"], len(r["overlaps"]), r["max_overlap_ms"]),
                describe(r, 2) if r["overlaps"] else "")
            failed |= not ok_f
    if not bench:
        note("%d tests in %.1fs; histories in %s" % (len(results), time.time() - t0, base))
    if all(results) and not failed:
        shutil.rmtree(base, ignore_errors=True)
    elif not bench:
        note("kept " + base)
    return 0 if all(results) and not failed else 1


if __name__ == "__main__":
    sys.exit(main())

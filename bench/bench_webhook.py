"""Webhook intake benchmark: signed Segment events POSTed to a real gunicorn on loopback.

Starts ``gunicorn 'jankycron.web:create_app()'`` (the Procfile's web line: sync workers,
``--workers``) against Redis, then runs ``--clients`` load-generator processes, each a closed
loop of signed POSTs over its own connection (requests are built and signed before the clock
starts, so the generator spends its CPU on HTTP only). Every 200 counts as accepted; at the end
the events in the Redis stream are summed and must equal the accepted ones ("durably": the
answer came after XADD). Prints requests/s, events/s and p50/p99/max latency per request.

Both run on the same machine, so the generator takes CPU from the server: the figures are a
floor. Run it from the project root (Redis db 12 by default; only the stream key is deleted):

    .venv/bin/python bench/bench_webhook.py --batch 1 --seconds 10
    .venv/bin/python bench/bench_webhook.py --batch 50 --seconds 10
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from jankycron.sources.segment import STREAM  # noqa: E402

SECRET = "bench-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def event(i: int) -> dict:
    return {"type": "track", "event": "Order Completed", "messageId": str(uuid.uuid4()),
            "anonymousId": f"anon-{i % 997}", "userId": f"user-{i % 331}",
            "receivedAt": "2026-11-25T10:00:00.250Z", "sentAt": "2026-11-25T10:00:00.100Z",
            "timestamp": "2026-11-25T10:00:00.050Z", "originalTimestamp": "2026-11-25T09:59:59Z",
            "properties": {"order_id": f"o-{i}", "total": 12.5 + i, "currency": "EUR"},
            "context": {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
                        "library": {"name": "analytics.js", "version": "4.1.0"},
                        "page": {"url": "https://bank.example/pay", "path": "/pay"}}}


def client(port: int, batch: int, seconds: float, start_at: float, out: mp.Queue) -> None:
    bodies = []
    for k in range(64):
        payload = event(k) if batch == 1 else [event(k * batch + j) for j in range(batch)]
        body = json.dumps(payload).encode()
        bodies.append((body, hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies, ok, failed = [], 0, 0
    while time.time() < start_at:
        time.sleep(0.001)
    end, k = start_at + seconds, 0
    while time.time() < end:
        body, sig = bodies[k % len(bodies)]
        k += 1
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/webhooks/segment", body=body, headers={
                "Content-Type": "application/json", "X-Signature": sig})
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException):
            conn.close()
            status = 0
        latencies.append(time.perf_counter() - t0)
        if status == 200:
            ok += 1
        else:
            failed += 1
    out.put((ok, failed, latencies))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=1, help="events per request (1: single events)")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--clients", type=int, default=4, help="concurrent connections")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    p.add_argument("--threads", type=int, default=1,
                   help="threads per worker (>1: gunicorn's gthread worker, with keep-alive)")
    p.add_argument("--access-log", action="store_true",
                   help="gunicorn writes an access log line per request (the Procfile does)")
    p.add_argument("--redis", default=os.environ.get("JANKYCRON_TEST_SEGMENT_REDIS",
                                                     "redis://127.0.0.1:6379/12"))
    args = p.parse_args()

    r = redis.Redis.from_url(args.redis)
    r.delete(STREAM)
    port = free_port()
    env = {**os.environ, "JANKYCRON_SEGMENT_SECRET": SECRET,
           "JANKYCRON_WEBHOOK_REDIS_URL": args.redis, "JANKYCRON_STATE_URL": "sqlite://"}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers",
         str(args.workers), "--threads", str(args.threads), "jankycron.web:create_app()",
         *(["--access-logfile", "-"] if args.access_log else [])], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if time.monotonic() > deadline:
                raise SystemExit("gunicorn did not start")
            time.sleep(0.1)
        time.sleep(1)  # every worker booted
        out: mp.Queue = mp.Queue()
        start_at = time.time() + 1.0
        procs = [mp.Process(target=client, args=(port, args.batch, args.seconds, start_at, out))
                 for _ in range(args.clients)]
        for proc in procs:
            proc.start()
        results = [out.get(timeout=args.seconds + 60) for _ in procs]
        for proc in procs:
            proc.join()
    finally:
        server.terminate()
        server.wait(30)
    ok = sum(x[0] for x in results)
    failed = sum(x[1] for x in results)
    lat = sorted(v for x in results for v in x[2])
    stored = sum(int(f[b"events"]) for _, f in r.xrange(STREAM))
    r.delete(STREAM)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000

    print(f"gunicorn --workers {args.workers} --threads {args.threads}"
          f"{' --access-logfile -' if args.access_log else ''}, {args.clients} clients, "
          f"{args.batch} event(s) per request, {args.seconds:.0f} s")
    print(f"  requests: {ok} accepted, {failed} failed; {ok / args.seconds:,.0f} requests/s")
    print(f"  events accepted durably: {ok * args.batch} ({stored} in the stream); "
          f"{ok * args.batch / args.seconds:,.0f} events/s")
    print(f"  latency per request: p50 {pct(0.50):.1f} ms, p99 {pct(0.99):.1f} ms, "
          f"max {lat[-1] * 1000:.1f} ms")
    if stored != ok * args.batch or failed:
        raise SystemExit("error: accepted events and stored events differ, or requests failed")


if __name__ == "__main__":
    main()

"""HTTP load on a running Serve app: many concurrent status and search requests while a job runs.

    python -m benchmarks.http_load --url http://127.0.0.1:8000 --job-id ingest-... --collection demo \\
        --requests 400 --threads 16     # token from INGEST_API_TOKEN

Bounded in count and in time; loopback only. Prints latency percentiles as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests


def hammer(url: str, token: str, job_id: str, collection: str, total: int = 200, threads: int = 8,
           time_limit_s: float = 120.0) -> dict:
    """Alternate GET /ingest/{job_id} and POST /search; returns status counts and latency percentiles (ms)."""
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + time_limit_s

    def one(i: int):
        if time.monotonic() > deadline:
            return None
        started = time.perf_counter()
        if i % 2:
            response = requests.get(f"{url}/ingest/{job_id}", headers=headers, timeout=60)
        else:
            response = requests.post(f"{url}/search", headers=headers, timeout=60,
                                     json={"collection": collection, "text": f"photo {i}", "k": 5})
        return ("status" if i % 2 else "search", response.status_code, (time.perf_counter() - started) * 1000)

    with ThreadPoolExecutor(threads) as pool:
        results = [r for r in pool.map(one, range(total)) if r is not None]
    report = {"requests": len(results), "threads": threads, "codes": {}}
    for kind, code, _ in results:
        report["codes"][str(code)] = report["codes"].get(str(code), 0) + 1
    for kind in ("status", "search"):
        latencies = [ms for k, _, ms in results if k == kind]
        if latencies:
            report[kind] = {f"p{q}": round(float(np.percentile(latencies, q)), 1) for q in (50, 90, 99)}
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--collection", required=True)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(hammer(args.url, os.environ["INGEST_API_TOKEN"], args.job_id, args.collection,
                            args.requests, args.threads)))

"""Fallback GET load generator (a separate process) when wrk is not installed."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict

import httpx

from bench.measure import run_async


def main() -> None:
    url, concurrency, seconds, headers = (
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        json.loads(sys.argv[4]),
    )

    async def one(client: httpx.AsyncClient, _: int) -> bool:
        return (await client.get(url, headers=headers)).status_code < 400

    result = asyncio.run(run_async(one, concurrency, seconds, base_url=url))
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()

"""Write (or --check) deploy/rabbitmq/definitions.json from the kernel's own topology code.

The services declare the same exchange and queues at start (services/kernel/broker.py); a queue
declared with different arguments is refused by RabbitMQ, so the arguments here are taken from
the very functions the services call. Bindings are left to the services: they derive them from
each consumer's HANDLERS at start (services/topology.py), so they cannot drift from the code.

    .venv/bin/python deploy/rabbitmq/definitions.py          # rewrite the file
    .venv/bin/python deploy/rabbitmq/definitions.py --check  # exit 1 when it is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from services.kernel.broker import Names, _queue_args, main_queue_args  # noqa: E402
from services.kernel.settings import Settings  # noqa: E402
from services.topology import CONSUMING_SERVICES  # noqa: E402

TARGET = Path(__file__).with_name("definitions.json")
VHOST = "/"


def _queue(name: str, arguments: dict[str, str | int]) -> dict[str, object]:
    return {
        "name": name,
        "vhost": VHOST,
        "durable": True,
        "auto_delete": False,
        "arguments": arguments,
    }


def definitions(prefix: str = "resellio") -> dict[str, object]:
    names = Names(prefix)
    queues = []
    for consumer in CONSUMING_SERVICES:
        queues.append(_queue(names.queue(consumer), main_queue_args(names, consumer, "quorum")))
        queues.append(_queue(names.dead_letter_queue(consumer), _queue_args("quorum")))
        for delay in Settings().consumer_retry_delays_ms:
            # Same arguments as declare_topology: a parked message expires back to the queue.
            retry = {
                "x-message-ttl": delay,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": names.queue(consumer),
            }
            queues.append(_queue(names.retry_queue(consumer, delay), retry))
    exchange = {
        "name": names.exchange,
        "vhost": VHOST,
        "type": "topic",
        "durable": True,
        "auto_delete": False,
        "internal": False,
        "arguments": {},
    }
    return {"vhosts": [{"name": VHOST}], "exchanges": [exchange], "queues": queues}


def render() -> str:
    return json.dumps(definitions(), indent=2) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        if TARGET.read_text() != render():
            print(f"{TARGET.relative_to(ROOT)} is out of date: run {Path(__file__).name}")
            sys.exit(1)
        print(f"{TARGET.relative_to(ROOT)} matches the kernel's topology")
    else:
        TARGET.write_text(render())
        print(f"wrote {TARGET.relative_to(ROOT)}")

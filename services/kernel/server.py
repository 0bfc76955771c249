"""The HTTP server's protocol: uvicorn's httptools protocol, with the one answer uvicorn gives
on its own (400 for a request it cannot parse) in JSON with a `detail`, as every other
refusal is (API.md §1.2)."""

from __future__ import annotations

import uuid

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class JsonErrorsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        body = msgspec.json.encode({"detail": msg})
        # Its own id, as every answer has one (API.md §1.6): nothing in the request was read.
        head = [
            b"HTTP/1.1 400 Bad Request\r\n",
            b"x-request-id: ",
            str(uuid.uuid4()).encode(),
            b"\r\n",
        ]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n\r\n",
            ]
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()

"""A local AWS Lambda Runtime API (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html):
the routes, headers and status codes a custom runtime's `bootstrap` talks to, served on 127.0.0.1
from a thread, recording everything the runtime sends so a test can judge it.

  GET  /2018-06-01/runtime/invocation/next            blocks until an event is queued; 200 with the
       event as body and Lambda-Runtime-Aws-Request-Id, -Deadline-Ms, -Invoked-Function-Arn,
       -Trace-Id headers
  POST /2018-06-01/runtime/invocation/{id}/response   202; 400 for a request id that is not
       outstanding; 413 for a payload over the synchronous limit (nothing is delivered)
  POST /2018-06-01/runtime/invocation/{id}/error      202 (body {errorMessage, errorType}, header
       Lambda-Runtime-Function-Error-Type); 400 for a request id that is not outstanding
  POST /2018-06-01/runtime/init/error                 202 during init; 403 once the runtime has
       asked for an event (init is over)
Anything else is 404. The emulator AWS publishes (aws-lambda-runtime-interface-emulator) is a Go
program that is not installable here; this server follows the same documented contract.
"""
import json
import queue
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/2018-06-01/runtime"
# Lambda's synchronous response limit as its error names it: "Response payload size exceeded
# maximum allowed payload size (6291556 bytes)".
MAX_RESPONSE = 6291556
FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:remixer"


class RuntimeApi:
    def __init__(self, max_response=MAX_RESPONSE):
        self.max_response = max_response
        self.events = queue.Queue()
        self.records = []            # what the runtime sent, in order (dicts, see _record)
        self.cond = threading.Condition()
        self.outstanding = set()     # request ids handed out by /next and not answered yet
        self.init_done = False       # the first /next ends the init phase
        self.stopping = False
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Lambda's own endpoint

            def log_message(self, fmt, *args):
                pass

            def do_GET(self):
                api._get(self)

            def do_POST(self):
                api._post(self)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                # a runtime killed mid-request (how Lambda ends one, and how the tests end theirs)
                if not isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self):
        """The value of AWS_LAMBDA_RUNTIME_API."""
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.stopping = True
        self.server.shutdown()
        self.server.server_close()

    # ---- the test's side ----

    def invoke(self, event, deadline_s=60.0, request_id=None):
        """Queues an event (a dict, or raw text/bytes) and returns its request id."""
        request_id = request_id or str(uuid.uuid4())
        body = event if isinstance(event, (bytes, str)) else json.dumps(event)
        body = body.encode() if isinstance(body, str) else body
        self.events.put((request_id, int((time.time() + deadline_s) * 1000), body))
        return request_id

    def wait(self, predicate, timeout):
        """The first record satisfying predicate, waiting up to timeout seconds; None if none came."""
        end = time.time() + timeout
        with self.cond:
            while True:
                for r in self.records:
                    if predicate(r):
                        return r
                left = end - time.time()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def answer(self, request_id, timeout):
        """The response or error the runtime posted for request_id (None if none within timeout)."""
        return self.wait(lambda r: r["request_id"] == request_id and r["route"] in ("response", "error"),
                         timeout)

    def wait_count(self, route, n, timeout):
        """Waits (up to timeout seconds) until `route` was called n times; the records of that route."""
        end = time.time() + timeout
        with self.cond:
            while len(self.of_route(route)) < n and time.time() < end:
                self.cond.wait(max(0.0, end - time.time()))
            return self.of_route(route)

    def of_route(self, route):
        with self.cond:
            return [r for r in self.records if r["route"] == route]

    # ---- the runtime's side ----

    def _record(self, route, request_id, handler, body, status):
        rec = {"route": route, "request_id": request_id, "status": status, "body": body,
               "headers": {k.lower(): v for k, v in handler.headers.items()}, "time": time.time()}
        with self.cond:
            self.records.append(rec)
            self.cond.notify_all()

    def _reply(self, handler, status, obj=None, headers=None):
        data = json.dumps(obj if obj is not None else {}).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(data)

    def _read_body(self, handler):
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(handler.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    handler.rfile.readline()
                    return b"".join(chunks)
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()
        return handler.rfile.read(int(handler.headers.get("Content-Length", "0")))

    def _get(self, handler):
        if handler.path != PREFIX + "/invocation/next":
            return self._reply(handler, 404, {"errorMessage": f"no route GET {handler.path}",
                                              "errorType": "NotFound"})
        with self.cond:
            self.init_done = True
        self._record("next", None, handler, b"", 200)
        handler.close_connection = True  # unless an event goes out: closing ends the runtime's wait
        while not self.stopping:
            try:
                request_id, deadline_ms, body = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            with self.cond:
                self.outstanding.add(request_id)
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
            handler.send_header("Lambda-Runtime-Deadline-Ms", str(deadline_ms))
            handler.send_header("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN)
            handler.send_header("Lambda-Runtime-Trace-Id",
                                f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0")
            handler.end_headers()
            handler.wfile.write(body)
            handler.close_connection = False
            return

    def _post(self, handler):
        body = self._read_body(handler)
        path = handler.path
        if path == PREFIX + "/init/error":
            with self.cond:
                late = self.init_done
            if late:
                self._record("init_error_refused", None, handler, body, 403)
                return self._reply(handler, 403, {"errorMessage": "init error after init",
                                                  "errorType": "InvalidStateTransition"})
            self._record("init_error", None, handler, body, 202)
            return self._reply(handler, 202, {"status": "OK"})
        parts = path[len(PREFIX):].split("/") if path.startswith(PREFIX + "/invocation/") else []
        if len(parts) != 4 or parts[3] not in ("response", "error"):
            return self._reply(handler, 404, {"errorMessage": f"no route POST {path}", "errorType": "NotFound"})
        request_id, route = parts[2], parts[3]
        with self.cond:
            known = request_id in self.outstanding
        if not known:
            self._record(route + "_refused", request_id, handler, body, 400)
            return self._reply(handler, 400, {"errorMessage": f"invalid request id {request_id}",
                                              "errorType": "InvalidRequestID"})
        if route == "response" and len(body) > self.max_response:
            self._record("response_refused", request_id, handler, body, 413)
            return self._reply(handler, 413, {
                "errorMessage": f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload "
                                f"size ({self.max_response} bytes).",
                "errorType": "RequestEntityTooLarge"})
        with self.cond:
            self.outstanding.discard(request_id)
        self._record(route, request_id, handler, body, 202)
        self._reply(handler, 202, {"status": "OK"})

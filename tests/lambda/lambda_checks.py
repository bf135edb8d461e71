#!/usr/bin/env python3
"""remixer-lambda end to end: deploy/package-lambda.sh builds the real zip; each test unpacks it as
Lambda does and launches its `bootstrap` with Lambda's environment against a local Runtime API
(runtime_api.py). Checkpoints: the tiny stage-2 and stage-3 fixtures of tests/remix. Each
subcommand is one ctest test; it exits 1 with a message on failure.

  package       (fixture) the zip: bootstrap at its root and executable, the checkpoint as model.h5,
                every library the program needs inside it (the package's loader resolves all of them
                to lib/, even with Lambda's LD_LIBRARY_PATH naming the host's folders first)
  errors        the packaging script's refusals: a missing checkpoint, an OUT folder that is not
                empty, a CUDA build (exit 2, each naming the problem); its folder form (the
                container image's) holds the zip's files with their modes; the script and the
                bootstrap it writes pass shellcheck
  invocations   one runtime, many events in a row: /info, generate through function URL (2.0) and
                REST API (1.0) events, the same request twice (the same bytes), 4xx answers for bad
                requests (bad JSON, unknown genre, out of range, wrong method, unknown path) as
                response objects; the process stays up and asks for the next event each time, and
                every shared library it has mapped is the package's
  function_url  a function URL event as AWS documents it, its JSON body base64-encoded
                (isBase64Encoded): the response's base64 body is a WAV of the requested length
  bad_event     events that are not HTTP events (not JSON, an array, an S3 notification, a body
                that claims base64 and is not): /error with errorType Remixer.InvalidEvent in the
                body and the Lambda-Runtime-Function-Error-Type header; the runtime goes on
  missing_model no model.h5, a damaged one, a bad setting, no Runtime API: /init/error with
                errorMessage and errorType, the documented exit code, no event asked for
  oversize      a result over the response limit is answered with a 413 naming the length that
                fits (never sent: the server, which refuses what Lambda refuses, sees no oversize
                post), and that length fits: with a lowered limit (the test knob) and with Lambda's
                real 6291556 bytes (a 110 s clip)
  deadline      a job that would outlast the invocation's deadline is reported (Remixer.Timeout)
                before the deadline: refused at once when the deadline is already within the margin,
                else stopped at a cancellation point or, failing one in time, by the watchdog (the
                runtime exits 1); the next invocation is served (by a fresh runtime after an exit)
  remix         a stage-3 checkpoint given by REMIXER_CHECKPOINT: remix of two demo songs sent
                base64 -> a WAV as long as the original; generate is refused (422); audio fields
                that are not base64 or not audio are 400s naming the field
"""
import argparse
import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import wave
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from runtime_api import MAX_RESPONSE, RuntimeApi  # noqa: E402

TIMEOUT = 120


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def expect(cond, msg):
    if not cond:
        fail(msg)


def http_event(method, path, body=None, b64=False, version="2.0"):
    """A function URL / HTTP API event (payload 2.0), or a REST API event (1.0)."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if b64 and body is not None:
        body = base64.b64encode(body.encode() if isinstance(body, str) else body).decode()
    if version == "1.0":
        return {"resource": path, "path": path, "httpMethod": method, "headers": {"content-type": "application/json"},
                "queryStringParameters": None, "requestContext": {"stage": "prod", "httpMethod": method},
                "body": body, "isBase64Encoded": b64}
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": {"content-type": "application/json"},
            "requestContext": {"http": {"method": method, "path": path}}, "body": body, "isBase64Encoded": b64}


def read_wav(data):
    with wave.open(io.BytesIO(data)) as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()


class Launch:
    """An unpacked package's bootstrap, run as Lambda runs it, against its own Runtime API."""

    def __init__(self, checks, name, env=None, root=None, max_response=MAX_RESPONSE):
        self.api = RuntimeApi(max_response=max_response)
        self.root = root or checks.unpack(name)
        self.log_path = os.path.join(checks.a.work, name + ".log")
        # Lambda's documented environment of a custom runtime (LD_LIBRARY_PATH names the host's
        # library folders before the package's: the bootstrap must not depend on it)
        lambda_env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/opt/bin",
            "LD_LIBRARY_PATH": f"/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/lib64:/usr/lib64:{self.root}:"
                               f"{self.root}/lib:/opt/lib",
            "LANG": "en_US.UTF-8", "TZ": ":UTC",
            "AWS_LAMBDA_RUNTIME_API": self.api.address, "LAMBDA_TASK_ROOT": self.root,
            "LAMBDA_RUNTIME_DIR": "/var/runtime", "_HANDLER": "remixer.handler",
            "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_LAMBDA_FUNCTION_NAME": "remixer", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008", "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/remixer", "AWS_LAMBDA_LOG_STREAM_NAME": "test",
            "REMIXER_THREADS": "1",  # the test machine is shared; Lambda would use every vCPU
        }
        lambda_env.update(env or {})
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([os.path.join(self.root, "bootstrap")], cwd=self.root, env=lambda_env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def call(self, event, deadline_s=60.0, timeout=TIMEOUT):
        """Invokes and returns the record of the runtime's answer (response or error)."""
        rid = self.api.invoke(event, deadline_s=deadline_s)
        rec = self.api.answer(rid, timeout)
        if rec is None:
            print(self.output())
            fail(f"no answer to request {rid} within {timeout} s (runtime exit code {self.proc.poll()})")
        return rec

    def respond(self, event, status=200, **kw):
        """Invokes; the answer must be a response object with `status`: returns it (decoded)."""
        rec = self.call(event, **kw)
        if rec["route"] != "response":
            fail(f"expected a response with status {status}, got a function error: {rec['body'][:500]!r}")
        doc = json.loads(rec["body"])
        expect(set(doc) == {"statusCode", "headers", "body", "isBase64Encoded"},
               f"a response object has statusCode, headers, body, isBase64Encoded; got {sorted(doc)}")
        if doc["statusCode"] != status:
            fail(f"expected status {status}, got {doc['statusCode']}: {doc['body'][:500]}")
        return doc

    def wait_exit(self, timeout=60):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(self.output())
            fail("the runtime did not exit")

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # how Lambda ends an execution environment
            self.proc.wait()
        self.api.close()
        self.log.close()


def wav_of(doc):
    expect(doc["isBase64Encoded"] is True, "a WAV response must be base64-encoded (isBase64Encoded true)")
    expect(doc["headers"].get("Content-Type") == "audio/wav", f"Content-Type audio/wav, got {doc['headers']}")
    return base64.b64decode(doc["body"], validate=True)


def error_doc(doc, field=None, contains=None):
    expect(doc["isBase64Encoded"] is False and doc["headers"].get("Content-Type") == "application/json",
           f"an error response is JSON text: {doc}")
    body = json.loads(doc["body"])
    expect("error" in body, f"an error response has 'error': {body}")
    if field is not None:
        expect(body.get("field") == field, f"the error should name the field {field}: {body}")
    if contains is not None:
        expect(contains in body["error"], f"the error should say '{contains}': {body['error']}")
    return body


class Checks:
    def __init__(self, args):
        self.a = args
        self.zip = os.path.join(args.work, "remixer-lambda.zip")

    def unpack(self, name, skip=()):
        """The zip extracted as Lambda does (file modes from the zip) into work/<name>/."""
        dest = os.path.join(self.a.work, name)
        shutil.rmtree(dest, ignore_errors=True)
        with zipfile.ZipFile(self.zip) as z:
            for info in z.infolist():
                if info.filename in skip:
                    continue
                path = z.extract(info, dest)
                mode = info.external_attr >> 16
                if mode:
                    os.chmod(path, mode & 0o777)
        return dest

    def run_script(self, build, ckpt, out, expect_rc):
        env = dict(os.environ, RMX_JOBS="2")
        p = subprocess.run([os.path.join(self.a.repo, "deploy", "package-lambda.sh"), build, ckpt, out],
                           capture_output=True, text=True, env=env, timeout=900)
        text = p.stdout + p.stderr
        if p.returncode != expect_rc:
            print(text)
            fail(f"package-lambda.sh exit code {p.returncode}, expected {expect_rc}")
        return text

    # ---- the package ----

    def check_package(self):
        os.makedirs(self.a.work, exist_ok=True)
        if os.path.exists(self.zip):
            os.remove(self.zip)
        t0 = time.time()
        print(self.run_script(self.a.build, self.a.stage2, self.zip, 0).strip())
        print(f"packaged in {time.time() - t0:.1f} s")
        with zipfile.ZipFile(self.zip) as z:
            infos = {i.filename: i for i in z.infolist()}
        for name, mode in (("bootstrap", 0o755), ("bin/remixer-lambda", 0o755), ("model.h5", 0o644)):
            expect(name in infos, f"the zip must hold {name}; it holds {sorted(infos)[:20]}")
            got = infos[name].external_attr >> 16 & 0o777
            expect(got == mode, f"{name}: mode {got:o} in the zip, expected {mode:o}")
        root = self.unpack("package")
        with open(os.path.join(root, "model.h5"), "rb") as f, open(self.a.stage2, "rb") as g:
            expect(f.read() == g.read(), "model.h5 must be the checkpoint given")
        loaders = [n for n in os.listdir(os.path.join(root, "lib")) if n.startswith("ld-linux")]
        expect(len(loaders) == 1, f"lib/ must hold the dynamic loader, found {loaders}")
        lib = os.path.join(root, "lib")
        env = {"LD_LIBRARY_PATH": "/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu"}
        p = subprocess.run([os.path.join(lib, loaders[0]), "--library-path", lib, "--list",
                            os.path.join(root, "bin", "remixer-lambda")], capture_output=True, text=True, env=env)
        expect(p.returncode == 0, f"the package's loader cannot load the program: {p.stdout}{p.stderr}")
        resolved = [line.split("=>")[1].split("(")[0].strip() for line in p.stdout.splitlines() if "=>" in line]
        outside = [r for r in resolved if not r.startswith(lib + "/")]
        expect(resolved and not outside, f"libraries resolved outside the package: {outside}")
        print(f"zip: {os.path.getsize(self.zip)} bytes, {len(resolved)} libraries, all inside the package")

    def check_errors(self):
        work = os.path.join(self.a.work, "errors")
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(os.path.join(work, "full"))
        open(os.path.join(work, "full", "x"), "w").close()
        out = self.run_script(self.a.build, os.path.join(work, "none.h5"), os.path.join(work, "a.zip"), 2)
        expect("none.h5: no such checkpoint" in out, f"a missing checkpoint must be named: {out}")
        out = self.run_script(self.a.build, self.a.stage2, os.path.join(work, "full"), 2)
        expect("not empty" in out, f"a folder that is not empty must be refused: {out}")
        out = self.run_script(self.a.build, self.a.stage2, os.path.join(work, "no-such-dir", "a.zip"), 2)
        expect("does not exist" in out, f"a zip in a missing folder must be refused: {out}")
        if self.a.cuda_build:
            out = self.run_script(self.a.cuda_build, self.a.stage2, os.path.join(work, "b.zip"), 2)
            expect("is a CUDA build" in out and "-DREMIXER_CUDA=OFF" in out, f"a CUDA build must be refused: {out}")
        expect(not [n for n in os.listdir(work) if n.endswith(".zip")], "a refused package must leave no zip")
        # the folder form (what the Dockerfile's lambda stage copies into the image): the zip's files
        folder = os.path.join(work, "folder")
        self.run_script(self.a.build, self.a.stage2, folder, 0)
        with zipfile.ZipFile(self.zip) as z:
            in_zip = {i.filename: i.external_attr >> 16 & 0o777 for i in z.infolist() if not i.is_dir()}
        in_folder = {os.path.relpath(os.path.join(d, n), folder): os.stat(os.path.join(d, n)).st_mode & 0o777
                     for d, _, names in os.walk(folder) for n in names}
        expect(in_folder == in_zip, f"the folder form must hold the zip's files with their modes: "
                                    f"{sorted(set(in_folder.items()) ^ set(in_zip.items()))[:10]}")
        # the script, and the bootstrap it writes (run by Amazon Linux's /bin/sh), pass shellcheck
        bootstrap = os.path.join(self.unpack("errors/unpacked"), "bootstrap")
        for cmd in (["shellcheck", os.path.join(self.a.repo, "deploy", "package-lambda.sh")],
                    ["shellcheck", "--shell=sh", bootstrap]):
            p = subprocess.run(cmd, capture_output=True, text=True)
            expect(p.returncode == 0, f"{' '.join(cmd)}:\n{p.stdout}{p.stderr}")
        print("packaging refusals: exit 2 with the reason; the folder form holds the zip's files; script and "
              "bootstrap pass shellcheck")

    # ---- invocations ----

    def check_invocations(self):
        run = Launch(self, "invocations")
        try:
            info = json.loads(run.respond(http_event("GET", "/info"))["body"])
            expect(info["stage"] == "diffusion" and "drums" in info["genres"], f"/info: {info}")
            expect(info["limits"]["max_response_bytes"] == MAX_RESPONSE, f"/info limits: {info['limits']}")
            rate = info["model"]["sample_rate"]
            root = json.loads(run.respond(http_event("GET", "/"))["body"])
            expect(root == info, "GET / is /info")
            requests = [("2.0", "/generate", {"genre": "drums", "seconds": 1.5, "steps": 4, "seed": 1}),
                        ("1.0", "/generate", {"genre": "chords", "seconds": 2.0, "steps": 4, "seed": 2}),
                        ("2.0", "/prod/api/generate/", {"genre": "noise", "seconds": 1.0, "steps": 3})]
            wavs = []
            for version, path, body in requests:
                doc = run.respond(http_event("POST", path, body, version=version))
                data = wav_of(doc)
                ch, width, fr, n = read_wav(data)
                expect((ch, width, fr) == (1, 2, rate), f"{path}: a 16-bit mono WAV at {rate} Hz, got {ch, width, fr}")
                expect(n == round(body["seconds"] * rate), f"{path}: {n} samples for {body['seconds']} s at {rate} Hz")
                expect(body["genre"] in doc["headers"].get("Content-Disposition", ""),
                       f"the file name names the genre: {doc['headers']}")
                wavs.append(data)
            again = wav_of(run.respond(http_event("POST", "/generate", requests[0][2])))
            expect(again == wavs[0], "the same request must give the same bytes")
            expect(wavs[0] != wavs[1], "other requests give other audio")
            bad = [(http_event("POST", "/generate", "{\"genre\": "), 400, "body", "not valid JSON"),
                   (http_event("POST", "/generate", {"genre": "polka"}), 422, "genre", "unknown 'polka'"),
                   (http_event("POST", "/generate", {"genre": "drums", "seconds": 1000}), 422, "seconds", None),
                   (http_event("POST", "/generate", {"genre": "drums", "colour": 1}), 400, "colour", None),
                   (http_event("POST", "/remix", {"original": "", "style": ""}), 422, None, None),
                   (http_event("GET", "/generate"), 405, None, "use POST"),
                   (http_event("POST", "/info"), 405, None, "use GET"),
                   (http_event("GET", "/nowhere"), 404, None, "/nowhere")]
            for event, status, field, text in bad:
                error_doc(run.respond(event, status), field, text)
            expect(run.proc.poll() is None, "the runtime must keep running")
            # every shared object the running runtime mapped is the package's (Lambda's own
            # LD_LIBRARY_PATH names the host's folders first)
            with open(f"/proc/{run.proc.pid}/maps") as f:
                mapped = {line.split()[-1] for line in f if ".so" in line.split()[-1]}
            outside = sorted(m for m in mapped if not m.startswith(os.path.join(run.root, "lib") + "/"))
            expect(len(mapped) > 20 and not outside, f"libraries loaded from outside the package: {outside}")
            nexts = len(run.api.wait_count("next", 15, 10))
            expect(nexts == 15, f"the runtime asks for the next event after each answer: {nexts} /next for 14 events")
            expect(not run.api.of_route("error"), "no function errors for HTTP requests")
            print(f"{14} invocations in a row: 6 WAVs, 8 error responses; the same request gave the same bytes")
        finally:
            run.close()
        log = run.output()
        expect("loaded" in log and "POST /generate -> 200" in log, f"the log names each request: {log}")

    def check_function_url(self):
        """An event as a function URL sends it (docs: lambda/latest/dg/urls-invocation.html)."""
        run = Launch(self, "function_url")
        try:
            body = json.dumps({"genre": "arpeggio", "seconds": 2.5, "steps": 4, "seed": 7})
            event = {
                "version": "2.0", "routeKey": "$default", "rawPath": "/generate", "rawQueryString": "",
                "headers": {"content-type": "application/octet-stream", "content-length": str(len(body)),
                            "host": "abcdefg.lambda-url.eu-west-1.on.aws", "user-agent": "curl/7.88.1",
                            "x-amzn-trace-id": "Root=1-5eb33c07-296d1a9d4b0b2b4c3dcd4d4b",
                            "x-forwarded-for": "203.0.113.10", "x-forwarded-port": "443",
                            "x-forwarded-proto": "https", "accept": "*/*"},
                "requestContext": {"accountId": "anonymous", "apiId": "abcdefg",
                                   "domainName": "abcdefg.lambda-url.eu-west-1.on.aws", "domainPrefix": "abcdefg",
                                   "http": {"method": "POST", "path": "/generate", "protocol": "HTTP/1.1",
                                            "sourceIp": "203.0.113.10", "userAgent": "curl/7.88.1"},
                                   "requestId": "b5e6a3c2-7d8e-4f1a-9b2c-3d4e5f6a7b8c", "routeKey": "$default",
                                   "stage": "$default", "time": "01/Dec/2026:02:00:00 +0000",
                                   "timeEpoch": 1796090400000},
                "body": base64.b64encode(body.encode()).decode(), "isBase64Encoded": True}
            doc = run.respond(event)
            data = wav_of(doc)
            ch, width, fr, n = read_wav(data)
            expect(data[:4] == b"RIFF" and data[8:12] == b"WAVE", "the body decodes to a RIFF/WAVE file")
            expect((ch, width, fr, n) == (1, 2, 22050, round(2.5 * 22050)),
                   f"2.5 s of 16-bit mono at 22050 Hz, got {ch} channels, {width} bytes, {fr} Hz, {n} samples")
            headers = {k.lower(): v for k, v in run.api.of_route("response")[0]["headers"].items()}
            expect(headers.get("content-type") == "application/json", "the response is posted as JSON")
            print(f"function URL event, base64 body -> {len(data)}-byte WAV of {n / fr:.2f} s")
        finally:
            run.close()

    def check_bad_event(self):
        run = Launch(self, "bad_event")
        try:
            events = [("not json", "not JSON"), ("[1, 2]", "expected a JSON object"),
                      ({"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name": "b"}}}]}, "Records"),
                      (dict(http_event("POST", "/generate"), body="%%%", isBase64Encoded=True), "not base64"),
                      (dict(http_event("POST", "/generate"), body=12), "body")]
            for event, text in events:
                rec = run.call(event)
                expect(rec["route"] == "error", f"{event!r:.80}: expected /error, got {rec['route']}")
                body = json.loads(rec["body"])
                expect(body.get("errorType") == "Remixer.InvalidEvent", f"errorType: {body}")
                expect(text in body.get("errorMessage", ""), f"errorMessage should say '{text}': {body}")
                expect(rec["headers"].get("lambda-runtime-function-error-type") == "Remixer.InvalidEvent",
                       f"the Lambda-Runtime-Function-Error-Type header: {rec['headers']}")
            doc = run.respond(http_event("POST", "/generate", {"genre": "drums", "seconds": 1, "steps": 2}))
            wav_of(doc)
            expect(run.proc.poll() is None, "a bad event must not end the runtime")
            print(f"{len(events)} bad events -> /error Remixer.InvalidEvent; the next event is served")
        finally:
            run.close()

    def init_failure(self, name, env, root, expect_rc, error_type, text):
        run = Launch(self, name, env=env, root=root)
        try:
            rc = run.wait_exit()
            expect(rc == expect_rc, f"{name}: exit code {rc}, expected {expect_rc}: {run.output()}")
            recs = run.api.of_route("init_error")
            expect(len(recs) == 1, f"{name}: one /init/error, got {len(recs)}: {run.output()}")
            body = json.loads(recs[0]["body"])
            expect(body.get("errorType") == error_type, f"{name}: errorType {body}")
            expect(text in body.get("errorMessage", ""), f"{name}: errorMessage should say '{text}': {body}")
            expect(recs[0]["headers"].get("lambda-runtime-function-error-type") == error_type,
                   f"{name}: the error-type header: {recs[0]['headers']}")
            expect(not run.api.of_route("next"), f"{name}: a failed init must not ask for events")
            expect(text in run.output(), f"{name}: the log says it too: {run.output()}")
        finally:
            run.close()

    def check_missing_model(self):
        root = self.unpack("missing_model", skip=("model.h5",))
        self.init_failure("missing_model", None, root, 4, "Remixer.CheckpointRefused",
                          os.path.join(root, "model.h5"))
        damaged = os.path.join(self.a.work, "damaged.h5")
        with open(self.a.stage2, "rb") as f:
            data = f.read()
        with open(damaged, "wb") as f:
            f.write(data[: len(data) // 2])
        self.init_failure("damaged_model", {"REMIXER_CHECKPOINT": damaged}, root, 4, "Remixer.CheckpointRefused",
                          damaged)
        self.init_failure("bad_setting", {"REMIXER_THREADS": "many"}, root, 2, "Remixer.ConfigInvalid",
                          "REMIXER_THREADS")
        p = subprocess.run([os.path.join(root, "bootstrap")], capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin", "LAMBDA_TASK_ROOT": root}, timeout=60)
        expect(p.returncode == 2 and "AWS_LAMBDA_RUNTIME_API is not set" in p.stderr,
               f"without a Runtime API: exit 2 and why, got {p.returncode}: {p.stderr}")
        print("missing or damaged model -> /init/error Remixer.CheckpointRefused, exit 4; bad setting -> exit 2")

    # ---- limits ----

    def oversize(self, run, seconds, limit):
        """Asks for `seconds`; the 413 must name a length that then fits under `limit`."""
        doc = run.respond(http_event("POST", "/generate", {"genre": "chords", "seconds": seconds, "steps": 2}), 413)
        err = error_doc(doc, "seconds", f"limit of {limit} bytes")
        fits = float(err["error"].rsplit("at most ", 1)[1].split(" s")[0])
        expect(0 < fits < seconds, f"the suggested length must be shorter: {err['error']}")
        rec = run.call(http_event("POST", "/generate", {"genre": "chords", "seconds": fits, "steps": 2}))
        expect(rec["route"] == "response" and len(rec["body"]) <= limit,
               f"{fits} s must fit into {limit} bytes: {len(rec['body'])}")
        doc = json.loads(rec["body"])
        expect(doc["statusCode"] == 200, f"{fits} s: status {doc['statusCode']}")
        step = 0.1 * 22050 * 2 * 4 / 3  # the base64 of the 0.1 s the suggestion is rounded down to
        expect(len(rec["body"]) > limit - step - 64, f"{fits} s should come within 0.1 s of the limit: {len(rec['body'])}")
        refused = run.api.of_route("response_refused")
        expect(not refused, f"an oversize response was sent: {[len(r['body']) for r in refused]}")
        return fits

    def check_oversize(self):
        limit = 100000
        run = Launch(self, "oversize_knob", env={"REMIXER_LAMBDA_MAX_RESPONSE": str(limit)}, max_response=limit)
        try:
            fits = self.oversize(run, 3.0, limit)
            print(f"limit {limit} bytes (REMIXER_LAMBDA_MAX_RESPONSE): 3 s refused, {fits} s fits")
        finally:
            run.close()
        root = os.path.join(self.a.work, "oversize_knob")
        run = Launch(self, "oversize_real", env={"REMIXER_MAX_SECONDS": "120"}, root=root)
        try:
            t0 = time.time()
            fits = self.oversize(run, 110.0, MAX_RESPONSE)
            print(f"Lambda's limit {MAX_RESPONSE} bytes: 110 s refused, {fits} s fits ({time.time() - t0:.1f} s)")
        finally:
            run.close()

    def check_deadline(self):
        short_job = http_event("POST", "/generate", {"genre": "drums", "seconds": 1, "steps": 2})
        long_job = http_event("POST", "/generate", {"genre": "drums", "seconds": 30, "steps": 400})
        run = Launch(self, "deadline", env={"REMIXER_LAMBDA_DEADLINE_MARGIN_MS": "1000"})
        try:
            # a deadline already inside the margin: refused before the job starts, the runtime goes on
            # (several times: the watchdog once raced this refusal and ended the runtime)
            for _ in range(5):
                rec = run.call(long_job, deadline_s=0.5)
                expect(rec["route"] == "error" and json.loads(rec["body"])["errorType"] == "Remixer.Timeout",
                       f"a deadline inside the margin stops the job before it starts: {rec['body'][:300]!r}")
                expect("not started" in json.loads(rec["body"])["errorMessage"], f"refused, not stopped: {rec['body']}")
            wav_of(run.respond(short_job))
            # a deadline the job would overrun: stopped at a cancellation point (the runtime goes on), or,
            # when none comes in time, reported by the watchdog, which ends the process
            t0 = time.time()
            rec = run.call(long_job, deadline_s=3.0)
            took = time.time() - t0
            expect(rec["route"] == "error", f"a job past its deadline must fail: {rec['body'][:300]!r}")
            body = json.loads(rec["body"])
            expect(body["errorType"] == "Remixer.Timeout" and "deadline" in body["errorMessage"], f"{body}")
            expect(rec["headers"].get("lambda-runtime-function-error-type") == "Remixer.Timeout", "the header")
            expect(took < 3.0, f"the error must be posted before the deadline: {took:.2f} s for a 3 s deadline")
            by_watchdog = "the runtime ends" in body["errorMessage"]
            if by_watchdog:
                rc = run.wait_exit()
                expect(rc == 1, f"after the watchdog's report the runtime exits 1, got {rc}")
            else:
                wav_of(run.respond(short_job))
        finally:
            run.close()
        if by_watchdog:  # Lambda starts a fresh runtime in the same folder for the next event
            run = Launch(self, "deadline_next", root=os.path.join(self.a.work, "deadline"))
            try:
                wav_of(run.respond(short_job))
            finally:
                run.close()
        how = "by the watchdog, exit 1; a fresh runtime" if by_watchdog else "at a cancellation point; the runtime"
        print(f"a 400-step 30 s job with a 3 s deadline: Remixer.Timeout after {took:.2f} s ({how} serves the next event)")

    def check_remix(self):
        def audio(genre):
            with open(os.path.join(self.a.audio, genre, f"{genre}-00.wav"), "rb") as f:
                return f.read()
        original, style = audio("drums"), audio("chords")
        orig_frames = read_wav(original)
        root = self.unpack("remix")
        run = Launch(self, "remix", env={"REMIXER_CHECKPOINT": self.a.stage3}, root=root)
        try:
            info = json.loads(run.respond(http_event("GET", "/info"))["body"])
            expect(info["stage"] == "remix" and info["operations"] == ["remix"], f"/info of stage 3: {info}")
            b64 = {"original": base64.b64encode(original).decode(), "style": base64.b64encode(style).decode()}
            doc = run.respond(http_event("POST", "/remix", dict(b64, strength=0.5, steps=4, seed=3)))
            ch, width, fr, n = read_wav(wav_of(doc))
            seconds = orig_frames[3] / orig_frames[2]
            expect((ch, width) == (1, 2) and abs(n / fr - seconds) < 0.05,
                   f"a remix as long as the original ({seconds:.2f} s): {n / fr:.2f} s, {ch} ch, {width} bytes")
            error_doc(run.respond(http_event("POST", "/remix", dict(b64, original="@@@")), 400), "original", "base64")
            error_doc(run.respond(http_event("POST", "/remix", dict(b64, style=base64.b64encode(b"no audio").decode())),
                                  400), "style")
            error_doc(run.respond(http_event("POST", "/generate", {"genre": "drums"}), 422))
            print(f"remix of {seconds:.1f} s through a base64 event: {n / fr:.2f} s WAV; bad fields -> 400")
        finally:
            run.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("check")
    ap.add_argument("--repo", required=True)
    ap.add_argument("--build", required=True, help="the CPU build folder the package is built from")
    ap.add_argument("--cuda-build", default="", help="a CUDA build folder the script must refuse (if any)")
    ap.add_argument("--work", required=True)
    ap.add_argument("--remix", required=True, help="tests/remix's build folder, with its fixtures")
    args = ap.parse_args()
    # what tests/remix's fixtures leave there: the stage-2 model, a stage-3 run, the demo songs
    args.stage2 = os.path.join(args.remix, "work", "dit", "ckpt-00000020.h5")
    args.stage3 = os.path.join(args.remix, "work", "ref1", "ckpt-00000012.h5")
    args.audio = os.path.join(args.remix, "demo", "audio")
    checks = Checks(args)
    fn = getattr(checks, "check_" + args.check, None)
    if fn is None:
        fail(f"unknown check {args.check}")
    if args.check != "package":
        expect(os.path.exists(checks.zip), f"{checks.zip}: missing (the package fixture makes it)")
    fn()


if __name__ == "__main__":
    main()

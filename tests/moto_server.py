#!/usr/bin/env python3
"""moto (the AWS emulator, https://github.com/getmoto/moto; `pip install
'moto[server]'`) as a server on 127.0.0.1 that checks the SigV4 signature of
every request, so that the proxy's AWS code is also tested against an
implementation this project did not write.

  python3 tests/moto_server.py --port-file F [--port 0] [--region us-east-1]

Once listening it writes F: {"port", "access_key", "secret_key", "region"},
the keys of an IAM user allowed everything; from then on every request must
be signed with them (moto's INITIAL_NO_AUTH_ACTION_COUNT, set to 0 once the
user exists). Runs until SIGTERM/SIGINT. Import MotoServer to start one from
a test (stopped by PID); `available()` says whether moto is importable and
why not.

moto re-encodes form bodies before it checks a signature: its Flask front end
parses an application/x-www-form-urlencoded body into a form and moto signs
the re-encoded form again, which differs from the bytes the client signed
(its defect, not the client's). A WSGI middleware here keeps the raw body and
the signature is checked against it, as AWS checks it."""

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RAW_BODY = "lbtest.raw_body"


def available():
    """(True, "") when moto's server can run here, else (False, why)."""
    try:
        import boto3  # noqa: F401  (moto needs it; the tests set up with it)
        import moto  # noqa: F401
        import moto.server  # noqa: F401  (flask, werkzeug: the [server] extra)
    except ImportError as e:
        return False, ("moto is not installed (%s): pip install 'moto[server]' to run these "
                       "tests against it too" % e)
    return True, ""


def keep_raw_body(app):
    def wrapped(environ, start_response):
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n) if n > 0 else b""
        environ[RAW_BODY] = body
        environ["wsgi.input"] = io.BytesIO(body)
        return app(environ, start_response)
    return wrapped


def check_signatures_on_raw_bodies():
    from moto.core.responses import BaseResponse
    setup = BaseResponse.setup_class

    def setup_class(self, request, full_url, headers, *a, **kw):
        setup(self, request, full_url, headers, *a, **kw)
        raw = getattr(request, "environ", {}).get(RAW_BODY)
        if raw:
            self.raw_body = raw
    BaseResponse.setup_class = setup_class


def make_user(url, region):
    """An IAM user allowed everything, and its access key."""
    import boto3
    iam = boto3.client("iam", endpoint_url=url, region_name=region,
                       aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam.create_user(UserName="lbtest")
    iam.put_user_policy(UserName="lbtest", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="lbtest")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def serve(host, port, region):
    from werkzeug.serving import make_server
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    check_signatures_on_raw_bodies()
    app = keep_raw_body(DomainDispatcherApplication(create_backend_app))
    server = make_server(host, port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://%s:%d" % (host, server.server_address[1])
    access_key, secret_key = make_user(url, region)
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    return server, access_key, secret_key


class MotoServer:
    """tests/moto_server.py in a process of its own, stopped by PID."""

    def __init__(self, region="us-east-1", host="127.0.0.1"):
        self.region, self.host = region, host
        self.proc = None

    def start(self, timeout=60.0):
        fd, self._info = tempfile.mkstemp(prefix="moto-", suffix=".json")
        os.close(fd)
        os.unlink(self._info)
        self._log = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "moto_server.py"), "--port-file", self._info,
             "--region", self.region, "--host", self.host],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self._info):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("moto server did not start:\n" + self.log())
            time.sleep(0.05)
        with open(self._info) as f:
            info = json.load(f)
        self.port, self.access_key, self.secret_key = (info["port"], info["access_key"],
                                                       info["secret_key"])
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for path in (getattr(self, "_info", None),):
            if path and os.path.exists(path):
                os.unlink(path)

    def log(self):
        with open(self._log.name, errors="replace") as f:
            return f.read()

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    def env(self, base=None):
        """As StandIn.env(): every endpoint this server, its user's keys."""
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if not k.startswith("AWS_")}
        env.update({
            "AWS_ENDPOINT_URL": self.url, "AWS_ENDPOINT_URL_EC2": self.url,
            "AWS_ENDPOINT_URL_CLOUDWATCH": self.url, "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region, "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_EC2_METADATA_DISABLED": "true"})
        return env

    def client(self, service):
        import boto3
        return boto3.client(service, endpoint_url=self.url, region_name=self.region,
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--region", default="us-east-1")
    args = ap.parse_args(argv)
    ok, why = available()
    if not ok:
        sys.stderr.write("moto_server: %s\n" % why)
        return 2
    server, access_key, secret_key = serve(args.host, args.port, args.region)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"port": server.server_address[1], "access_key": access_key,
                   "secret_key": secret_key, "region": args.region}, f)
    os.replace(tmp, args.port_file)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    sys.stderr.write("moto_server: listening on %s:%d (SigV4 checked)\n"
                     % (args.host, server.server_address[1]))
    sys.stderr.flush()
    while not done.wait(0.5):
        pass
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Debian's nginx on loopback serving a folder, as a PBX serves its monitor folder to crmagi.

Started on a free port with its own config, pid and logs in a temp dir (no system
service), optionally behind basic auth; ``stop()`` ends exactly that master process.
"""
import base64
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# ``user``: a root master would run its worker as nobody, which cannot read a test's temp dirs.
CONFIG = """daemon off;
{user_line}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    types {{ audio/wav wav WAV; audio/x-gsm gsm; }}
    default_type application/octet-stream;
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port};
        location /monitor/ {{
            alias {root}/;
            autoindex off;
            {auth}
        }}
    }}
}}
"""


def available():
    return os.access(NGINX, os.X_OK)


class Nginx:
    def __init__(self, root, port, user=None, password=None):
        self.dir = Path(tempfile.mkdtemp(prefix="ngx", dir="/tmp"))
        (self.dir / "tmp").mkdir()
        auth = ""
        if user:
            digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
            (self.dir / "htpasswd").write_text("%s:{SHA}%s\n" % (user, digest))
            auth = 'auth_basic "monitor"; auth_basic_user_file %s/htpasswd;' % self.dir
        (self.dir / "nginx.conf").write_text(CONFIG.format(
            dir=self.dir, port=port, root=root, auth=auth,
            user_line="user %s;" % pwd.getpwuid(os.getuid()).pw_name if os.getuid() == 0 else ""))
        self.port = port
        self.url = "http://127.0.0.1:%d/monitor/" % port
        self.credentials = (user, password)
        self.process = subprocess.Popen([NGINX, "-c", str(self.dir / "nginx.conf"), "-p", str(self.dir)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait()

    def _wait(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError("nginx exited: %s" % self.process.stderr.read().decode())
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/" % self.port, timeout=1)
            except urllib.error.HTTPError:
                return                          # it answers (404 for /)
            except OSError:
                time.sleep(0.05)
                continue
            return
        raise AssertionError("nginx did not answer on port %d" % self.port)

    def get(self, name, headers=None):
        request = urllib.request.Request(self.url + name, headers=dict(headers or {}))
        user, password = self.credentials
        if user:
            pair = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
            request.add_header("Authorization", "Basic " + pair)
        return urllib.request.urlopen(request, timeout=5)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

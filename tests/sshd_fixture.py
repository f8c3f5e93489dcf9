"""A real OpenSSH sshd for tests: /usr/sbin/sshd -D -e -f CONFIG on one high
port, listening on a list of loopback addresses (the whole 127.0.0.0/8 is
local on Linux, so 127.0.0.11 ... binds without setup), with its own ed25519
host key and authorized_keys in a temp dir, key authentication only.

    with SSHD(["127.0.0.%d" % n for n in range(11, 20)]) as sshd:
        sshd.ssh("127.0.0.12", "echo hi").stdout      # 'hi\\n'
        sshd.port, sshd.client_key, sshd.host_public_key()
        sshd.authorize_key(line)     # e.g. the stand-in's key pairs
        sshd.rotate_host_key()       # same port, new host key

Sessions log in as `user` (default: the user running the test, root in CI).
Without per_address_home they run in that user's home as usual: tests give
clients a directory to upload into (sshd.workdir, or their own). With
per_address_home=True every listen address has its own HOME and working
directory, sshd.home(addr), for commands, scp and SFTP alike, so that the
"instances" sharing this one sshd do not overwrite each other's files.

Raises unittest.SkipTest when sshd or ssh-keygen is missing or the
privilege-separation directory cannot be made."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import pwd

SSHD_BIN = os.environ.get("SSHD_BIN", "/usr/sbin/sshd")
PRIVSEP_DIR = "/run/sshd"
SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                "/usr/lib/ssh/sftp-server", "/usr/libexec/sftp-server")

# Used with per_address_home: sshd runs it for every session (ForceCommand);
# the address the client connected to picks the session's home.
SESSION_WRAPPER = """#!/bin/sh
# sshd_fixture: one home per listen address (SSH_CONNECTION's third field).
set -- $SSH_CONNECTION
home="{homes}/$3"
mkdir -p "$home" && cd "$home" || exit 1
HOME="$home"
export HOME
case "$SSH_ORIGINAL_COMMAND" in
  "") exec "${{SHELL:-/bin/sh}}" -l ;;
  internal-sftp) exec {sftp_server} ;;
  *) exec "${{SHELL:-/bin/sh}}" -c "$SSH_ORIGINAL_COMMAND" ;;
esac
"""


def _need(path_or_name):
    found = path_or_name if os.path.isabs(path_or_name) else shutil.which(path_or_name)
    if not found or not os.access(found, os.X_OK):
        raise unittest.SkipTest("%s not installed (scripts/install-deps installs "
                                "openssh-server)" % path_or_name)
    return found


def _keygen(path, comment):
    if os.path.exists(path):
        os.unlink(path)
        os.unlink(path + ".pub")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
                   check=True, capture_output=True, timeout=30)
    with open(path + ".pub") as f:
        return f.read().strip()


def _free_port(addresses):
    """A TCP port that every one of the addresses can bind now."""
    for _ in range(100):
        probe = socket.socket()
        probe.bind((addresses[0], 0))
        port = probe.getsockname()[1]
        held = [probe]
        try:
            for addr in addresses[1:]:
                s = socket.socket()
                held.append(s)
                s.bind((addr, port))
            return port
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no port free on all of %s" % ", ".join(addresses))


def _process_table():
    """{pid: (ppid, cwd, exe)} of the processes we can see."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open("/proc/%d/stat" % pid) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        paths = []
        for link in ("cwd", "exe"):
            try:
                paths.append(os.readlink("/proc/%d/%s" % (pid, link)))
            except OSError:
                paths.append("")
        table[pid] = (ppid, paths[0], paths[1])
    return table


class SSHD:
    """One real sshd on `port` (None: a free one) at each of `addresses`.
    Attributes: port, addresses, user, dir (its temp dir), client_key (the
    private key path of the client key pair it made, or the one given),
    client_public_key (its line), authorized_keys (path), known_hosts (an
    empty file for clients), workdir (a directory for uploads), log_path."""

    def __init__(self, addresses=("127.0.0.1",), port=None, user=None, client_key=None,
                 per_address_home=False, log_level="VERBOSE", start=True):
        self.sshd = _need(SSHD_BIN)
        _need("ssh-keygen")
        self._privsep_dir()
        self.addresses = list(addresses)
        self.user = user or pwd.getpwuid(os.getuid()).pw_name
        self.per_address_home = per_address_home
        self.log_level = log_level
        self.dir = tempfile.mkdtemp(prefix="sshd-fixture-")
        self.host_key = os.path.join(self.dir, "ssh_host_ed25519_key")
        self.authorized_keys = os.path.join(self.dir, "authorized_keys")
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        self.config_path = os.path.join(self.dir, "sshd_config")
        self.pid_file = os.path.join(self.dir, "sshd.pid")
        self.log_path = os.path.join(self.dir, "sshd.log")
        self.workdir = os.path.join(self.dir, "files")
        self.homes = os.path.join(self.dir, "homes")
        os.makedirs(self.workdir)
        os.makedirs(self.homes)
        open(self.known_hosts, "w").close()
        self.client_key, self.client_public_key = self._client_key(client_key)
        with open(self.authorized_keys, "w") as f:
            f.write(self.client_public_key + "\n")
        _keygen(self.host_key, "sshd-fixture-host")
        self.port = port
        self.proc = None
        self._log = None
        self._log_offset = 0
        if start:
            self.start()

    # -- setup -------------------------------------------------------------

    @staticmethod
    def _privsep_dir():
        if not os.path.isdir(PRIVSEP_DIR):
            try:
                os.makedirs(PRIVSEP_DIR, mode=0o755)
            except OSError as e:
                raise unittest.SkipTest("sshd needs %s and it cannot be made: %s"
                                        % (PRIVSEP_DIR, e))

    def _client_key(self, given):
        if given:
            with open(given + ".pub") as f:
                return given, f.read().strip()
        path = os.path.join(self.dir, "client_ed25519")
        return path, _keygen(path, "sshd-fixture-client")

    def _session_wrapper(self):
        sftp = next((p for p in SFTP_SERVERS if os.access(p, os.X_OK)), None)
        if sftp is None:
            raise unittest.SkipTest("per_address_home needs an sftp-server binary "
                                    "(openssh-sftp-server)")
        path = os.path.join(self.dir, "session.sh")
        with open(path, "w") as f:
            f.write(SESSION_WRAPPER.format(homes=self.homes, sftp_server=sftp))
        os.chmod(path, 0o755)
        return path

    def _write_config(self):
        lines = ["Port %d" % self.port]
        lines += ["ListenAddress %s" % a for a in self.addresses]
        lines += [
            "HostKey %s" % self.host_key,
            "AuthorizedKeysFile %s" % self.authorized_keys,
            "PidFile %s" % self.pid_file,
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowUsers %s" % self.user,
            "MaxStartups 200",          # awsctl pushes to many "instances" at once
            "MaxSessions 100",
            "LoginGraceTime 30",
            "LogLevel %s" % self.log_level,
            "Subsystem sftp internal-sftp",
        ]
        if self.per_address_home:
            lines.append("ForceCommand %s" % self._session_wrapper())
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout=10.0):
        """Starts sshd (a free port the first time) and waits until it
        listens on every address."""
        chosen_here = self.port is None
        for attempt in range(3):
            if self.port is None:
                self.port = _free_port(self.addresses)
            self._write_config()
            try:
                return self._launch(timeout)
            except RuntimeError:
                # Someone took the free port between the probe and sshd's bind.
                lost_race = "Address already in use" in self.log(self._log_offset)
                if not chosen_here or attempt == 2 or not lost_race:
                    raise
                self.port = None

    def _launch(self, timeout):
        self._log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.sshd, "-D", "-e", "-f", self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        wanted = ["Server listening on %s port %d." % (a, self.port) for a in self.addresses]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            log = self.log(self._log_offset)
            if all(w in log for w in wanted):
                return self
            time.sleep(0.02)
        self._stop_listener()
        raise RuntimeError("sshd did not listen on %s port %d:\n%s"
                           % (", ".join(self.addresses), self.port,
                              self.log(self._log_offset)[-3000:]))

    def _stop_listener(self, timeout=10.0):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self._log.close()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def session_pids(self):
        """PIDs of the processes this sshd's sessions started, and of any
        process whose working directory or executable is in the fixture's
        temp dir (daemons a session left behind)."""
        table = _process_table()
        found = set()
        if self.proc is not None:
            frontier = [self.proc.pid]
            while frontier:
                parent = frontier.pop()
                children = [pid for pid, (ppid, _, _) in table.items() if ppid == parent]
                found.update(children)
                frontier.extend(children)
        root = self.dir + os.sep
        for pid, (_, cwd, exe) in table.items():
            if (cwd + os.sep).startswith(root) or exe.startswith(root):
                found.add(pid)
        found.discard(os.getpid())
        return sorted(found)

    def stop(self):
        """Stops sshd and every session process (session_pids), by PID."""
        pids = self.session_pids()
        self._stop_listener()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            alive = []
            for pid in pids:
                try:
                    os.kill(pid, sig)
                    alive.append(pid)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 3
            while alive and time.monotonic() < deadline:
                alive = [p for p in alive if os.path.exists("/proc/%d" % p)
                         and not process_ended(p)]
                time.sleep(0.02)
            pids = alive

    def rotate_host_key(self):
        """Stops the listener, makes a new host key, starts again on the same
        port (sessions already open go on); returns the new public key line."""
        self._stop_listener()
        _keygen(self.host_key, "sshd-fixture-host")
        self.start()
        return self.host_public_key()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()

    # -- what clients need -------------------------------------------------

    def log(self, offset=0):
        """sshd's log (stderr, -e), from byte offset on."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def authorize_key(self, public_line):
        """Lets the holder of this key log in too (sshd reads the file on
        every login)."""
        with open(self.authorized_keys) as f:
            if public_line.strip() in f.read().splitlines():
                return
        with open(self.authorized_keys, "a") as f:
            f.write(public_line.strip() + "\n")

    def host_public_key(self):
        """The host key line, "ssh-ed25519 AAAA... comment"."""
        with open(self.host_key + ".pub") as f:
            return f.read().strip()

    def host_fingerprint(self):
        """"SHA256:..." as ssh shows it."""
        out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", self.host_key + ".pub"],
                             check=True, capture_output=True, text=True, timeout=10).stdout
        return out.split()[1]

    def known_hosts_line(self, addr):
        kind, key = self.host_public_key().split()[:2]
        return "[%s]:%d %s %s" % (addr, self.port, kind, key)

    def home(self, addr):
        """With per_address_home: the HOME and working directory of sessions
        that connect to addr."""
        return os.path.join(self.homes, addr)

    def ssh_options(self, known_hosts=None, strict="accept-new", key=None, timeout=5):
        return ["-F", "/dev/null", "-p", str(self.port), "-i", key or self.client_key,
                "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
                "-o", "UserKnownHostsFile=%s" % (known_hosts or self.known_hosts),
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=%s" % strict,
                "-o", "ConnectTimeout=%d" % timeout, "-o", "LogLevel=ERROR"]

    def ssh_argv(self, addr, command, **options):
        return ["ssh"] + self.ssh_options(**options) + ["%s@%s" % (self.user, addr), command]

    def ssh(self, addr, command, timeout=30, input=None, **options):
        """Runs command over ssh; a CompletedProcess (text)."""
        return subprocess.run(self.ssh_argv(addr, command, **options), capture_output=True,
                              text=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def sftp_put(self, addr, local, remote, timeout=30, **options):
        """Uploads one file with sftp; a CompletedProcess."""
        opts = ["-P" if o == "-p" else o for o in self.ssh_options(**options)]
        batch = "put %s %s\n" % (_sftp_quote(local), _sftp_quote(remote))
        return subprocess.run(["sftp", "-b", "-"] + opts + ["%s@%s" % (self.user, addr)],
                              input=batch, capture_output=True, text=True, timeout=timeout)

    def scp_put(self, addr, local, remote, legacy=False, timeout=30, **options):
        """Uploads one file with scp (legacy=True: the old scp protocol, as
        libssh2 speaks it, instead of SFTP); a CompletedProcess."""
        opts = ["-P" if o == "-p" else o for o in self.ssh_options(**options)]
        argv = ["scp", "-q"] + (["-O"] if legacy else []) + opts
        return subprocess.run(argv + [local, "%s@%s:%s" % (self.user, addr, remote)],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)


def _sftp_quote(path):
    return '"%s"' % path.replace("\\", "\\\\").replace('"', '\\"')


def process_ended(pid):
    """True when pid is gone or a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True

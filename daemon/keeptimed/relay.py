"""Know who is calling on the unix socket.

grpcio does not expose SO_PEERCRED: on a unix socket ``context.peer()`` is
just ``unix:``. So keeptimed accepts on the public socket itself, reads each
connection's SO_PEERCRED, and relays the bytes to the gRPC server listening on
a private socket in a root-only (0700) directory. Every relayed connection
comes from its own socket bound to a unique path in that directory, so the
gRPC server sees it as ``unix:<that path>``: the relay registers that peer
string with the caller's credentials before connecting, and the service
refuses any peer the relay did not register.

The same socket serves the CRIU hook (keeptime.criu.hookwire), which passes
descriptors and so cannot use gRPC: a connection whose first bytes are the
hook's magic is handed, with the descriptors that came with them and the
caller's credentials, to the hook server instead of the gRPC server.

One thread multiplexes every connection with non-blocking sockets and a
bounded buffer per direction, so a slow or stuck client only ever stalls its
own connection. The connection to the gRPC server is made once the client's
first bytes show it speaks gRPC; a client that says nothing within
FIRST_BYTES_TIMEOUT is closed. A connection ends when the gRPC server ends
its side (as it does to a client that has not finished the HTTP/2 handshake
in time), and the relay never holds more connections than its file
descriptors allow.
"""
import collections
import errno
import itertools
import logging
import os
import resource
import selectors
import shutil
import socket
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from keeptime.criu.hookwire import FD_NAMES, MAGIC as HOOK_MAGIC

from . import pidns, procfs, userns
from .errors import KeeptimeError
from .pidns import PidNamespace

log = logging.getLogger("keeptimed.relay")

CHUNK = 64 * 1024
MAX_BUFFERED = 1024 * 1024        # per direction; reading pauses beyond it
MAX_CONNECTIONS = 1024
FDS_PER_CONNECTION = 4            # its two ends here, the gRPC server's end, and the caller's pidfd
FD_RESERVE = 256                  # kept for the store, the helper, pidfds of restored processes
ACCEPT_PAUSE = 0.5                # seconds accepting stops for when out of descriptors
USER_SHARE = 4                    # a non-root uid may hold 1/USER_SHARE of the connections
FIRST_BYTES_TIMEOUT = 10.0        # seconds a new connection has to say what it speaks


def connection_limit() -> int:
    """How many connections the relay may hold within RLIMIT_NOFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, (soft - FD_RESERVE) // FDS_PER_CONNECTION))


@dataclass(frozen=True)
class PeerCredentials:
    """SO_PEERCRED of a unix connection: who connected, as the kernel saw it."""

    pid: int
    uid: int
    gid: int
    program: str = ""       # its name (comm) when it connected, for the log
    # Its pid namespace when it connected; None when unknown (pid 0: invisible to keeptimed).
    pidns: Optional[PidNamespace] = None
    # A pidfd of it, held by the relay while the connection lasts (see
    # CallerRelay.caller_pidfd); None when there is none.
    pidfd: Optional[int] = field(default=None, compare=False)
    # The uid its calls are charged to (userns.charged_uid); None: its own.
    charged_uid: Optional[int] = None

    @property
    def account(self) -> int:
        """The uid per-uid limits count this connection's calls against."""
        return self.uid if self.charged_uid is None else self.charged_uid


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """Read SO_PEERCRED (struct ucred: pid, uid, gid) of a connected unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCredentials(pid, uid, gid)


@dataclass(eq=False)   # one connection is equal only to itself (and hashable)
class HookConnection:
    """A connection that turned out to be the CRIU hook's: its socket
    (blocking), the bytes read so far, the descriptors that came with them,
    and who connected."""

    sock: socket.socket
    received: bytes
    fds: list[int]
    credentials: PeerCredentials

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.sock.close()


class _Direction:
    """Bytes read from src waiting to be written to dst."""

    __slots__ = ("src", "dst", "buffer", "eof")

    def __init__(self, src: socket.socket, dst: socket.socket):
        self.src, self.dst = src, dst
        self.buffer = bytearray()
        self.eof = False


class _Pair:
    """A public connection and, once it proved to speak gRPC, its upstream
    connection to the gRPC server."""

    def __init__(self, client: socket.socket, credentials: PeerCredentials, accepted_at: float):
        self.client = client
        self.upstream: Optional[socket.socket] = None
        self.peer = ""
        self.credentials = credentials
        self.uid = credentials.account
        self.accepted_at = accepted_at
        self.up: Optional[_Direction] = None
        self.down: Optional[_Direction] = None

    @property
    def silent(self) -> bool:
        """Whether the client has yet to send its first bytes."""
        return self.upstream is None

    def connect(self, upstream: socket.socket, peer: str) -> None:
        self.upstream, self.peer = upstream, peer
        self.up = _Direction(self.client, upstream)
        self.down = _Direction(upstream, self.client)

    def done(self) -> bool:
        # Once the gRPC server has ended its side and all of it reached the
        # client, nothing the client sends can go anywhere: the connection is
        # over even if the client never closes its end.
        return self.down is not None and self.down.eof and not self.down.buffer


class CallerRelay:
    """Accepts on public_path, relays to the gRPC server's private socket.

    start() binds the public socket (mode 0600, or 0660 to `group`) and
    returns; the gRPC server must listen on `private_socket`.
    """

    def __init__(self, public_path: str, group: Optional[int] = None,
                 on_hook: Optional[Callable[[HookConnection], None]] = None):
        self.public_path = public_path
        self.group = group
        self.on_hook = on_hook   # takes over CRIU hook connections; they are refused without it
        self.private_dir = _private_directory(public_path)
        self.private_socket = os.path.join(self.private_dir, "grpc.sock")
        self._callers: dict[str, PeerCredentials] = {}
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._pairs: dict[socket.socket, _Pair] = {}
        self._silent: dict[_Pair, None] = {}   # oldest first: connections yet to say what they speak
        self._connections = 0
        self._counter = itertools.count(1)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._listener: Optional[socket.socket] = None
        self._max_connections = connection_limit()
        # So one group member's connections cannot lock out root's tooling or other users.
        self._max_per_user = max(1, self._max_connections // USER_SHARE)
        self._by_uid: collections.Counter = collections.Counter()
        self._resume_accepting_at: Optional[float] = None
        self._own_pidns = pidns.own()

    # -- what the service asks -------------------------------------------------

    def caller(self, peer: str) -> Optional[PeerCredentials]:
        """Credentials of the relayed connection gRPC reports as `peer`, if any."""
        with self._lock:
            return self._callers.get(peer)

    def caller_pidfd(self, peer: str) -> Optional[int]:
        """A pidfd of the process that connected as `peer`, the caller's own
        to close; None when the connection is gone or its process was
        unknown. (A copy: the relay closes its own with the connection.)"""
        with self._lock:
            credentials = self._callers.get(peer)
            if credentials is None or credentials.pidfd is None:
                return None
            return os.dup(credentials.pidfd)

    # -- life cycle ------------------------------------------------------------

    def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)   # never a moment with a wider mode
        try:
            listener.bind(self.public_path)
        finally:
            os.umask(old_umask)
        if self.group is not None:
            os.chown(self.public_path, 0 if os.geteuid() == 0 else -1, self.group)
            os.chmod(self.public_path, 0o660)
        listener.listen(512)
        listener.setblocking(False)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._loop, name="keeptimed-relay", daemon=True)
        self._thread.start()

    def stop_accepting(self) -> None:
        """Close the public socket: new callers get ECONNREFUSED/ENOENT, relayed ones go on."""
        self._signal(b"a")

    def stop(self) -> None:
        """Close everything and remove the private directory."""
        self._stopping = True
        self._signal(b"s")
        if self._thread:
            self._thread.join(timeout=5)
        for pair in list(self._pairs.values()):
            self._close(pair)
        if self._listener is not None:
            self._close_listener()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        shutil.rmtree(self.private_dir, ignore_errors=True)

    # -- the loop ----------------------------------------------------------------

    def _signal(self, what: bytes) -> None:
        try:
            os.write(self._wake_w, what)
        except OSError:
            pass

    def _loop(self) -> None:
        while not self._stopping:
            for key, events in self._selector.select(self._next_timeout()):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj == self._wake_r:
                    self._woken()
                elif key.fileobj in self._pairs:   # not closed by an earlier event of this batch
                    self._serve(key.data, key.fileobj, events)

    def _next_timeout(self) -> Optional[float]:
        """Seconds until the loop has something to do without an event: resume
        accepting, close a connection that stayed silent too long."""
        now = time.monotonic()
        if self._resume_accepting_at is not None and self._resume_accepting_at <= now:
            self._resume_accepting()
        while self._silent:
            oldest = next(iter(self._silent))
            if oldest.accepted_at + FIRST_BYTES_TIMEOUT > now:
                break
            log.info("relay: closing a connection from uid %d (pid %d) that sent nothing for %.0f s",
                     oldest.uid, oldest.credentials.pid, FIRST_BYTES_TIMEOUT)
            self._close(oldest)
        deadlines = [t for t in (self._resume_accepting_at,) if t is not None]
        if self._silent:
            deadlines.append(next(iter(self._silent)).accepted_at + FIRST_BYTES_TIMEOUT)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _woken(self) -> None:
        try:
            signals = os.read(self._wake_r, 64)
        except BlockingIOError:
            return
        if b"a" in signals and self._listener is not None:
            self._close_listener()

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of descriptors: the pending connection stays in the backlog and
        the listener stays readable, so stop watching it for a moment rather
        than spin (and log) until a descriptor frees up."""
        log.warning("relay: cannot accept (%s); pausing new connections for %.1f s", exc.strerror, ACCEPT_PAUSE)
        self._selector.unregister(self._listener)
        self._resume_accepting_at = time.monotonic() + ACCEPT_PAUSE

    def _resume_accepting(self) -> None:
        self._resume_accepting_at = None
        if self._listener is not None:
            self._selector.register(self._listener, selectors.EVENT_READ, None)

    def _close_listener(self) -> None:
        self._resume_accepting_at = None
        try:
            self._selector.unregister(self._listener)
        except (KeyError, ValueError):
            pass
        self._listener.close()
        self._listener = None
        try:
            os.unlink(self.public_path)
        except FileNotFoundError:
            pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:   # EMFILE and friends: keep serving the others
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting(exc)
                else:
                    log.error("relay: accept failed: %s", exc)
                return
            if self._connections >= self._max_connections:
                log.warning("relay: refusing a connection, %d already open", self._max_connections)
                client.close()
                continue
            credentials = _with_program(peer_credentials(client), client, self._own_pidns)
            if credentials.uid != 0 and self._by_uid[credentials.account] >= self._max_per_user:
                log.warning("relay: refusing a connection from uid %d (pid %d), which holds %d already",
                            credentials.account, credentials.pid, self._max_per_user)
                if credentials.pidfd is not None:
                    os.close(credentials.pidfd)
                client.close()
                continue
            client.setblocking(False)
            pair = _Pair(client, credentials, time.monotonic())
            self._connections += 1
            self._by_uid[credentials.account] += 1
            self._pairs[client] = pair
            self._silent[pair] = None
            self._selector.register(client, selectors.EVENT_READ, pair)

    def _open_upstream(self, pair: _Pair) -> None:
        """Connect pair to the gRPC server, as a peer it knows the caller of."""
        bound_path = os.path.join(self.private_dir, f"c{next(self._counter)}")
        peer = f"unix:{bound_path}"
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            upstream.bind(bound_path)
            with self._lock:   # registered before gRPC can see a byte of it
                self._callers[peer] = pair.credentials
            upstream.connect(self.private_socket)
            # The connection keeps its name for getpeername(); the file is not needed.
            os.unlink(bound_path)
        except OSError:
            upstream.close()
            self._forget(peer)
            try:
                os.unlink(bound_path)
            except FileNotFoundError:
                pass
            raise
        upstream.setblocking(False)
        pair.connect(upstream, peer)
        self._pairs[upstream] = pair
        self._selector.register(upstream, selectors.EVENT_READ, pair)

    def _forget(self, peer: str) -> None:
        with self._lock:
            self._callers.pop(peer, None)

    def _serve(self, pair: _Pair, sock: socket.socket, events: int) -> None:
        try:
            if pair.silent:
                if events & selectors.EVENT_READ and self._first_read(pair):
                    return
            elif events & selectors.EVENT_READ:
                self._read(pair.up if sock is pair.client else pair.down)
            if events & selectors.EVENT_WRITE:
                self._flush(pair.down if sock is pair.client else pair.up)
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                log.warning("relay: connection from %s failed: %s", pair.peer, exc)
            self._close(pair)
            return
        if pair.done():
            self._close(pair)
        else:
            self._update_interest(pair)

    def _first_read(self, pair: _Pair) -> bool:
        """Read the client's first bytes, with any descriptors sent along
        (later reads use recv, which makes the kernel discard descriptors).
        True when the connection left the relay: the hook's, handed over, or
        one that ended or could not reach the gRPC server."""
        try:
            data, fds, _, _ = socket.recv_fds(pair.client, CHUNK, len(FD_NAMES), socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return False
        del self._silent[pair]
        if data[:1] == HOOK_MAGIC[:1]:   # HTTP/2 starts with "PRI * HTTP/2.0"
            self._hand_over(pair, data, fds)
            return True
        for fd in fds:
            os.close(fd)
        if not data:
            self._close(pair)
            return True
        try:
            self._open_upstream(pair)
        except OSError as exc:
            log.error("relay: cannot reach the gRPC server: %s", exc)
            self._close(pair)
            return True
        pair.up.buffer += data
        self._flush(pair.up)
        return False

    def _hand_over(self, pair: _Pair, data: bytes, fds: list[int]) -> None:
        """Give a CRIU hook connection to the hook server, and forget it here."""
        client = pair.client
        self._close(pair, keep=client)
        connection = HookConnection(client, data, fds, replace(pair.credentials, pidfd=None))
        if self.on_hook is None:
            connection.close()
            return
        client.setblocking(True)
        try:
            self.on_hook(connection)
        except Exception:
            log.exception("relay: the CRIU hook server failed to take a connection")
            connection.close()

    def _read(self, direction: _Direction) -> None:
        if direction.eof or len(direction.buffer) >= MAX_BUFFERED:
            return
        try:
            data = direction.src.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            direction.eof = True
        direction.buffer += data
        self._flush(direction)

    @staticmethod
    def _flush(direction: _Direction) -> None:
        if direction.buffer:
            try:
                sent = direction.dst.send(direction.buffer)
            except (BlockingIOError, InterruptedError):
                return
            del direction.buffer[:sent]
        if direction.eof and not direction.buffer:
            try:
                direction.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _update_interest(self, pair: _Pair) -> None:
        """Wait to read where there is room, to write where bytes are pending."""
        if pair.silent:
            return   # still waiting for its first bytes
        for sock, incoming, outgoing in ((pair.client, pair.up, pair.down), (pair.upstream, pair.down, pair.up)):
            events = 0
            if not incoming.eof and len(incoming.buffer) < MAX_BUFFERED:
                events |= selectors.EVENT_READ
            if outgoing.buffer:
                events |= selectors.EVENT_WRITE
            try:
                registered = self._selector.get_key(sock).events
            except KeyError:
                registered = 0
            if events == registered:
                continue
            if not events:
                self._selector.unregister(sock)
            elif not registered:
                self._selector.register(sock, events, pair)
            else:
                self._selector.modify(sock, events, pair)

    def _close(self, pair: _Pair, keep: Optional[socket.socket] = None) -> None:
        """Close both ends of pair (all but keep, which only leaves the relay)."""
        if pair.client in self._pairs:   # counted once, however often closed
            self._connections -= 1
            self._by_uid[pair.uid] -= 1
            if not self._by_uid[pair.uid]:
                del self._by_uid[pair.uid]
        self._silent.pop(pair, None)
        for sock in (pair.client, pair.upstream):
            if sock is None:
                continue
            self._pairs.pop(sock, None)
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            if sock is not keep:
                sock.close()
        with self._lock:   # caller_pidfd() copies it under the same lock
            self._callers.pop(pair.peer, None)
            if pair.credentials.pidfd is not None:
                os.close(pair.credentials.pidfd)
                pair.credentials = replace(pair.credentials, pidfd=None)


def _with_program(credentials: PeerCredentials, client: socket.socket,
                  own_pidns: PidNamespace) -> PeerCredentials:
    """The credentials with the caller's name, pid namespace and a pidfd,
    read once per connection rather than per call."""
    try:
        program = procfs.read_stat(credentials.pid).comm
    except (OSError, KeeptimeError):  # gone already, or not ours to read
        program = "?"
    pidfd = pidns.peer_pidfd(client, credentials.pid)
    namespace = pidns.of_peer(client, credentials.pid, own_pidns, pidfd=pidfd) if pidfd is not None else None
    charged = None
    if credentials.uid != 0 and pidfd is not None:
        charged = userns.charged_uid(credentials.pid, credentials.uid)
        if not pidns.alive(pidfd):   # the pid was reused: charge the caller's own uid
            charged = None
    return replace(credentials, program=program, pidns=namespace, pidfd=pidfd,
                   charged_uid=charged if charged != credentials.uid else None)


def _private_directory(public_path: str) -> str:
    """A fresh root-only directory for the private sockets.

    It sits beside the public socket (`<socket>.private`), so a daemon killed
    with SIGKILL leaves nothing elsewhere and the next one, which already made
    sure no other keeptimed serves that socket, clears it. Where that path
    would push socket names past the 108-byte limit, a temporary directory
    is used instead.
    """
    beside = public_path + ".private"
    if len(os.path.join(beside, "c0000000000")) >= 100:
        return tempfile.mkdtemp(prefix="keeptimed-")
    shutil.rmtree(beside, ignore_errors=True)
    os.mkdir(beside, 0o700)
    return beside

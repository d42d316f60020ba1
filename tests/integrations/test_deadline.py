"""The total deadline of one request (integrations/backends/deadline.py) against a
local server that trickles its answer: requests' own timeout, per socket read,
never ends such a request."""

import socket
import threading
import time

import pytest
import requests

from integrations.backends.deadline import Deadline, DeadlineAdapter

BODY_LENGTH = 200
SECONDS_PER_BYTE = 0.1  # the whole trickled body would take 20 s
DEADLINE = 1
GUARD_SECONDS = 10


class TricklingServer:
    """Answers every request on a connection, keep-alive: "fast" at once, "body"
    with its status and headers at once and then its body a byte at a time,
    "headers" with its status line and then its header lines a byte at a time."""

    def __init__(self, mode):
        self.mode = mode
        self.connections = 0
        self.bytes_sent = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d/" % self.listener.getsockname()[1]

    def close(self):
        self.listener.close()

    def _accept(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection):
        with connection:
            try:
                while connection.recv(65536):
                    self._answer(connection)
            except OSError:
                pass  # the client shut the connection down

    def _answer(self, connection):
        status = b"HTTP/1.1 200 OK\r\n"
        headers = b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % BODY_LENGTH
        body = b"x" * BODY_LENGTH
        if self.mode == "fast":
            self._send(connection, status + headers + body)
        elif self.mode == "body":
            self._send(connection, status + headers)
            self._trickle(connection, body)
        else:
            self._send(connection, status)
            self._trickle(connection, headers + body)

    def _trickle(self, connection, data):
        for index in range(len(data)):
            time.sleep(SECONDS_PER_BYTE)
            self._send(connection, data[index : index + 1])

    def _send(self, connection, data):
        connection.sendall(data)
        self.bytes_sent += len(data)


@pytest.fixture
def server_for():
    servers = []

    def start(mode):
        servers.append(TricklingServer(mode))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def session():
    session = requests.Session()
    session.mount("http://", DeadlineAdapter())
    yield session
    session.close()


def get_within(session, url, seconds):
    """(deadline, response or the exception raised), from a thread that must finish
    well before the trickled answer would: without a total deadline it hangs."""
    outcome = {}

    def run():
        deadline = Deadline(seconds)
        try:
            with deadline:
                outcome["result"] = session.get(url, timeout=deadline.requests_timeout())
        except requests.RequestException as exc:
            outcome["result"] = exc
        outcome["deadline"] = deadline

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GUARD_SECONDS)
    assert not thread.is_alive(), "the request was still waiting for the trickled answer"
    return outcome["deadline"], outcome["result"]


def test_a_trickled_body_is_cut_off_at_the_deadline(server_for, session):
    server = server_for("body")

    deadline, result = get_within(session, server.url, DEADLINE)

    assert deadline.expired
    assert isinstance(result, requests.exceptions.ChunkedEncodingError), result
    assert server.bytes_sent < BODY_LENGTH, "the client stopped reading long before the end"


def test_trickled_headers_are_cut_off_at_the_deadline(server_for, session):
    server = server_for("headers")

    deadline, _ = get_within(session, server.url, DEADLINE)

    # http.client may take the headers cut short for a whole (empty) answer: only
    # `expired` tells the caller it is not one.
    assert deadline.expired
    assert server.bytes_sent < BODY_LENGTH


def test_an_answer_within_the_deadline_keeps_its_connection_for_the_next_request(server_for, session):
    server = server_for("fast")

    deadline, response = get_within(session, server.url, 0.3)
    assert (deadline.expired, response.status_code, len(response.content)) == (False, 200, BODY_LENGTH)
    time.sleep(0.5)  # past the first deadline: its watch must not touch the pooled connection
    deadline, response = get_within(session, server.url, DEADLINE)

    assert (deadline.expired, response.status_code) == (False, 200)
    assert server.connections == 1, "the connection went back to the pool intact and was reused"


def test_each_thread_has_its_own_deadline(server_for, session):
    slow, fast = server_for("body"), server_for("fast")
    results = {}

    def fetch(name, url):
        results[name] = get_within(session, url, DEADLINE)

    threads = [threading.Thread(target=fetch, args=("slow", slow.url))]
    threads += [threading.Thread(target=fetch, args=("fast%d" % i, fast.url)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GUARD_SECONDS + 1)

    assert results["slow"][0].expired
    for name in ("fast0", "fast1", "fast2"):
        deadline, response = results[name]
        assert (deadline.expired, response.status_code, len(response.content)) == (False, 200, BODY_LENGTH)


def test_one_deadline_at_a_time_per_thread():
    with Deadline(DEADLINE), pytest.raises(RuntimeError, match="already has a deadline"), Deadline(DEADLINE):
        pass

"""A caller that hangs up in the middle of a buffered Invoke.

The invocation runs in the caller's connection task and moves to a task of its own when that
task goes (kiln-engine's detach.rs): the environment must still finish the event and go back to
the pool, as Lambda's does. Driven over a raw socket, since an AWS client does not hang up on
purpose.
"""

import json
import socket
import urllib.request

import pytest

import kiln_e2e as k

# Long enough that the checks after the hang-up run while the event is still in flight, many
# times over.
SLEEP_MS = 4000


def test_a_caller_that_hangs_up_mid_invoke_leaves_the_environment_to_finish(kiln, lam, deploy):
    name = deploy(k.python_zip(), prefix="hangup", Timeout=30)
    # One concurrent execution: a call is served only once the environment is free again.
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    # The handler counts every call its environment served.
    assert k.invoke_json(lam, name, {"action": "count"})["count"] == 1

    body = json.dumps({"action": "sleep", "ms": SLEEP_MS}).encode()
    head = (
        "POST /2015-03-31/functions/%s/invocations HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (name, len(body))
    )
    with socket.create_connection(("127.0.0.1", kiln.port)) as s:
        s.sendall(head.encode() + body)
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(1)  # the event is in flight: no answer yet
    # The caller is gone; the environment still works on its event, so another call is
    # throttled rather than given a new environment.
    with pytest.raises(lam.exceptions.TooManyRequestsException):
        lam.invoke(FunctionName=name, Payload=json.dumps({"action": "count"}))

    served = {}

    def next_call_served():
        try:
            served["count"] = k.invoke_json(lam, name, {"action": "count"})["count"]
        except lam.exceptions.TooManyRequestsException:
            return False
        return True

    k.wait_for(next_call_served, timeout=60, interval=0.2, what="a call served after the hang-up")
    # The same environment, which served the abandoned event to its end (a new one would count 1).
    assert served["count"] == 3, served
    # Its REPORT was written for the abandoned event too: three calls, three REPORT lines, one
    # of them at least as long as the sleep.
    with urllib.request.urlopen(kiln.endpoint + "/kiln/v1/functions/%s/logs" % name, timeout=60) as resp:
        text = resp.read().decode(errors="replace")
    reports = [line for line in text.splitlines() if line.startswith("REPORT RequestId:")]
    assert len(reports) == 3, text
    durations = [float(line.split("\tDuration: ")[1].split(" ms")[0]) for line in reports]
    assert max(durations) >= SLEEP_MS, reports

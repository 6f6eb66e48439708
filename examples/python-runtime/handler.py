"""Example handler for the stdlib Python runtime in `bootstrap`.

The event's `action` field picks a behaviour so tests can drive the platform; without one the
handler greets `event["name"]` (or "world") and reports what the runtime told it.
"""

import os
import sys
import time

# Incremented on every call: a warm environment keeps counting, a fresh one starts at 1.
CALLS = 0


def handle(event, context):
    global CALLS
    CALLS += 1
    if not isinstance(event, dict):
        event = {"value": event}
    action = event.get("action")

    if action == "error":
        raise ValueError(event.get("message", "requested error"))
    if action == "sleep":
        ms = int(event.get("ms", 0))
        time.sleep(ms / 1000)
        return {"slept_ms": ms}
    if action == "exit":
        sys.stdout.flush()
        os._exit(int(event.get("code", 1)))
    if action == "print":
        text = event.get("text", "")
        print(text)
        return {"printed": text}
    if action == "echo":
        return event
    if action == "env":
        return dict(os.environ)
    if action == "cwd":
        return {"cwd": os.getcwd()}
    if action == "count":
        return {"count": CALLS}
    if action == "tmp_write":
        path = os.path.join("/tmp", event.get("file", "kiln-example.txt"))
        with open(path, "w") as f:
            f.write(event.get("text", ""))
        return {"written": path}
    if action == "tmp_read":
        path = os.path.join("/tmp", event.get("file", "kiln-example.txt"))
        try:
            with open(path) as f:
                return {"text": f.read()}
        except FileNotFoundError:
            return {"text": None}
    if action == "context":
        return {
            "aws_request_id": context.aws_request_id,
            "invoked_function_arn": context.invoked_function_arn,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "client_context": context.client_context,
            "trace_id": os.environ.get("_X_AMZN_TRACE_ID"),
        }

    return {
        "hello": event.get("name", "world"),
        "request_id": context.aws_request_id,
        "function_arn": context.invoked_function_arn,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "count": CALLS,
    }

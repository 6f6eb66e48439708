"""Fixtures of the end-to-end suite.

- `kiln`: one real `kiln serve` per test session (per xdist worker), on a free port and a
  temporary data dir; SIGTERM at the end.
- `kiln_factory`: starts extra servers owned by one test (persistence, restarts); all are
  stopped when that test ends.
- `lam` / `lam_raw`: boto3 Lambda clients for `kiln` (`lam_raw` skips botocore's own parameter
  validation, to reach the server's).
- `deploy`: creates a function with the suite's defaults, waits until it is Active and deletes it
  when the test ends.

When a test that used a server fails, the tail of that server's log is attached to the report.
"""

import pytest

import kiln_e2e as k


_SERVER_KEY = pytest.StashKey()


def _start_or_fail(server):
    try:
        server.start()
        return
    except RuntimeError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def kiln(request, tmp_path_factory):
    base = tmp_path_factory.mktemp("kiln")
    server = k.KilnServer(data_dir=base / "data", log_dir=base / "logs")
    _start_or_fail(server)
    request.config.stash[_SERVER_KEY] = server
    yield server
    server.stop()


@pytest.fixture
def kiln_factory(request, tmp_path):
    """start(name="own", extra_args=()) -> a KilnServer of this test's own, on its own data dir,
    started with `kiln serve ... <extra_args>`."""
    servers = []
    request.node.own_kiln_servers = servers

    def start(name="own", extra_args=(), nofile=None):
        base = tmp_path / name
        server = k.KilnServer(data_dir=base / "data", log_dir=base / "logs", extra_args=extra_args, nofile=nofile)
        servers.append(server)
        _start_or_fail(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def lam(kiln):
    return k.lambda_client(kiln.endpoint)


@pytest.fixture(scope="session")
def lam_raw(kiln):
    return k.lambda_client(kiln.endpoint, validate=False)


@pytest.fixture
def deploy(lam):
    """deploy(zip_bytes, name=None, prefix="fn", **create_kwargs) -> function name."""
    created = []

    def _deploy(zip_bytes, name=None, prefix="fn", **kw):
        name = name or k.unique_name(prefix)
        k.create(lam, name, zip_bytes, **kw)
        created.append(name)
        return name

    yield _deploy
    for name in created:
        try:
            lam.delete_function(FunctionName=name)
        except Exception:  # noqa: BLE001 - the test may have deleted it already
            pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tail of the servers' logs to the report of a failed test that used them."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    if "kiln" in item.fixturenames:
        server = item.config.stash.get(_SERVER_KEY, None)
        if server is not None:
            report.sections.append(("kiln server log (tail)", server.log_tail()))
    for server in getattr(item, "own_kiln_servers", []):
        report.sections.append(("own kiln server log (tail)", server.log_tail()))

"""Fixtures for integration tests against real third-party SIP software (see tests/rig).

Fixtures:
  kamailio          module-scoped started Kamailio provider (a free pool port, never office.flow's 5080)
  kamailio_tls      module-scoped provider on UDP+TCP (.port) and TLS (.tls_port), free ports
  kamailio_factory  function-scoped: start extra providers (own port, custom accounts, transports),
                    stopped after
  phone_factory     function-scoped: start baresip phones; every phone is stopped at teardown
  rig_ports         the shared PortAllocator (free ports for Callflow under test, etc.)
  rig_certs         session-scoped throwaway CA + certificate for 127.0.0.1 (tests/rig/certs.py);
                    TLS providers and phones use it, Callflow's own certificate can be issued from it

A missing kamailio/baresip skips the tests on a developer machine, but fails them under CI (CI set),
so a broken install can never turn the suite green by skipping it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import tests.rig  # noqa: F401
except ImportError:  # plain `pytest` does not put the repo root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.rig import (  # noqa: E402
    Certs,
    Kamailio,
    PhoneFactory,
    PortAllocator,
    baresip_binary,
    kamailio_binary,
    missing_modules,
    ports,
    tls_module_problem,
)
from tests.rig.certs import certs_problem, make_ca_and_cert  # noqa: E402
from tests.rig.proc import log_tail  # noqa: E402
from tests.rig.shim import shim_problem  # noqa: E402

_INTEGRATION_DIR = Path(__file__).resolve().parent


def under_ci() -> bool:
    """True when the CI variable says so (CI=true/1/yes); then a missing peer is an error."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_peer(name: str, problem: str | None) -> None:
    """Skip (developer machine) or fail (CI) when a peer program is not usable."""
    if problem is None:
        return
    message = f"{name} not usable: {problem}; install with `sudo bash .ci/install-peers.sh`"
    if under_ci():
        pytest.fail(f"CI: {message}", pytrace=False)
    pytest.skip(message)


def _override_note(variable: str) -> str:
    value = os.environ.get(variable)
    return f" ({variable}={value!r} is not an executable)" if value else ""


def kamailio_problem() -> str | None:
    if kamailio_binary():
        return None
    return f"no kamailio executable{_override_note('RIG_KAMAILIO')}"


def kamailio_tls_problem() -> str | None:
    return kamailio_problem() or tls_module_problem() or certs_problem()


def baresip_problem() -> str | None:
    if not baresip_binary():
        return f"no baresip executable{_override_note('RIG_BARESIP')}"
    missing = missing_modules()
    if missing:
        return f"missing baresip modules {missing}"
    return shim_problem()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/integration gets the `integration` marker (deselect with -m)."""
    for item in items:
        if _INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember each phase's report on the item so teardown can dump peer logs of failed tests."""
    report = yield
    setattr(item, f"rig_report_{report.when}", report)
    return report


def _test_failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "rig_report_call", None)
    return bool(report is not None and report.failed)


@pytest.fixture(scope="session")
def rig_ports() -> PortAllocator:
    """The process-wide port allocator (use it for Callflow's own listen ports too)."""
    return ports


@pytest.fixture(scope="session")
def rig_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it (ca_cert, cert, key, combined_pem).

    For Callflow's own TLS certificate use tests.rig.certs.issue_cert(rig_certs, "callflow").
    """
    require_peer("TLS certificates", certs_problem())
    return make_ca_and_cert(tmp_path_factory.mktemp("rig-certs"))


ALL_TRANSPORTS = ("udp", "tcp", "tls")


@pytest.fixture(scope="module")
def kamailio_tls(tmp_path_factory: pytest.TempPathFactory, rig_certs: Certs) -> Iterator[Kamailio]:
    """A started provider (same accounts and routing as `kamailio`) listening on UDP and TCP at
    `.port` (`.hostport`, `.tcp_hostport`) and on TLS at `.tls_port` (`.tls_hostport`), with the
    `rig_certs` server certificate. Free ports, so it can run next to `kamailio`."""
    require_peer("kamailio with TLS", kamailio_tls_problem())
    port = ports.port()
    provider = Kamailio(port, run_dir=tmp_path_factory.mktemp(f"kamailio-tls-{port}-"),
                        transports=ALL_TRANSPORTS, certs=rig_certs)
    try:
        provider.start()
        yield provider
    finally:
        provider.stop()


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    """A started provider (trunk1/s3cret with DID +15551230000, pstn/pstnpw) for this test module.

    Listens on a free port of the rig's pool, never on 127.0.0.1:5080, the provider flows/office.flow
    names (a server started from the README beside a test run would register to it): always use
    `kamailio.port` / `kamailio.hostport`.
    """
    require_peer("kamailio", kamailio_problem())
    port = ports.port()
    provider = Kamailio(port, run_dir=tmp_path_factory.mktemp(f"kamailio-{port}-"))
    try:
        provider.start()
        yield provider
    finally:
        provider.stop()


@pytest.fixture(autouse=True)
def _provider_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """When a test using `kamailio` (or `kamailio_tls`) fails, print what the provider logged
    during that test."""
    names = [n for n in ("kamailio", "kamailio_tls") if n in request.fixturenames]
    if not names:
        yield
        return
    providers: list[Kamailio] = [request.getfixturevalue(n) for n in names]
    marks = [p.log_mark() for p in providers]
    yield
    if _test_failed(request):
        for provider, mark in zip(providers, marks, strict=True):
            lines = provider.log_text()[mark:].splitlines()[-80:]
            sys.stderr.write(f"\n==== kamailio {provider.hostport} ({'/'.join(provider.transports)}) "
                             f"log during the test ({provider.log_path}) ====\n"
                             + "\n".join(lines) + "\n")


@pytest.fixture
def kamailio_factory(request: pytest.FixtureRequest,
                     tmp_path: Path) -> Iterator[Callable[..., Kamailio]]:
    """Start extra providers: factory(port=None, accounts=None, extra_accounts=None,
    transports=("udp",), ...) -> Kamailio. With "tls" in transports the provider gets `rig_certs`."""
    require_peer("kamailio", kamailio_problem())
    started: list[Kamailio] = []

    def start(port: int | None = None, **kwargs: Any) -> Kamailio:
        if "tls" in kwargs.get("transports", ()):
            require_peer("kamailio with TLS", kamailio_tls_problem())
            kwargs.setdefault("certs", request.getfixturevalue("rig_certs"))
        port = port or ports.port()
        provider = Kamailio(port, run_dir=tmp_path / f"kamailio-{port}", **kwargs)
        started.append(provider)
        return provider.start()

    try:
        yield start
    finally:
        for provider in started:
            provider.stop()
            if _test_failed(request):
                sys.stderr.write(f"\n==== kamailio {provider.hostport} log {provider.log_path} ====\n"
                                 f"{log_tail(provider.log_path, 80)}\n")


@pytest.fixture
def phone_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PhoneFactory]:
    """phone_factory(account_line, name=...) -> started Phone; all phones stop after the test.

    Phones whose account uses ;transport=tls get `rig_certs` (sip_certificate + sip_cafile)."""
    require_peer("baresip", baresip_problem())
    factory = PhoneFactory(tmp_path, certs=lambda: request.getfixturevalue("rig_certs"))
    try:
        yield factory
    finally:
        factory.stop_all()
        if _test_failed(request):
            for phone in factory.phones:
                sys.stderr.write(f"\n==== phone {phone.name} ({phone.aor}) events "
                                 f"{phone.event_types()} log {phone.log_path} ====\n"
                                 f"{log_tail(phone.log_path, 60)}\n")

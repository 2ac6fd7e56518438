"""The test rig's provider never takes the address flows/office.flow names as its provider, so the
README's first command (`callflow run flows/office.flow --listen 127.0.0.1:5060`) run beside a test
run does not register to the tests' Kamailio and take its calls. Kamailio is not started here: only
the address the rig would give it."""

from __future__ import annotations

from pathlib import Path

from flowlang import load_program
from tests.rig.kamailio import Kamailio

OFFICE = Path(__file__).resolve().parents[2] / "flows" / "office.flow"


def test_a_rig_provider_without_a_chosen_port_avoids_the_provider_office_flow_names(tmp_path: Path) -> None:
    office_providers = {(line.server_host, line.server_port) for line in load_program(OFFICE).lines.values()}
    assert office_providers, "office.flow names a provider"
    for n in range(3):
        provider = Kamailio(run_dir=tmp_path / str(n))
        assert (provider.host, provider.port) not in office_providers

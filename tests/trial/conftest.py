"""The trial specs (problems found trying the features as an operator) use the integration rig's
fixtures: Kamailio as the provider and baresip phones on 127.0.0.1 (tests/rig)."""

from tests.integration.conftest import (  # noqa: F401 - fixtures re-exported for tests/trial
    _provider_log_on_failure,
    kamailio,
    phone_factory,
    rig_certs,
    rig_ports,
)

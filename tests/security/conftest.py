"""The security suite's fixtures: the unit fixtures (moto with the template's resources, the fake OAuth partner,
the bare KMS of the crypto tests, a frozen clock, …) are the ones in tests/unit/conftest.py; the session `stack`
of the integration tests is in tests/conftest.py."""

from tests.unit.conftest import *  # noqa: F403

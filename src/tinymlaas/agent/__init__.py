"""The device agent: over-the-air updates for Linux devices and gateways.

``tinymlaas agent`` enrolls a device with a one-time code, then polls the Studio's
device-facing API (hawkBit's Direct Device Integration, :mod:`tinymlaas.contracts.ota`).
When a deployment is offered it downloads the release (resuming interrupted downloads),
verifies every byte against the signed manifest and the per-device ticket with the key
received at enrollment, installs into the A/B slot not in use, switches ``current``
atomically, runs a health check and commits, or rolls back. It reports every stage.

Modules, bottom up:

- :mod:`~tinymlaas.agent.store`: the agent's directory (``agent.json``, ``state.json``),
  atomic and durable writes.
- :mod:`~tinymlaas.agent.faults`: crash injection (``TINYMLAAS_AGENT_FAULT``) for tests.
- :mod:`~tinymlaas.agent.verify`: signatures, ticket binding, anti-rollback, digests.
- :mod:`~tinymlaas.agent.slots`: safe unpacking into a slot, the atomic switch, recovery.
- :mod:`~tinymlaas.agent.health`: the health check of an installed release.
- :mod:`~tinymlaas.agent.ddi`: the HTTP client of the device-facing API.
- :mod:`~tinymlaas.agent.runner`: the state machine tying them together.
- :mod:`~tinymlaas.agent.cli`: ``tinymlaas agent``.

The agent installs without the server stack: it imports the standard library, httpx,
pydantic, cryptography, numpy and tinymlaas' contracts and errors, nothing else
(import-linter's ``agent-without-server-stack`` contract holds this).
"""

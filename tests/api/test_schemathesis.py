"""Property-based requests generated from the OpenAPI spec (Schemathesis).

Whatever is sent, valid or not, the server never answers with a 5xx, and every answer
conforms to the spec: a documented status code, content type, headers and body schema;
invalid requests are refused and valid ones are not refused for their form.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from api_support import assert_error_shape
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode

from tinymlaas.client import Client

MAX_EXAMPLES = 6

#: Checks every operation's answers must pass, whatever was sent.
CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance,
               response_headers_conformance, response_schema_conformance]

#: Operations whose valid-looking requests are still refused (4xx) for what no schema can
#: express: the request's meaning, not its form. ``positive_data_acceptance`` is left out
#: for them only; every other check still runs.
SEMANTIC_REFUSALS = {
    # The body is a model or dataset file: random bytes are not a valid ONNX/.npz/... (400).
    "POST /api/v1/models", "POST /api/v1/datasets",
    # Passwords are scored against the address, the name and common passwords (400).
    "POST /api/v1/auth/register",
    # A pipeline names transformers and their params, checked against the registry (400).
    "POST /api/v1/runs", "POST /api/v1/templates",
    # The URL's host is resolved and internal addresses are refused (400).
    "POST /api/v1/webhooks",
    # Registering a command transformer runs admission checks on the command (400/403).
    "POST /api/v1/transformers",
    # A search names a model and a dataset of the project (404 for random names).
    "POST /api/v1/searches",
    # A comparison needs finished runs of the same dataset (400).
    "POST /api/v1/runs/compare",
    # A device name may not shadow a catalog device (400).
    "POST /api/v1/devices",
    # A site's dataset needs a site of the project with a live worker, and a broker (404/409).
    "POST /api/v1/datasets/site",
    # Repo ids and in-repo file paths are checked by the Hub client's rules (400).
    "POST /api/v1/models/hub", "POST /api/v1/datasets/hub",
    # A rollout needs a group with devices, and a run that ended in an installer (400/409).
    "POST /api/v1/fleet/rollouts", "POST /api/v1/fleet/releases",
    # Samples for a device are an NPZ file: random bytes are not one (400).
    "POST /api/v1/fleet/devices/{ref}/inference/samples",
    # A device's outputs are an NPZ in base64 (400).
    "POST /ddi/{tenant}/controller/v1/{controller_id}/inference/{job_id}/result",
    # The site endpoints take a site's token, never a user's (401).
    "POST /api/v1/sites/{name}/heartbeat", "POST /api/v1/sites/{name}/blob-urls",
    "GET /api/v1/sites/{name}/worker-config", "POST /api/v1/sites/{name}/jobs/{job_id}/claim",
    "POST /api/v1/sites/{name}/jobs/{job_id}/heartbeat",
    "POST /api/v1/sites/{name}/jobs/{job_id}/result",
    # A blob URL is valid only as the server signed it (403), for a blob it stores (404).
    "GET /api/v1/blobs/{sha256}", "PUT /api/v1/blobs/{sha256}",
}
#: A list's ``cursor`` is a position the server signed for its own pages (docs/api.md#pages):
#: one made up from the schema's pattern is refused (422) for what it means, not its form,
#: so ``positive_data_acceptance`` is left out for the requests that send one.
SIGNED = "cursor"
#: Operations that need the Hugging Face Hub, unreachable here on purpose: they answer a
#: documented 503, so ``not_a_server_error`` is left out for them (the 503's shape and
#: status are still checked).
OFFLINE = {"POST /api/v1/models/hub", "POST /api/v1/datasets/hub"}


def _operations(app):
    # The API refuses NUL characters in any text (URLs, bodies; see the spec's description):
    # a rule of every string, so generated strings leave them out rather than every schema
    # repeating it.
    config = schemathesis.Config.from_dict({"generation": {"allow-x00": False}})
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app, config=config)
    return [result.ok() for result in schema.get_all_operations()]


def _checks(label: str, mode: GenerationMode) -> list:
    checks = [check for check in CONFORMANCE
              if not (label in OFFLINE and check is not_a_server_error)]
    if mode is GenerationMode.NEGATIVE:
        return [*checks, negative_data_rejection]
    return checks if label in SEMANTIC_REFUSALS else [*checks, positive_data_acceptance]


def _check_operation(operation, mode: GenerationMode, auth: dict[str, str],
                     failures: list[str]) -> None:
    """Up to MAX_EXAMPLES requests to ``operation``; what fails a check goes to ``failures``."""
    checks = _checks(operation.label, mode)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        # A request negated in its headers may be one without a token on purpose: adding the
        # token back would send a valid request that the check expects refused.
        negated_headers = (case.meta is not None
                           and case.meta.is_negative_at(ParameterLocation.HEADER))
        made_up = mode is GenerationMode.POSITIVE and SIGNED in (case.query or {})
        try:
            response = case.call_and_validate(
                headers=None if negated_headers else auth,
                checks=[c for c in checks if not (made_up and c is positive_data_acceptance)])
        except FailureGroup as exc:
            failures.append(f"{operation.label}: {exc}"[:3000])
            return
        if response.status_code >= 400:
            assert_error_shape(response.json())
        if response.status_code == 503:
            assert operation.label in OFFLINE, operation.label
            assert_error_shape(response.json(), "service_unavailable")

    try:
        check()
    except Unsatisfiable:
        # Nothing invalid can be sent to this operation (e.g. no parameters at all).
        assert mode is GenerationMode.NEGATIVE, operation.label


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_conformance(app, alice: Client, alice_model, mode: GenerationMode,
                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Hub imports must never leave the machine: offline, with an empty cache (a documented 503).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    auth = {"Authorization": f"Bearer {alice.token}"}
    operations = _operations(app)
    assert len(operations) >= 40
    failures: list[str] = []
    for operation in operations:
        if operation.path.endswith("/events"):
            continue  # a stream that stays open while a run is live: covered by the run tests
        _check_operation(operation, mode, auth, failures)
    assert failures == [], "\n\n".join(failures)

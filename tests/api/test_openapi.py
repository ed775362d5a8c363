"""The OpenAPI spec tells the truth: what a generated client reads there is what the server
sends and accepts (downloads' media types, JSON errors, ``Allow`` on 405s, the body rules)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from api_support import API, FAST, assert_error_shape
from fastapi.testclient import TestClient

from tinymlaas.client import Client

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def spec(http: TestClient) -> dict[str, Any]:
    return http.get(f"{API}/openapi.json").json()


def _schema(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return spec["components"]["schemas"][name]


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with a ``$ref`` (or a nullable ``anyOf`` of one) followed."""
    for option in schema.get("anyOf", [schema]):
        if "$ref" in option:
            return _schema(spec, option["$ref"].rsplit("/", 1)[1])
    return schema


def _body_schema(spec: dict[str, Any], path: str) -> dict[str, Any]:
    content = spec["paths"][f"{API}{path}"]["post"]["requestBody"]["content"]
    return _resolve(spec, content["application/json"]["schema"])


# 1. downloads declare the media types they are sent as ------------------------------------


def _download_types(spec: dict[str, Any], path: str) -> dict[str, Any]:
    return spec["paths"][f"{API}{path}"]["get"]["responses"]["200"]["content"]


def test_downloads_declare_their_media_types(spec: dict[str, Any]) -> None:
    binary = {"type": "string", "format": "binary"}
    model = _download_types(spec, "/models/{ref}/file")
    assert set(model) == {"application/onnx", "application/zip"}
    assert all(entry["schema"] == binary for entry in model.values())
    assert set(_download_types(spec, "/datasets/{ref}/file")) == {"application/zip"}
    for path in ("/runs/{ref}/output", "/runs/{ref}/artifacts/{sha}"):
        types = _download_types(spec, path)
        assert {"application/onnx", "application/zip", "application/octet-stream"} <= set(types)
        assert types["application/zip"]["schema"] == binary
    assert _download_types(spec, "/runs/{ref}/export") == {"application/zip": {"schema": binary}}


def test_a_download_is_sent_as_a_declared_type(http: TestClient, spec: dict[str, Any],
                                               alice: Client, alice_model, alice_data) -> None:
    auth = {"Authorization": f"Bearer {alice.token}"}
    for path, ref in (("/models/{ref}/file", alice_model.id),
                      ("/datasets/{ref}/file", alice_data.id)):
        response = http.get(f"{API}{path.format(ref=ref)}", headers=auth)
        assert response.status_code == 200
        sent = response.headers["content-type"].split(";")[0]
        assert sent in _download_types(spec, path), (path, sent)
    model = http.get(f"{API}/models/{alice_model.id}/file", headers=auth)
    assert model.headers["content-type"] == "application/onnx"
    assert "X-Content-SHA256" in spec["paths"][f"{API}/models/{{ref}}/file"]["get"][
        "responses"]["200"]["headers"]


# 2. the step log's errors are JSON --------------------------------------------------------


def test_step_log_documents_json_errors(spec: dict[str, Any]) -> None:
    responses = spec["paths"][f"{API}/runs/{{ref}}/steps/{{index}}/log"]["get"]["responses"]
    assert set(responses["200"]["content"]) == {"text/plain"}
    for code in ("401", "404", "422"):
        assert responses[code]["content"] == {"application/json": {"schema": {
            "$ref": "#/components/schemas/ErrorBody"}}}, code


def test_step_log_errors_are_sent_as_json(http: TestClient, alice: Client, alice_model,
                                          alice_data) -> None:
    auth = {"Authorization": f"Bearer {alice.token}"}
    missing = http.get(f"{API}/runs/no-such-run/steps/0/log", headers=auth)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert_error_shape(missing.json(), "not_found")
    bad_index = http.get(f"{API}/runs/no-such-run/steps/-1/log", headers=auth)
    assert bad_index.status_code == 422
    assert_error_shape(bad_index.json(), "validation_error")


# 3. a 405 lists every method of the path --------------------------------------------------


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("DELETE", "/models", "GET, POST"),
    ("PUT", "/runs", "GET, POST"),
    ("PATCH", "/webhooks", "GET, POST"),
    ("PUT", "/projects/p1/members", "GET, POST"),
    ("PUT", "/runs/r1", "GET, DELETE"),
    ("PUT", "/users/me/tokens", "GET, POST"),
    ("POST", "/models/m1/file", "GET"),
    ("DELETE", "/auth/login", "POST"),
])
def test_405_allow_lists_every_method(http: TestClient, method: str, path: str,
                                      allowed: str) -> None:
    response = http.request(method, f"{API}{path}")
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert_error_shape(response.json(), "method_not_allowed")


def test_405_allow_covers_the_spec(http: TestClient, spec: dict[str, Any]) -> None:
    """For every path of the spec, a method it lacks gets a 405 whose ``Allow`` names every
    method the spec gives it."""
    checked = 0
    for template, operations in spec["paths"].items():
        declared = {m.upper() for m in operations if m in METHODS}
        unsupported = sorted(m.upper() for m in METHODS - set(operations))
        path = re.sub(r"\{[^}]+\}", "x1", template)
        response = http.request(unsupported[0], path)
        if response.status_code != 405:
            continue  # another route of that shape takes the method (/runs/{ref} vs /compare)
        allow = {m.strip() for m in response.headers["allow"].split(",")}
        assert declared <= allow, (template, response.headers["allow"])
        checked += 1
    assert checked >= 30


# 4. rules of the request bodies are in the schema -----------------------------------------


def test_exactly_one_of_is_in_the_schema(spec: dict[str, Any]) -> None:
    run = _body_schema(spec, "/runs")
    assert [branch["required"] for branch in run["oneOf"]] == [["pipeline"], ["template"]]
    transformer = _body_schema(spec, "/transformers")
    assert [branch["required"] for branch in transformer["oneOf"]] == [["command"], ["image"]]


def test_pipelines_have_a_closed_schema(spec: dict[str, Any]) -> None:
    pipeline = _resolve(spec, _body_schema(spec, "/runs")["properties"]["pipeline"])
    assert pipeline["additionalProperties"] is False
    assert {"name", "steps", "evaluate", "device", "model", "dataset"} <= set(
        pipeline["properties"])
    assert pipeline["properties"]["evaluate"]["type"] == "boolean"
    template = _resolve(spec, _body_schema(spec, "/templates")["properties"]["pipeline"])
    assert template == pipeline
    step = _schema(spec, "PipelineStepSpec")
    assert step["additionalProperties"] is False and step["required"] == ["transformer"]


def test_invalid_pipelines_are_400(http: TestClient, alice: Client, alice_model) -> None:
    """What the pipeline schema refuses is a 400, as pipelines always were (from a template
    or a YAML file too), with the schema's errors in the details."""
    auth = {"Authorization": f"Bearer {alice.token}"}
    for pipeline in ({**FAST, "stepz": ["fuse"]},
                     {"steps": [{"transformer": "fuse", "paramz": {}}]},
                     {"steps": ["fuse"], "evaluate": "yes"},
                     {"steps": [{"fuse": {}, "quantize-dynamic": {}}]}):
        response = http.post(f"{API}/runs", headers=auth,
                             json={"model": alice_model.id, "pipeline": pipeline})
        assert response.status_code == 400, pipeline
        body = assert_error_shape(response.json(), "invalid_input") or response.json()
        assert all(e["loc"][:2] == ["body", "pipeline"] for e in body["details"]["errors"])
    template = http.post(f"{API}/templates", headers=auth,
                         json={"name": "t1", "pipeline": {**FAST, "stepz": []}})
    assert template.status_code == 400
    neither = http.post(f"{API}/runs", headers=auth, json={"model": alice_model.id})
    assert neither.status_code == 422
    assert alice.list_runs() == []


def test_short_and_long_step_forms_are_accepted(http: TestClient, alice: Client) -> None:
    auth = {"Authorization": f"Bearer {alice.token}"}
    pipeline = {"steps": ["fuse", {"quantize-dynamic": {}},
                          {"transformer": "fuse", "params": {}, "timeout_s": 60}],
                "evaluate": False}
    response = http.post(f"{API}/templates", headers=auth,
                         json={"name": "forms", "pipeline": pipeline})
    assert response.status_code == 201, response.json()
    steps = response.json()["pipeline"]["steps"]
    assert [step["transformer"] for step in steps] == ["fuse", "quantize-dynamic", "fuse"]
    assert steps[2]["timeout_s"] == 60


def test_emails_and_urls_have_formats(spec: dict[str, Any]) -> None:
    for name in ("UserCreate", "LoginRequest", "ShareCreate"):
        email = _schema(spec, name)["properties"]["email"]
        assert email["format"] == "email" and "pattern" in email, name
    url = _schema(spec, "WebhookCreate")["properties"]["url"]
    assert url["format"] == "uri" and url["pattern"].startswith("^https?://")


@pytest.mark.parametrize("address", ["nope", "a@b", "a b@example.com", "a@exa mple.com",
                                     ".a@example.com", "a..b@example.com", "a@-x.example.com"])
def test_bad_email_addresses_are_422(http: TestClient, alice: Client, address: str) -> None:
    auth = {"Authorization": f"Bearer {alice.token}"}
    for path, body, headers in (
            ("/auth/register", {"email": address, "password": "correct horse battery"}, {}),
            ("/auth/login", {"email": address, "password": "correct horse battery"}, {}),
            (f"/projects/{alice.me().default_project}/members", {"email": address}, auth)):
        response = http.post(f"{API}{path}", json=body, headers=headers)
        assert response.status_code == 422, (path, address, response.json())
        assert_error_shape(response.json(), "validation_error")


def test_good_email_addresses_register(http: TestClient) -> None:
    for address in ("ada.lovelace+tiny@example.co.uk", "x_y-z@sub-domain.example.org"):
        response = http.post(f"{API}/auth/register",
                             json={"email": address, "password": "correct horse battery"})
        assert response.status_code == 202, response.json()


def test_webhook_urls_must_be_http(http: TestClient, alice: Client) -> None:
    auth = {"Authorization": f"Bearer {alice.token}"}
    for url in ("ftp://ci.example.com/hook", "not a url at all", "https://ci example.com/"):
        response = http.post(f"{API}/webhooks", headers=auth, json={"url": url})
        assert response.status_code == 422, url
        assert_error_shape(response.json(), "validation_error")


# 5. integers refuse booleans --------------------------------------------------------------


@pytest.mark.parametrize("field", ["seed", "calibration_size"])
@pytest.mark.parametrize("value", [False, True, "3"])
def test_integer_fields_refuse_booleans(http: TestClient, alice: Client, field: str,
                                        value: object) -> None:
    auth = {"Authorization": f"Bearer {alice.token}"}
    response = http.post(f"{API}/datasets/builtin", headers=auth, json={field: value})
    assert response.status_code == 422, (field, value, response.json())
    assert_error_shape(response.json(), "validation_error")


def test_whole_numbers_stay_integers(http: TestClient, alice: Client) -> None:
    auth = {"Authorization": f"Bearer {alice.token}"}
    response = http.post(f"{API}/datasets/builtin", headers=auth,
                         json={"seed": 3.0, "calibration_size": 64, "name": "d3"})
    assert response.status_code == 201, response.json()
    assert response.json()["splits"]["seed"] == 3


def test_device_numbers_refuse_booleans(http: TestClient, alice: Client) -> None:
    auth = {"Authorization": f"Bearer {alice.token}"}
    base = {"name": "board-1", "arch": "cortex-m4", "clock_mhz": 80, "ram_kb": 256,
            "flash_kb": 1024}
    for field in ("ram_kb", "flash_kb", "clock_mhz", "macs_per_cycle"):
        response = http.post(f"{API}/devices", headers=auth, json={**base, field: True})
        assert response.status_code == 422, field
    hub = http.post(f"{API}/models/hub", headers=auth,
                    json={"repo_id": "org/m", "filename": "m.onnx", "input_shape": [True, 8]})
    assert hub.status_code == 422
    assert http.post(f"{API}/devices", headers=auth, json=base).status_code == 201


def test_the_api_accepts_every_field_of_a_pipeline() -> None:
    """The remote CLI and SDK send pipelines as the domain dumps them: a field the API's
    schema lacks would refuse every such run with 'Extra inputs are not permitted'."""
    from tinymlaas.api.schemas import PipelineSpec
    from tinymlaas.domain import Pipeline

    assert set(PipelineSpec.model_fields) == set(Pipeline.model_fields)
    dumped = Pipeline(steps=[], evaluation_split="holdout").model_dump(mode="json")
    assert PipelineSpec.model_validate(dumped).evaluation_split == "holdout"

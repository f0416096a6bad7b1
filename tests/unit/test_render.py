"""Template evaluation: `params` bound as in striv, errors with positions in the user's template."""

from __future__ import annotations

from types import ModuleType

import pytest

from contracts.payloads import PayloadError
from services.renderer.render import JSONNET_ENGINES, RenderError, evaluate_template, render_payload


@pytest.fixture(params=JSONNET_ENGINES, ids=lambda engine: engine.__name__)
def engine(request: pytest.FixtureRequest) -> ModuleType:
    """Positions must come out the same from go-jsonnet and the C++ jsonnet, whichever is installed."""
    engine_module: ModuleType = request.param
    return engine_module


def render_error(template: str, engine: ModuleType, execution: str | None = None) -> RenderError:
    with pytest.raises(RenderError) as raised:
        evaluate_template(template, {}, execution=execution, engine=engine)
    return raised.value


STRIV_NOMAD_TEMPLATE = """{
  Name: 'example',
  TaskGroups: [{
    Name: 'group',
    Tasks: [{
      Driver: 'docker',
      Config: { image: 'alpine:latest', args: ['-c', 'echo "' + params.greeting + '"'] },
    }],
  }],
  Type: 'batch',
}"""


def test_params_is_bound_in_a_plain_expression_as_striv_templates_expect() -> None:
    payload = evaluate_template(
        "{command: ['echo', params.greeting], env: {DB: params.db.host}}",
        {
            "greeting": "hello",
            "db": {"host": "db.acme"},
        },
    )
    assert payload == {"command": ["echo", "hello"], "env": {"DB": "db.acme"}}


def test_a_striv_nomad_template_renders_unchanged() -> None:
    payload = render_payload("example", "nomad", STRIV_NOMAD_TEMPLATE, {"greeting": "Luna"})
    assert payload["TaskGroups"][0]["Tasks"][0]["Config"]["args"] == ["-c", 'echo "Luna"']
    assert payload["Type"] == "batch"


def test_a_template_may_define_its_own_locals_and_shadow_params() -> None:
    template = "local params = {x: 'mine'};\n{command: params.x}"
    assert evaluate_template(template, {"x": "theirs"}) == {"command": "mine"}


def test_a_runtime_error_reports_the_line_and_column_of_the_users_template(engine: ModuleType) -> None:
    error = render_error("{\n  command: ['echo'],\n  env: {A: params.missing},\n}", engine, "hello")
    assert (error.line, error.column) == (3, 12)
    assert error.message.lower() == (
        "template of execution 'hello' at line 3, column 12: field does not exist: missing"
    )


def test_a_syntax_error_reports_the_line_and_column_of_the_users_template(engine: ModuleType) -> None:
    error = render_error("{\n  command: 1 +\n}", engine, "hello")
    assert (error.line, error.column) == (3, 1)
    assert error.message.lower().startswith("template of execution 'hello' at line 3, column 1: unexpected")
    assert "STATIC ERROR" not in error.message and "payload_template" not in error.message


def test_an_unknown_variable_is_reported_where_it_is_used(engine: ModuleType) -> None:
    error = render_error("{\n\n    command: nope,\n}", engine)
    assert (error.line, error.column) == (3, 14)
    assert error.message == "template at line 3, column 14: Unknown variable: nope"


def test_an_error_spanning_lines_reports_where_it_starts(engine: ModuleType) -> None:
    error = render_error("{\n  a: [\n 1\n ] + 1\n}", engine)
    assert (error.line, error.column) == (2, 6)


def test_an_error_call_in_the_template_keeps_its_message(engine: ModuleType) -> None:
    error = render_error("{command: error 'customer needs a region'}", engine)
    assert error.message == "template at line 1, column 11: customer needs a region"


@pytest.mark.parametrize("keyword", ["import", "importstr", "importbin"])
def test_imports_are_refused_so_templates_cannot_read_the_renderers_files(
    engine: ModuleType, keyword: str
) -> None:
    error = render_error(f"{{\n  command: {keyword} '/etc/passwd',\n}}", engine)
    assert (error.line, error.column) == (2, 12)
    assert "cannot import '/etc/passwd': imports are not available in payload templates" in error.message


def test_a_secret_param_reaches_the_template_still_encrypted() -> None:
    secret = {"type": "secret", "encrypted": "Y2lwaGVy"}
    payload = render_payload(
        "db", "local", "{command: ['psql'], env: {PGPASSWORD: params.pw}}", {"pw": secret}
    )
    assert payload["env"] == {"PGPASSWORD": secret}


def test_a_rendered_payload_the_driver_refuses_names_the_field() -> None:
    with pytest.raises(PayloadError) as raised:
        render_payload("hello", "local", "{command: 'true', timeout: 5}", {})
    assert raised.value.field == "timeout"
    assert str(raised.value) == "local payload field 'timeout': unknown field, not allowed"

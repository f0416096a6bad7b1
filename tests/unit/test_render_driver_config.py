"""An execution's `driver_config.nomad_url` (striv's way of naming the cluster) reaches the payload."""

from __future__ import annotations

from services.renderer.render import render_payload

JOB = "{TaskGroups: [{Name: 'g', Tasks: [{Name: 't', Driver: 'raw_exec'}]}]}"


def test_the_execution_s_nomad_url_fills_a_payload_that_names_no_cluster() -> None:
    payload = render_payload("n", "nomad", JOB, {}, {"nomad_url": "http://nomad.example:4646"})
    assert payload["nomad_url"] == "http://nomad.example:4646"


def test_a_template_s_own_nomad_url_wins_over_the_execution_s() -> None:
    template = "{nomad_url: 'http://mine:4646'} + " + JOB
    payload = render_payload("n", "nomad", template, {}, {"nomad_url": "http://theirs:4646"})
    assert payload["nomad_url"] == "http://mine:4646"


def test_driver_config_leaves_other_drivers_payloads_alone() -> None:
    payload = render_payload("l", "local", "{command: 'true'}", {}, {"nomad_url": "http://x:4646"})
    assert "nomad_url" not in payload

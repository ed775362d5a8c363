"""``tinymlaas keys``: show the project's public signing key, rotate it after a confirmation."""

from __future__ import annotations

import json


def test_keys_show_and_rotate(cli) -> None:
    code, out, err = cli("keys", "show", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert first["project"] == "default" and len(first["fingerprint"]) == 64
    code, out, _ = cli("keys", "show")
    assert code == 0 and first["fingerprint"] in out and "BEGIN PUBLIC KEY" in out

    code, out, err = cli("keys", "rotate", "--yes", "--json")
    assert code == 0, err
    rotated = json.loads(out)
    assert rotated["fingerprint"] != first["fingerprint"]
    assert rotated["retired"] == [first["fingerprint"]]

    code, _, err = cli("keys", "show", "--project", "nope")
    assert code != 0 and "project 'nope' not found" in err

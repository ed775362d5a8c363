"""``tinymlaas fleet`` and ``deploy`` without a server: the local data directory's fleet."""

from __future__ import annotations

import json


def test_fleet_commands_on_the_local_database(cli) -> None:
    code, out, err = cli("fleet", "enroll", "kiosk", "--group", "lobby", "--group", "north",
                         "--tag", "floor=2", "--profile", "raspberry-pi-4", "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made["groups"] == ["lobby", "north"] and made["tags"] == {"floor": "2"}
    assert made["profile"] == "raspberry-pi-4" and made["enrollment_code"].startswith("tmle_")

    code, out, err = cli("fleet", "enroll", "kiosk", "--renew", "--json")
    assert code == 0, err
    assert json.loads(out)["enrollment_code"] != made["enrollment_code"]

    code, out, _ = cli("fleet", "list", "--group", "north", "--json")
    assert [d["name"] for d in json.loads(out)] == ["kiosk"]
    code, out, _ = cli("fleet", "list", "--group", "south", "--json")
    assert json.loads(out) == []

    code, out, _ = cli("fleet", "show", "kiosk", "--json")
    stages = [e["stage"] for e in json.loads(out)["history"]]
    assert stages == ["re-enrolling", "created"]

    # refusals: a name taken, an unknown profile, bad waves, a group without devices
    assert cli("fleet", "enroll", "kiosk")[0] == 4
    code, _, err = cli("fleet", "enroll", "other", "--profile", "no-such-board")
    assert code == 3 and "unknown device" in err
    code, _, err = cli("deploy", "no-run", "--group", "lobby", "--waves", "50,20")
    assert code == 2 and "rising percentages" in err
    code, _, err = cli("fleet", "rollout", "rol-missing")
    assert code == 3 and "not found" in err

    code, out, err = cli("fleet", "revoke", "kiosk", "--json")
    assert code == 0, err
    assert json.loads(out)["revoked_at"] is not None
    code, out, _ = cli("fleet", "list")
    assert "revoked" in out

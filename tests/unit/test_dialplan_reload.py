"""Reload applies declarations as a diff: unchanged lines keep their registration, changed ones
re-register, removed ones go, and a removed user's phones lose their bindings."""

from __future__ import annotations

import asyncio

from flowlang import compile_source
from runtime.dialplan import Dialplan
from runtime.engine import Engine
from runtime.registrar import Binding
from runtime.transport import ListenSpec


def program(password: str = "s3cret", with_line: bool = True, users: str = "alice bob"):  # type: ignore[no-untyped-def]
    text = "".join(f'user {u} password "{u}-pw"\n' for u in users.split())
    if with_line:
        text += f'line itsp1 {{\n server "127.0.0.1:9"\n username "trunk1"\n password "{password}"\n' \
                f' register every 60s\n}}\non incoming from user any accept to line itsp1\n'
    text += "on incoming from line any accept to user alice\n" if with_line else ""
    return compile_source(text)


async def scenario() -> dict[str, object]:
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(37400, 37499))
    await engine.start()
    plan = Dialplan(engine)
    out: dict[str, object] = {}
    out["first"] = plan.load(program())
    first_line = engine.lines["itsp1"]
    out["same"] = plan.load(program())
    out["same_line_kept"] = engine.lines["itsp1"] is first_line
    out["changed"] = plan.load(program(password="new"))
    out["changed_line_new"] = engine.lines["itsp1"] is not first_line and first_line.stopped
    engine.registrar.store.put(Binding("bob", "sip:bob@127.0.0.1:5999", ("127.0.0.1", 5999), "udp",
                                       engine.now() + 600, "c", 1))
    out["removed"] = plan.load(program(with_line=False, users="alice"))
    out["lines_left"] = list(engine.lines)
    out["bob_bindings"] = engine.registrar.lookup("bob", engine.now())
    await engine.stop()
    return out


def test_reload_applies_only_what_changed() -> None:
    out = asyncio.run(scenario())
    assert out["first"] == {"users+": ["alice", "bob"], "users-": [], "lines+": ["itsp1"], "lines~": [], "lines-": []}
    assert out["same"] == {"users+": [], "users-": [], "lines+": [], "lines~": [], "lines-": []}
    assert out["same_line_kept"] is True
    assert out["changed"]["lines~"] == ["itsp1"]  # type: ignore[index]
    assert out["changed_line_new"] is True
    assert out["removed"]["lines-"] == ["itsp1"] and out["removed"]["users-"] == ["bob"]  # type: ignore[index]
    assert out["lines_left"] == [] and out["bob_bindings"] == []

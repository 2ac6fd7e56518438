"""The location service: bindings added, refreshed, removed and expired as RFC 3261 section 10 says."""

from __future__ import annotations

from runtime.registrar import MAX_CONTACT_BYTES, MAX_EXPIRES, MIN_EXPIRES, Registrar
from runtime.sip.message import Headers, Request

SRC = ("192.0.2.7", 5062)


def register(*contacts: str, expires: str | None = None, cseq: int = 1, call_id: str = "reg-1") -> Request:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKr1")
    h.add("From", "<sip:alice@pbx>;tag=f1")
    h.add("To", "<sip:alice@pbx>")
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{cseq} REGISTER")
    for c in contacts:
        h.add("Contact", c)
    if expires is not None:
        h.add("Expires", expires)
    h.add("Content-Length", "0")
    return Request("REGISTER", "sip:pbx", h)


def test_register_adds_a_binding_and_lists_it_in_the_200() -> None:
    reg = Registrar()
    resp, added, removed = reg.register("alice", register("<sip:alice@192.0.2.7:5062>", expires="600"), SRC, "udp", 0)
    assert resp.status == 200 and added == ["sip:alice@192.0.2.7:5062"] and removed == []
    assert resp.headers.get("contact") == "<sip:alice@192.0.2.7:5062>;expires=600"
    (binding,) = reg.lookup("alice", 1)
    assert binding.source == SRC and binding.transport == "udp"


def test_contact_parameters_are_kept_in_the_binding() -> None:
    reg = Registrar()
    reg.register("alice", register("<sip:+19725552222@gw1.example.net;unknownparam>"), SRC, "udp", 0)
    assert reg.lookup("alice", 1)[0].contact == "sip:+19725552222@gw1.example.net;unknownparam"


def test_binding_expires() -> None:
    reg = Registrar()
    reg.register("alice", register("<sip:alice@192.0.2.7>", expires="60"), SRC, "udp", 0)
    assert reg.lookup("alice", 59) and not reg.lookup("alice", 61)


def test_a_lapsed_binding_is_removed_and_reported_by_the_sweep() -> None:
    reg = Registrar()
    reg.register("alice", register("<sip:alice@192.0.2.7>", expires="60"), SRC, "udp", 0)
    assert reg.expire(59) == []
    (gone,) = reg.expire(61)
    assert (gone.user, gone.contact) == ("alice", "sip:alice@192.0.2.7")
    assert reg.expire(62) == [] and reg.store.users() == []


def test_each_contact_keeps_its_own_expiry() -> None:
    reg = Registrar()
    reg.register("alice", register("<sip:desk@192.0.2.7>;expires=120", "<sip:soft@192.0.2.8>", expires="600"),
                 SRC, "udp", 0)
    assert [b.contact for b in reg.lookup("alice", 100)] == ["sip:soft@192.0.2.8", "sip:desk@192.0.2.7"]
    assert [b.contact for b in reg.lookup("alice", 121)] == ["sip:soft@192.0.2.8"]


def test_an_expiry_above_the_maximum_is_cut_down_to_it() -> None:
    resp, _, _ = Registrar().register("alice", register("<sip:a@192.0.2.7>", expires="999999"), SRC, "udp", 0)
    assert resp.headers.get("contact") == f"<sip:a@192.0.2.7>;expires={MAX_EXPIRES}"


def test_a_new_contact_beyond_the_limit_replaces_the_one_closest_to_expiry() -> None:
    reg = Registrar(max_contacts=3)
    for i in range(3):
        reg.register("alice", register(f"<sip:p{i}@192.0.2.7>", expires=str(600 + i), call_id=f"c{i}"), SRC, "udp", 0)
    resp, added, removed = reg.register("alice", register("<sip:p3@192.0.2.7>", call_id="c3"), SRC, "udp", 1)
    assert resp.status == 200 and added == ["sip:p3@192.0.2.7"] and removed == [("sip:p0@192.0.2.7", "replaced")]
    assert len(reg.lookup("alice", 2)) == 3 and len(resp.headers.get_all("contact")) == 3


def test_more_contacts_in_one_register_than_a_user_may_hold_is_refused() -> None:
    reg = Registrar(max_contacts=2)
    resp, added, _ = reg.register("alice", register("<sip:a@h>", "<sip:b@h>", "<sip:c@h>"), SRC, "udp", 0)
    assert resp.status == 403 and "more than 2 contacts" in resp.reason and added == []
    assert reg.lookup("alice", 1) == []


def test_an_oversized_contact_is_refused_and_changes_nothing() -> None:
    reg = Registrar()
    reg.register("alice", register("<sip:a@192.0.2.7>"), SRC, "udp", 0)
    big = "<sip:" + "x" * MAX_CONTACT_BYTES + "@192.0.2.7>"
    resp, _, _ = reg.register("alice", register(big, "<sip:b@192.0.2.8>", call_id="c2"), SRC, "udp", 1)
    assert resp.status == 400 and f"longer than {MAX_CONTACT_BYTES} bytes" in resp.reason
    assert [b.contact for b in reg.lookup("alice", 2)] == ["sip:a@192.0.2.7"]


def test_expires_zero_removes_the_binding() -> None:
    reg = Registrar()
    reg.register("alice", register("<sip:alice@192.0.2.7>"), SRC, "udp", 0)
    _, _, removed = reg.register("alice", register("<sip:alice@192.0.2.7>", expires="0", cseq=2), SRC, "udp", 1)
    assert removed == [("sip:alice@192.0.2.7", "unregistered")] and reg.lookup("alice", 2) == []


def test_star_with_expires_zero_removes_every_binding() -> None:
    reg = Registrar()
    reg.register("alice", register("<sip:a@192.0.2.7>", "<sip:b@192.0.2.8>"), SRC, "udp", 0)
    resp, _, removed = reg.register("alice", register("*", expires="0", cseq=2), SRC, "udp", 1)
    assert resp.status == 200 and sorted(removed) == [("sip:a@192.0.2.7", "unregistered"),
                                                 ("sip:b@192.0.2.8", "unregistered")]


def test_star_without_expires_zero_is_a_bad_request() -> None:
    resp, _, _ = Registrar().register("alice", register("*"), SRC, "udp", 0)
    assert resp.status == 400


def test_too_brief_interval_gets_423_with_min_expires() -> None:
    resp, _, _ = Registrar().register("alice", register("<sip:a@192.0.2.7>", expires="5"), SRC, "udp", 0)
    assert resp.status == 423 and resp.headers.get("min-expires") == str(MIN_EXPIRES)


def test_out_of_order_register_does_not_undo_a_newer_one() -> None:
    reg = Registrar()
    reg.register("alice", register("<sip:a@192.0.2.7>", expires="600", cseq=5), SRC, "udp", 0)
    reg.register("alice", register("<sip:a@192.0.2.7>", expires="0", cseq=4), SRC, "udp", 1)
    assert reg.lookup("alice", 2)


def test_unreadable_expires_is_a_bad_request() -> None:
    resp, _, _ = Registrar().register("alice", register("<sip:a@192.0.2.7>", expires="soon"), SRC, "udp", 0)
    assert resp.status == 400

"""Fly's resolver as the topology serves it: AAAA records of started machines only, TXT listings,
_api.internal, a fixed public table, NXDOMAIN for the rest (Fly's private networking docs)."""

from __future__ import annotations

from dnslib import QTYPE, RCODE, DNSRecord

from velocity.flynet.dns import Directory, MachineRecord, Resolver

APP = "velocity-preview-containers"
UP = MachineRecord("1234567890abcd", APP, "ord", "fdaa:0:1:a7b:1:2:3:2", started=True)
DOWN = MachineRecord("dcba0987654321", APP, "ord", "fdaa:0:1:a7b:4:5:6:2", started=False)
ELSEWHERE = MachineRecord("aaaaaaaaaaaaaa", APP, "ams", "fdaa:0:1:a7b:7:8:9:2", started=True)

resolver = Resolver(
    Directory(
        lambda: [UP, DOWN, ELSEWHERE],
        apps=lambda: [APP],
        api_address="fdaa:0:1:a7b:ffff::1",
        public={"*.preview.example.com": "2a09:8280:1::a"},
    )
)


def ask(name: str, kind: str = "AAAA") -> DNSRecord:
    return resolver.answer(DNSRecord.question(name, kind))


def addresses(name: str, kind: str = "AAAA") -> list[str]:
    return sorted(str(rr.rdata) for rr in ask(name, kind).rr)


def test_a_machine_s_name_answers_its_6pn_address_only_while_it_is_started() -> None:
    assert addresses(f"{UP.id}.vm.{APP}.internal") == ["fdaa:0:1:a7b:1:2:3:2"]
    stopped = ask(f"{DOWN.id}.vm.{APP}.internal")
    assert stopped.header.rcode == RCODE.NOERROR and stopped.rr == []
    assert ask(f"nosuchmachine00.vm.{APP}.internal").header.rcode == RCODE.NXDOMAIN


def test_the_app_s_name_lists_its_started_machines_and_a_region_narrows_it() -> None:
    assert addresses(f"{APP}.internal") == sorted([UP.private_ip, ELSEWHERE.private_ip])
    assert addresses(f"ams.{APP}.internal") == [ELSEWHERE.private_ip]


def test_6pn_is_ipv6_only_an_a_question_gets_no_address() -> None:
    answer = ask(f"{UP.id}.vm.{APP}.internal", "A")
    assert answer.header.rcode == RCODE.NOERROR and answer.rr == []


def test_txt_records_list_machines_and_apps() -> None:
    vms = ask(f"vms.{APP}.internal", "TXT")
    assert [rr.rtype for rr in vms.rr] == [QTYPE.TXT]
    listed = str(vms.rr[0].rdata).strip('"')
    assert set(listed.split(",")) == {f"{UP.id} ord", f"{DOWN.id} ord", f"{ELSEWHERE.id} ams"}
    assert str(ask("_apps.internal", "TXT").rr[0].rdata).strip('"') == APP


def test_the_machines_api_and_public_names_resolve_and_nothing_else_does() -> None:
    assert addresses("_api.internal") == ["fdaa:0:1:a7b:ffff::1"]
    assert addresses("abc123def456.preview.example.com") == ["2a09:8280:1::a"]
    assert ask("registry.npmjs.org").header.rcode == RCODE.NXDOMAIN
    assert ask("other-app.internal").header.rcode == RCODE.NXDOMAIN

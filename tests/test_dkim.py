"""DKIM signing checked by an independent verifier (dkimpy) that reads our published TXT records."""

from __future__ import annotations

import re
import stat

import dkim as dkimpy
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from engine import dkim
from engine.cli import main
from engine.config import DkimKeySettings, load_settings
from engine.errors import ConfigError
from engine.mime import MessageFactory
from engine.providers import provider_factory
from tests.conftest import write_settings
from tests.sending.test_send import cli, only_spring_sale
from tests.support.data import T0, add_contacts
from tests.support.smtpd import SmtpSink

KEYS = ('[[dkim.keys]]\nselector = "rsa2027"\nalgorithm = "rsa-sha256"\nprivate_key_file = "keys/rsa.pem"\n'
        '[[dkim.keys]]\nselector = "ed2027"\nalgorithm = "ed25519-sha256"\nprivate_key_file = "keys/ed.pem"\n')


@pytest.fixture(scope="module")
def key_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    dkim.generate("rsa-sha256", folder / "rsa.pem")
    dkim.generate("ed25519-sha256", folder / "ed.pem")
    return folder


def load(folder):
    return [dkim.load_key(DkimKeySettings(selector="rsa2027", algorithm="rsa-sha256", private_key_file="x"),
                          folder / "rsa.pem"),
            dkim.load_key(DkimKeySettings(selector="ed2027", algorithm="ed25519-sha256", private_key_file="x"),
                          folder / "ed.pem")]


def dns_for(keys, domain):
    """A dnsfunc for dkimpy that answers exactly the records `valuemail dkim show` tells users to publish."""
    records = {}
    for key in keys:
        line = dkim.zone_line(key, domain)
        name, value = line.split(" IN TXT ")
        records[name] = "".join(re.findall(r'"([^"]*)"', value)).encode()

    def dnsfunc(name, timeout=5):
        return records.get(name.decode() if isinstance(name, bytes) else name)

    return dnsfunc


def verify_all(data: bytes, dnsfunc) -> list[bool]:
    """One verdict per DKIM-Signature, newest first."""
    count = len(re.findall(rb"(?im)^dkim-signature:", data))
    verdicts = []
    for i in range(count):
        try:
            verdicts.append(bool(dkimpy.DKIM(data).verify(idx=i, dnsfunc=dnsfunc)))
        except dkimpy.ValidationError:
            verdicts.append(False)
    return verdicts


def sample(reply_to: str | None = "help@shop.example") -> bytes:
    factory = MessageFactory(from_addr=("Shöp & Co", "news@shop.example"), reply_to=reply_to)
    return factory.build(
        to_addr=("Jane Doe", "jane@example.org"), subject="Spring   sale: 15% off — this week only, folded " * 2,
        text="Hello  Jane,\n\nTrailing spaces   \n.leading dot\n\n\n", html="<p>Hello <b>Jane</b></p>",
        message_id="<1.2.abc@shop.example>", date=T0,
        headers=[("List-Unsubscribe", "<https://shop.example/u/tok>"),
                 ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"), ("Feedback-ID", "1:spring-sale:valuemail")])


def signature_tags(data: bytes, index: int = 0) -> dict[str, str]:
    headers = re.findall(rb"(?ims)^dkim-signature:(.*?)(?=\r\n[^ \t])", data)
    value = re.sub(r"\s+", "", headers[index].decode())
    return dict(part.split("=", 1) for part in value.split(";") if part)


def test_dual_signatures_verify_and_cover_the_required_headers(key_files):
    keys = load(key_files)
    signer = dkim.DkimSigner(domain="shop.example", keys=keys)
    signed = signer.sign(sample())
    dnsfunc = dns_for(keys, "shop.example")
    assert verify_all(signed, dnsfunc) == [True, True]
    rsa_tags, ed_tags = signature_tags(signed, 0), signature_tags(signed, 1)
    assert (rsa_tags["a"], ed_tags["a"]) == ("rsa-sha256", "ed25519-sha256")
    assert rsa_tags["c"] == "relaxed/relaxed" and rsa_tags["d"] == "shop.example" and rsa_tags["s"] == "rsa2027"
    assert rsa_tags["h"].split(":") == ["from", "to", "subject", "date", "message-id", "mime-version", "content-type",
                                        "reply-to", "list-unsubscribe", "list-unsubscribe-post", "feedback-id", "from"]
    assert all(len(line) <= 78 for line in signed.split(b"\r\n\r\n")[0].split(b"\r\n"))
    # No Reply-To: none is claimed, so adding one later breaks nothing it did not promise.
    plain = signer.sign(sample(reply_to=None))
    assert "reply-to" not in signature_tags(plain)["h"] and verify_all(plain, dnsfunc) == [True, True]


@pytest.mark.parametrize("change", [
    (b"<https://shop.example/u/tok>", b"<https://evil.example/u/tok>"),  # List-Unsubscribe (RFC 8058)
    (b"List-Unsubscribe=One-Click", b"List-Unsubscribe=Never"),
    (b"Feedback-ID: 1:spring", b"Feedback-ID: 2:spring"),
    (b"Hello <b>Jane</b>", b"Hello <b>John</b>"),  # the body
])
def test_a_changed_header_or_body_fails_verification(key_files, change):
    keys = load(key_files)
    signed = dkim.DkimSigner(domain="shop.example", keys=keys).sign(sample())
    assert change[0] in signed
    assert verify_all(signed.replace(*change), dns_for(keys, "shop.example")) == [False, False]


def test_an_added_from_header_breaks_the_oversigned_from(key_files):
    keys = load(key_files)
    signed = dkim.DkimSigner(domain="shop.example", keys=keys).sign(sample())
    head, body = signed.split(b"\r\n\r\n", 1)
    forged = head + b"\r\nFrom: ceo@shop.example\r\n\r\n" + body
    assert verify_all(forged, dns_for(keys, "shop.example")) == [False, False]


def test_relaxed_canonicalization_survives_rewrapping_in_transit(key_files):
    keys = load(key_files)
    signed = dkim.DkimSigner(domain="shop.example", keys=keys).sign(sample())
    rewrapped = signed.replace(b"Subject: ", b"subject:   ").replace(b"Trailing spaces", b"Trailing    spaces")
    assert rewrapped != signed and verify_all(rewrapped, dns_for(keys, "shop.example")) == [True, True]


def project_with_keys(project, database_url, key_files, extra=""):
    (project / "keys").mkdir()
    for name in ("rsa.pem", "ed.pem"):
        (project / "keys" / name).write_bytes((key_files / name).read_bytes())
    return write_settings(project, database_url, extra='[sender]\nfrom_email = "news@shop.example"\n' + KEYS + extra)


def test_smtp_send_signs_every_message(project, database_url, db, key_files):
    only_spring_sale(project)
    add_contacts(db, 6)
    with SmtpSink() as sink:
        settings = project_with_keys(project, database_url, key_files,
                                     f'[provider]\nname = "smtp"\n[provider.smtp]\nport = {sink.port}\n')
        result = cli(settings, "send", "spring-sale")
        assert result.exit_code == 0, result.output
        received = sink.messages
    dnsfunc = dns_for(load(key_files), "shop.example")
    assert len(received) == 6
    for item in received:
        assert verify_all(item.data, dnsfunc) == [True, True]
        tampered = re.sub(rb"List-Unsubscribe: <[^>]+>", b"List-Unsubscribe: <https://evil.example/u/x>", item.data)
        assert tampered != item.data and verify_all(tampered, dnsfunc) == [False, False]


def test_outbox_files_are_signed_as_they_would_go_out(project, database_url, db, key_files):
    only_spring_sale(project)
    add_contacts(db, 3)
    settings = project_with_keys(project, database_url, key_files)
    assert cli(settings, "send", "spring-sale").exit_code == 0
    files = sorted((settings.var_dir / "outbox").glob("*.eml"))
    assert len(files) == 3
    dnsfunc = dns_for(load(key_files), "shop.example")
    assert all(verify_all(path.read_bytes(), dnsfunc) == [True, True] for path in files)


def test_keys_are_loaded_once_per_factory(tmp_path, key_files, monkeypatch):
    (tmp_path / "keys").mkdir()
    for name in ("rsa.pem", "ed.pem"):
        (tmp_path / "keys" / name).write_bytes((key_files / name).read_bytes())
    (tmp_path / "config.toml").write_text('[provider]\nname = "smtp"\n' + KEYS)
    settings = load_settings(tmp_path / "config.toml", env={}, secret_key="k")
    loads = []
    original = dkim.load_key
    monkeypatch.setattr(dkim, "load_key", lambda *a: loads.append(a) or original(*a))
    make = provider_factory(settings, env={})
    providers = [make() for _ in range(4)]
    assert len(loads) == 2 and len({id(p.sign.__self__) for p in providers}) == 1


def write_key_config(tmp_path, algorithm="rsa-sha256", file="keys/k.pem"):
    (tmp_path / "config.toml").write_text(
        f'[sender]\nfrom_email = "a@b.example"\n\n[[dkim.keys]]\nselector = "s1"\nalgorithm = "{algorithm}"\n'
        f'private_key_file = "{file}"\n')
    return load_settings(tmp_path / "config.toml", env={}, secret_key="k")


def test_key_file_problems_are_config_errors_naming_the_file(tmp_path, key_files):
    (tmp_path / "keys").mkdir()
    cases = {
        "missing.pem": ("rsa-sha256", None, "file not found"),
        "dir.pem": ("rsa-sha256", "dir", "cannot read it: Is a directory"),
        "junk.pem": ("rsa-sha256", b"not a key", "not a PEM private key"),
        "ed-as-rsa.pem": ("rsa-sha256", (key_files / "ed.pem").read_bytes(), "algorithm is rsa-sha256 but the file holds an Ed25519 key"),
        "rsa-as-ed.pem": ("ed25519-sha256", (key_files / "rsa.pem").read_bytes(), "algorithm is ed25519-sha256 but the file holds an RSA key"),
        "small.pem": ("rsa-sha256", rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            "the RSA key has 1024 bits; DKIM keys need at least 2048"),
    }
    for name, (algorithm, content, reason) in cases.items():
        path = tmp_path / "keys" / name
        if content == "dir":
            path.mkdir()
        elif content is not None:
            path.write_bytes(content)
        settings = write_key_config(tmp_path, algorithm, f"keys/{name}")
        with pytest.raises(ConfigError) as caught:
            dkim.signer_from_settings(settings)
        assert str(caught.value) == f"{tmp_path / 'config.toml'}:7: DKIM key 's1': {path}: {reason}"
        # The factory builds the signer up front, so `valuemail send` fails before any work.
        with pytest.raises(ConfigError):
            provider_factory(settings, env={})


def test_config_rejects_bad_algorithms_and_selectors(tmp_path):
    with pytest.raises(ConfigError, match=r"config.toml:6: 'dkim.keys\[0\].algorithm'"):
        write_key_config(tmp_path, algorithm="rsa-sha1")
    (tmp_path / "config.toml").write_text('[[dkim.keys]]\nselector = "bad selector"\nalgorithm = "rsa-sha256"\n'
                                          'private_key_file = "k.pem"\n')
    with pytest.raises(ConfigError, match="config.toml:2: 'dkim.keys\\[0\\].selector': must be a DNS name"):
        load_settings(tmp_path / "config.toml", env={}, secret_key="k")


def run_cli(tmp_path, *args):
    return CliRunner().invoke(main, ["--config", str(tmp_path / "config.toml"), *args],
                              env={"VALUEMAIL_SECRET_KEY": "k"}, catch_exceptions=False)


def test_keygen_writes_a_private_key_and_prints_the_record_that_verifies(tmp_path):
    (tmp_path / "config.toml").write_text('[sender]\nfrom_email = "news@shop.example"\n')
    outputs = {}
    for selector, algorithm in (("r1", "rsa-sha256"), ("e1", "ed25519-sha256")):
        result = run_cli(tmp_path, "dkim", "keygen", "--selector", selector, "--algorithm", algorithm)
        assert result.exit_code == 0, result.output
        outputs[selector] = result.output
        path = tmp_path / "dkim" / f"{selector}.pem"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"{selector}._domainkey.shop.example. IN TXT" in outputs["e1"] and "k=ed25519" in outputs["e1"]
    assert "k=rsa" in outputs["r1"] and '[[dkim.keys]]\n  selector = "r1"' in outputs["r1"]
    again = run_cli(tmp_path, "dkim", "keygen", "--selector", "r1")
    assert again.exit_code == 1 and "exists" in again.output  # never overwrites a key in use
    with open(tmp_path / "config.toml", "a") as fh:
        for selector, algorithm in (("r1", "rsa-sha256"), ("e1", "ed25519-sha256")):
            fh.write(f'[[dkim.keys]]\nselector = "{selector}"\nalgorithm = "{algorithm}"\n'
                     f'private_key_file = "dkim/{selector}.pem"\n')
    shown = run_cli(tmp_path, "dkim", "show")
    assert shown.exit_code == 0 and "Signing as d=shop.example" in shown.output
    # The printed records are what a verifier finds in DNS: a message signed with these keys verifies.
    records = {}
    for line in shown.output.splitlines():
        if " IN TXT " in line:
            name, value = line.split(" IN TXT ")
            records[name] = "".join(re.findall(r'"([^"]*)"', value)).encode()
            assert line in outputs[name.split(".")[0]]  # keygen printed the same record
    settings = load_settings(tmp_path / "config.toml", env={}, secret_key="k")
    signed = dkim.signer_from_settings(settings).sign(sample())
    assert verify_all(signed, lambda name, timeout=5: records.get(name.decode())) == [True, True]


def test_show_without_keys_says_mail_is_unsigned(tmp_path):
    (tmp_path / "config.toml").write_text("")
    result = run_cli(tmp_path, "dkim", "show")
    assert result.exit_code == 0 and "unsigned" in result.output


def test_validate_reports_a_bad_key_file(project, settings):
    config = project / "config.toml"
    config.write_text(config.read_text() + '[[dkim.keys]]\nselector = "s1"\nalgorithm = "rsa-sha256"\n'
                      'private_key_file = "keys/none.pem"\n')
    result = cli(settings, "validate")
    line = config.read_text().splitlines().index('private_key_file = "keys/none.pem"') + 1
    assert result.exit_code == 1
    assert f"config.toml:{line}: DKIM key 's1': {project / 'keys' / 'none.pem'}: file not found" in result.output

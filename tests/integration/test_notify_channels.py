"""Page delivery over real sockets: webhook and SMS gateway to a real HTTP sink, email to a real
SMTP sink (aiosmtpd), with STARTTLS verified against a throw-away CA."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import ssl
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.http_sink import HttpSink
from tests.pki import Pki, make_pki
from tests.smtp_sink import SmtpSink
from vetgateway.adapters.notify import Notification
from vetgateway.adapters.notify.email import EmailChannel
from vetgateway.adapters.notify.sms import MAX_TEXT, SmsChannel
from vetgateway.adapters.notify.webhook import WebhookChannel
from vetgateway.config import Settings
from vetgateway.errors import ConfigError, DeliveryError
from vetgateway.store.models.alerts import PageChannel

KEY = b"test-signing-key"
SENT_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PATIENT_TEXT = "Bella (canine): potassium 7.9 mmol/L, critical high"


def notification(channel: PageChannel, target: str, **changes: object) -> Notification:
    values: dict[str, object] = {
        "alert_id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "page_id": 42,
        "level": 1,
        "channel": channel,
        "target": target,
        "subject": "CRITICAL potassium",
        "body": PATIENT_TEXT,
        "acknowledge_url": "https://gw.example/ack/abc.def",
    }
    values.update(changes)
    return Notification(**values)  # type: ignore[arg-type]


def refused_port() -> int:
    """A local port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def assert_no_patient_text(error: pytest.ExceptionInfo[DeliveryError]) -> None:
    assert "Bella" not in str(error.value)
    assert "potassium 7.9" not in str(error.value)


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    with HttpSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def server_tls(pki: Pki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.path("server.crt"), pki.path("server.key"))
    return context


def client_tls(pki: Pki, ca: str = "ca") -> ssl.SSLContext:
    return ssl.create_default_context(cafile=pki.path(f"{ca}.crt"))


# --- webhook ---------------------------------------------------------------------------------


def test_webhook_delivers_signed_json(http_sink: HttpSink) -> None:
    channel = WebhookChannel(KEY, timeout=5, clock=lambda: SENT_AT)
    channel.deliver(notification(PageChannel.WEBHOOK, http_sink.url("/pages?token=t1")))

    [request] = http_sink.wait_for(1)
    assert request.method == "POST"
    assert request.path == "/pages?token=t1"
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert headers["content-type"] == "application/json"
    timestamp = headers["x-vetgateway-timestamp"]
    assert timestamp == str(int(SENT_AT.timestamp()))
    expected = hmac.new(KEY, timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-vetgateway-signature"], f"sha256={expected}")
    assert json.loads(request.body) == {
        "alert_id": "12345678-1234-5678-1234-567812345678",
        "page_id": 42,
        "level": 1,
        "subject": "CRITICAL potassium",
        "text": PATIENT_TEXT,
        "acknowledge_url": "https://gw.example/ack/abc.def",
        "sent_at": "2026-01-02T03:04:05+00:00",
    }


def test_webhook_signature_does_not_verify_with_another_timestamp(http_sink: HttpSink) -> None:
    WebhookChannel(KEY).deliver(notification(PageChannel.WEBHOOK, http_sink.url()))
    [request] = http_sink.wait_for(1)
    replayed = str(int(request.headers["X-Vetgateway-Timestamp"]) + 600)
    forged = hmac.new(KEY, replayed.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Vetgateway-Signature"] != f"sha256={forged}"


def test_webhook_server_error_raises_with_the_status(http_sink: HttpSink) -> None:
    http_sink.fail_next(500)
    channel = WebhookChannel(KEY, timeout=5)
    with pytest.raises(DeliveryError, match=r"webhook: 127\.0\.0\.1:\d+ answered HTTP 500") as err:
        channel.deliver(notification(PageChannel.WEBHOOK, http_sink.url("/hook?token=secret")))
    assert "secret" not in str(err.value)
    assert_no_patient_text(err)
    assert len(http_sink.requests) == 1, "one call is one attempt: no retry inside the channel"

    channel.deliver(notification(PageChannel.WEBHOOK, http_sink.url()))
    assert len(http_sink.wait_for(2)) == 2


def test_webhook_connection_refused_raises() -> None:
    port = refused_port()
    with pytest.raises(DeliveryError, match=rf"webhook: POST to 127\.0\.0\.1:{port} failed") as err:
        WebhookChannel(KEY, timeout=5).deliver(
            notification(PageChannel.WEBHOOK, f"http://127.0.0.1:{port}/hook")
        )
    assert "ConnectionRefused" in str(err.value)
    assert_no_patient_text(err)


def test_webhook_timeout_raises() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(DeliveryError, match=r"did not answer within 0\.2 s"):
            WebhookChannel(KEY, timeout=0.2).deliver(
                notification(PageChannel.WEBHOOK, f"http://127.0.0.1:{port}/hook")
            )


@pytest.mark.parametrize("target", ["ftp://example.org/x", "not a url", "http:///nohost"])
def test_webhook_rejects_non_http_targets(target: str) -> None:
    with pytest.raises(DeliveryError, match="not an http"):
        WebhookChannel(KEY).deliver(notification(PageChannel.WEBHOOK, target))


def test_webhook_needs_a_signing_key() -> None:
    with pytest.raises(ConfigError, match="signing_key"):
        WebhookChannel(b"")
    with pytest.raises(ConfigError, match="signing_key"):
        WebhookChannel.from_settings(Settings(signing_key="x"), signing_key="")


def test_webhook_from_settings_signs_with_the_generated_key(
    http_sink: HttpSink, tmp_path: Path
) -> None:
    settings = Settings(signing_key="", data_dir=tmp_path)
    WebhookChannel.from_settings(settings).deliver(
        notification(PageChannel.WEBHOOK, http_sink.url())
    )
    [request] = http_sink.wait_for(1)
    key = bytes.fromhex((tmp_path / "signing.key").read_text().strip())
    timestamp = request.headers["X-Vetgateway-Timestamp"]
    expected = hmac.new(key, timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Vetgateway-Signature"] == f"sha256={expected}"


# --- email -----------------------------------------------------------------------------------


def test_email_delivered_in_plain_text() -> None:
    with SmtpSink() as sink:
        channel = EmailChannel(sink.host, sink.port, "pager@clinic.example", timeout=5)
        channel.deliver(notification(PageChannel.EMAIL, "oncall@clinic.example"))
        [mail] = sink.wait_for(1)
    assert mail.mail_from == "pager@clinic.example"
    assert mail.rcpt_tos == ["oncall@clinic.example"]
    assert not mail.over_tls
    message = mail.message
    assert message["From"] == "pager@clinic.example"
    assert message["To"] == "oncall@clinic.example"
    assert message["Subject"] == "CRITICAL potassium"
    assert message["X-Vetgateway-Page-Id"] == "42"
    assert message.get_content_type() == "text/plain"
    text = message.get_content()
    assert PATIENT_TEXT in text
    assert "Acknowledge: https://gw.example/ack/abc.def" in text


def test_email_without_acknowledge_link_has_no_link_line() -> None:
    with SmtpSink() as sink:
        EmailChannel(sink.host, sink.port, "pager@clinic.example").deliver(
            notification(PageChannel.EMAIL, "oncall@clinic.example", acknowledge_url=None)
        )
        [mail] = sink.wait_for(1)
    assert "Acknowledge" not in mail.message.get_content()


def test_email_upgrades_with_starttls_verified_against_the_ca(pki: Pki) -> None:
    with SmtpSink(tls=server_tls(pki), credentials=("pager", "s3cret")) as sink:
        channel = EmailChannel(
            sink.host,
            sink.port,
            "pager@clinic.example",
            username="pager",
            password="s3cret",
            timeout=5,
            ssl_context=client_tls(pki),
        )
        channel.deliver(notification(PageChannel.EMAIL, "oncall@clinic.example"))
        [mail] = sink.wait_for(1)
    assert mail.over_tls
    assert mail.authenticated_as == "pager"
    assert PATIENT_TEXT in mail.message.get_content()


def test_email_refuses_an_untrusted_certificate(pki: Pki) -> None:
    with SmtpSink(tls=server_tls(pki)) as sink:
        channel = EmailChannel(
            sink.host,
            sink.port,
            "p@clinic.example",
            timeout=5,
            ssl_context=client_tls(pki, "rogue-ca"),
        )
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED") as err:
            channel.deliver(notification(PageChannel.EMAIL, "oncall@clinic.example"))
        assert sink.messages == []
    assert_no_patient_text(err)


def test_email_does_not_send_credentials_without_tls() -> None:
    with SmtpSink() as sink:
        channel = EmailChannel(sink.host, sink.port, "p@clinic.example", username="u", password="x")
        with pytest.raises(DeliveryError, match="does not offer STARTTLS"):
            channel.deliver(notification(PageChannel.EMAIL, "oncall@clinic.example"))
        assert sink.messages == []


@pytest.mark.parametrize(
    ("stage", "reply", "expected"),
    [
        ("RCPT", "550 5.1.1 no such user", r"recipient refused: 550 5\.1\.1 no such user"),
        ("DATA", "451 4.3.0 try again later", r"SMTPDataError: 451 4\.3\.0 try again later"),
    ],
)
def test_email_refused_raises(stage: str, reply: str, expected: str) -> None:
    with SmtpSink() as sink:
        sink.refuse(stage, reply)  # type: ignore[arg-type]
        channel = EmailChannel(sink.host, sink.port, "p@clinic.example", timeout=5)
        with pytest.raises(DeliveryError, match=expected) as err:
            channel.deliver(notification(PageChannel.EMAIL, "nobody@clinic.example"))
        assert sink.messages == []
    message = str(err.value)
    assert message.startswith(f"email to nobody@clinic.example via 127.0.0.1:{sink.port}: ")
    assert_no_patient_text(err)


def test_email_connection_refused_raises() -> None:
    port = refused_port()
    with pytest.raises(DeliveryError, match=rf"127\.0\.0\.1:{port}: ConnectionRefusedError"):
        EmailChannel("127.0.0.1", port, "p@clinic.example", timeout=5).deliver(
            notification(PageChannel.EMAIL, "oncall@clinic.example")
        )


def test_email_rejects_a_recipient_with_line_breaks() -> None:
    with pytest.raises(DeliveryError, match="invalid recipient"):
        EmailChannel("127.0.0.1", 25, "p@clinic.example").deliver(
            notification(PageChannel.EMAIL, "a@b.example\r\nBcc: c@d.example")
        )


def test_email_from_settings_needs_a_host() -> None:
    with pytest.raises(ConfigError, match="smtp_host"):
        EmailChannel.from_settings(Settings(smtp_host=""))
    assert EmailChannel.from_settings(Settings(smtp_host="relay")).kind is PageChannel.EMAIL


# --- SMS gateway -----------------------------------------------------------------------------


def test_sms_template_filled_with_json_escaping(http_sink: HttpSink) -> None:
    channel = SmsChannel(
        http_sink.url("/send"),
        Settings().sms_body_template,
        authorization="Bearer gw-token",
        timeout=5,
    )
    subject = 'CRITICAL "K+"'
    body = 'line one\nline two \\ with "quotes"\ttab'
    channel.deliver(notification(PageChannel.SMS, "+41 79 555 12 34", subject=subject, body=body))

    [request] = http_sink.wait_for(1)
    assert request.path == "/send"
    assert request.headers["Authorization"] == "Bearer gw-token"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {"to": "+41 79 555 12 34", "text": f"{subject}\n{body}"}


def test_sms_text_is_shortened_and_template_cannot_be_broken_out_of(http_sink: HttpSink) -> None:
    template = '{{"to": "{to}", "text": "{text}", "from": "vetgateway"}}'
    channel = SmsChannel(http_sink.url(), template)
    hostile = '", "to": "+1 900 premium' + "x" * 400
    channel.deliver(notification(PageChannel.SMS, '+1"555', subject="S", body=hostile))
    [request] = http_sink.wait_for(1)
    assert "Authorization" not in request.headers
    sent = json.loads(request.body)
    assert sent["to"] == '+1"555'
    assert sent["from"] == "vetgateway"
    assert len(sent["text"]) == MAX_TEXT
    assert sent["text"].startswith(f"S\n{hostile[:50]}")
    assert sent["text"].endswith("…")


def test_sms_gateway_error_raises(http_sink: HttpSink) -> None:
    http_sink.fail_next(429)
    channel = SmsChannel(http_sink.url(), Settings().sms_body_template, timeout=5)
    expected = r"sms to \+15550100: 127\.0\.0\.1:\d+ answered HTTP 429"
    with pytest.raises(DeliveryError, match=expected):
        channel.deliver(notification(PageChannel.SMS, "+15550100"))


def test_sms_gateway_unreachable_raises() -> None:
    port = refused_port()
    channel = SmsChannel(f"http://127.0.0.1:{port}/send", Settings().sms_body_template, timeout=5)
    with pytest.raises(DeliveryError, match="ConnectionRefusedError") as err:
        channel.deliver(notification(PageChannel.SMS, "+15550100"))
    assert_no_patient_text(err)


@pytest.mark.parametrize(
    ("url", "template", "setting"),
    [
        ("", '{{"to": "{to}"}}', "sms_url"),
        ("http://gw/send", '{"to": "{to}"}', "sms_body_template"),
        ("http://gw/send", '{{"to": "{phone}"}}', "sms_body_template"),
    ],
)
def test_sms_configuration_is_checked_when_built(url: str, template: str, setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        SmsChannel.from_settings(Settings(sms_url=url, sms_body_template=template))

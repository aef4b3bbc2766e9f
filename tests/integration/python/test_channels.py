"""Notification channels (/api/channels, ChannelService) and the outbox, through
real receivers on loopback: an SMTP server (aiosmtpd) gets the test email with
its Message-ID, an HTTP server gets the Slack Block Kit message, the signed
webhook POST (signature and Idempotency-Key verified here) and the Telegram
sendMessage call. A receiver that is down gets retries, then a failed entry in
the delivery log; a notification pending when the server is killed (-9) is
delivered after the restart with the same Idempotency-Key. The private-network
policy refuses a webhook to 127.0.0.1 naming `url` unless
NOTIFY_ALLOW_PRIVATE_NETWORKS is set; secrets are masked on read; another
account's channel is NOT_FOUND. SMTP authentication (SMTP_USER,
SMTP_PASSWORD_FILE) reaches a relay that requires AUTH, and
?starttls=required never sends to a relay without STARTTLS."""

import email
import hashlib
import hmac
import http.server
import json
import os
import sqlite3
import tempfile
import threading
import time
import unittest

from aiosmtpd.controller import Controller

import harness
from test_rest import RestClient

TIMEOUT_S = 15
ACCOUNT = "acme-channels"


class Receiver:
    """An HTTP server on loopback recording every request: (path, headers, body)."""

    def __init__(self, port=0):
        self.requests = []
        self.cond = threading.Condition()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n)
                with rec.cond:
                    rec.requests.append((self.path, {k.lower(): v for k, v in
                                                     self.headers.items()}, body))
                    rec.cond.notify_all()
                out = b'{"ok":true,"result":{}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def wait_for(self, pred, timeout=TIMEOUT_S):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for r in self.requests:
                    if pred(r):
                        return r
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError("no matching request; got %r" % self.requests)
                self.cond.wait(left)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Mailbox:
    def __init__(self):
        self.messages = []
        self.cond = threading.Condition()

    async def handle_DATA(self, server, session, envelope):
        with self.cond:
            self.messages.append(envelope)
            self.cond.notify_all()
        return "250 OK"

    def wait(self, timeout=TIMEOUT_S):
        deadline = time.time() + timeout
        with self.cond:
            while not self.messages:
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError("no email arrived")
                self.cond.wait(left)
            return self.messages[-1]


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    return harness.free_port()


def verify_signature(secret, header, body):
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(secret.encode(), (parts["t"] + ".").encode() + body,
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


def delivery_log(data_dir, key):
    """(state, [(attempt, outcome, status, error)]) of the notification with key."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(data_dir, "analytics.db"), uri=True,
                         timeout=10)
    try:
        row = db.execute("SELECT id, state FROM notify_outbox WHERE idempotency_key = ?",
                         (key,)).fetchone()
        if row is None:
            return None, []
        attempts = db.execute("SELECT attempt, outcome, status, error FROM notify_attempts"
                              " WHERE outbox_id = ? ORDER BY attempt", (row[0],)).fetchall()
        return row[1], attempts
    finally:
        db.close()


class RelayTestCase(harness.ServerTestCase):
    """A server whose SMTP_URL points at an aiosmtpd relay of the class's
    own (started before the server, stopped after it), with the class's
    HTTP `receiver` too when it set one."""

    @classmethod
    def start_with_relay(cls, url_suffix="", env=None, **relay_options):
        cls.mailbox = Mailbox()
        cls.smtp = Controller(cls.mailbox, hostname="127.0.0.1", port=harness.free_port(),
                              **relay_options)
        cls.smtp.start()
        cls.SERVER_ENV = dict({
            "DEFAULT_ACCOUNT_ID": ACCOUNT,
            "SMTP_URL": "smtp://127.0.0.1:%d%s" % (cls.smtp.port, url_suffix),
            "NOTIFY_MAX_ATTEMPTS": "1",
            "NOTIFY_TIMEOUT": "2s",
            "NOTIFY_POLL_INTERVAL": "50ms",
        }, **(env or {}))
        try:
            super().setUpClass()
        except BaseException:
            cls.stop_receivers()
            raise
        cls.rest = RestClient(cls.rest_port)

    @classmethod
    def stop_receivers(cls):
        cls.smtp.stop()
        if getattr(cls, "receiver", None):
            cls.receiver.stop()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.stop_receivers()

    def send_test_email(self, name):
        """Creates an email channel to oncall@example.com and sends its test
        notification; returns the test's result."""
        status, _, ch = self.rest.request("POST", "/api/channels", {
            "name": name, "email": {"to": ["oncall@example.com"]}})
        self.assertEqual(status, 200, ch)
        status, _, res = self.rest.request("POST", "/api/channels/%s/test" % ch["channelId"], {})
        self.assertEqual(status, 200, res)
        return res


class ChannelsTest(RelayTestCase):

    @classmethod
    def setUpClass(cls):
        cls.receiver = Receiver()
        cls.start_with_relay(env={
            "NOTIFY_ALLOW_PRIVATE_NETWORKS": "true",
            "SMTP_FROM": "alerts@analytics.example",
            "TELEGRAM_API_URL": cls.receiver.url(""),
            "NOTIFY_MAX_ATTEMPTS": "3",
            "NOTIFY_BACKOFF_INITIAL": "50ms",
            "NOTIFY_BACKOFF_MAX": "100ms",
        })

    def create(self, channel):
        status, _, body = self.rest.request("POST", "/api/channels", channel)
        self.assertEqual(status, 200, body)
        return body

    def run_test(self, channel_id):
        status, _, body = self.rest.request("POST", "/api/channels/%s/test" % channel_id, {})
        self.assertEqual(status, 200, body)
        return body

    def test_email_arrives_with_the_key_as_message_id(self):
        ch = self.create({"name": "ops-mail", "email": {"to": ["oncall@example.com"]}})
        self.assertEqual(ch["type"], "email")
        res = self.run_test(ch["channelId"])
        self.assertEqual(res["outcome"], "delivered", res)
        env = self.mailbox.wait()
        self.assertEqual(env.rcpt_tos, ["oncall@example.com"])
        self.assertEqual(env.mail_from, "alerts@analytics.example")
        msg = email.message_from_bytes(env.content)
        self.assertEqual(msg["Message-ID"],
                         "<%s@analytics.example>" % res["idempotencyKey"])
        self.assertIn("Test notification for channel ops-mail", msg["Subject"])
        self.assertIn("the channel works", msg.get_payload())

    def test_slack_gets_block_kit(self):
        ch = self.create({"name": "ops-slack",
                          "slack": {"webhookUrl": self.receiver.url("/services/T1/B1/abc")}})
        res = self.run_test(ch["channelId"])
        self.assertEqual(res["outcome"], "delivered", res)
        path, headers, body = self.receiver.wait_for(lambda r: r[0] == "/services/T1/B1/abc")
        self.assertEqual(headers["content-type"], "application/json")
        doc = json.loads(body)
        self.assertIn("Test notification", doc["text"])
        self.assertEqual(doc["blocks"][0]["type"], "header")
        self.assertIn("ops-slack", doc["blocks"][0]["text"]["text"])
        self.assertEqual(doc["blocks"][-1]["type"], "context")

    def test_webhook_is_signed_with_an_idempotency_key(self):
        ch = self.create({"name": "ops-hook", "webhook": {"url": self.receiver.url("/hook")}})
        secret = ch["webhook"]["signingSecret"]
        self.assertRegex(secret, r"^whsec_[0-9A-Za-z]{43}$")
        res = self.run_test(ch["channelId"])
        self.assertEqual(res["outcome"], "delivered", res)
        self.assertEqual(res["status"], 200)
        key = res["idempotencyKey"]
        path, headers, body = self.receiver.wait_for(
            lambda r: r[0] == "/hook" and r[1].get("idempotency-key") == key)
        self.assertTrue(verify_signature(secret, headers["x-analytics-signature"], body),
                        headers["x-analytics-signature"])
        self.assertFalse(verify_signature("whsec_wrong", headers["x-analytics-signature"], body))
        doc = json.loads(body)
        self.assertEqual(doc["id"], key)
        self.assertEqual(doc["source"], "test:" + ch["channelId"])

    def test_telegram_send_message(self):
        ch = self.create({"name": "ops-tg",
                          "telegram": {"botToken": "123456:AAbb-cc_dd", "chatId": "-1001"}})
        res = self.run_test(ch["channelId"])
        self.assertEqual(res["outcome"], "delivered", res)
        path, headers, body = self.receiver.wait_for(
            lambda r: r[0] == "/bot123456:AAbb-cc_dd/sendMessage")
        doc = json.loads(body)
        self.assertEqual(doc["chat_id"], "-1001")
        self.assertIn("Test notification for channel ops-tg", doc["text"])

    def test_secrets_are_masked_on_read(self):
        tg = self.create({"name": "masked-tg",
                          "telegram": {"botToken": "999:secret-token", "chatId": "7"}})
        hook = self.create({"name": "masked-hook", "webhook": {"url": self.receiver.url("/m")}})
        slack = self.create({"name": "masked-slack",
                             "slack": {"webhookUrl": self.receiver.url("/services/SECRET")}})
        self.assertEqual(tg["telegram"]["botToken"], "***")
        secret = hook["webhook"]["signingSecret"]
        for ch in (tg, hook, slack):
            status, _, got = self.rest.request("GET", "/api/channels/" + ch["channelId"])
            self.assertEqual(status, 200, got)
            text = json.dumps(got)
            self.assertNotIn("secret-token", text)
            self.assertNotIn(secret, text)
            self.assertNotIn("SECRET", text)
        status, _, listed = self.rest.request("GET", "/api/channels?pageSize=1000")
        self.assertEqual(status, 200, listed)
        text = json.dumps(listed)
        self.assertNotIn("secret-token", text)
        self.assertNotIn(secret, text)
        # A full replace that sends the masks back keeps the secrets.
        status, _, got = self.rest.request("GET", "/api/channels/" + tg["channelId"])
        got["name"] = "masked-tg-2"
        status, _, upd = self.rest.request("PUT", "/api/channels/" + tg["channelId"], got)
        self.assertEqual(status, 200, upd)
        self.assertEqual(upd["name"], "masked-tg-2")
        res = self.run_test(tg["channelId"])
        self.assertEqual(res["outcome"], "delivered", res)
        self.receiver.wait_for(lambda r: r[0] == "/bot999:secret-token/sendMessage")

    def test_secrets_are_sealed_at_rest(self):
        """Every secret a channel holds is stored sealed (AES-256-GCM under the
        account's data key): no file under DATA_DIR, nor the log, holds it in
        clear; it still works for delivery; altered in the database, the
        channel's test fails with DATA_LOSS instead of sending garbage."""
        token, hook_path = "4242:sealed-bot-token-xyz", "/services/T9/B9/sealed-slack-path"
        tg = self.create({"name": "sealed-tg",
                          "telegram": {"botToken": token, "chatId": "9"}})
        slack = self.create({"name": "sealed-slack",
                             "slack": {"webhookUrl": self.receiver.url(hook_path)}})
        hook = self.create({"name": "sealed-hook", "webhook": {"url": self.receiver.url("/s")}})
        secret = hook["webhook"]["signingSecret"]
        self.assertEqual(self.run_test(tg["channelId"])["outcome"], "delivered")
        self.receiver.wait_for(lambda r: r[0] == "/bot%s/sendMessage" % token)
        self.assertEqual(self.run_test(slack["channelId"])["outcome"], "delivered")
        self.receiver.wait_for(lambda r: r[0] == hook_path)
        clear = [token.encode(), b"sealed-slack-path", secret.encode()]
        for root, _, files in os.walk(self.server.data_dir):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    data = f.read()
                for c in clear:
                    self.assertFalse(c in data, "%s holds %r in clear" % (name, c))
        logs = "\n".join(self.server.raw_log_lines())
        for c in clear:
            self.assertNotIn(c.decode(), logs)
        db = sqlite3.connect(os.path.join(self.server.data_dir, "analytics.db"), timeout=10)
        try:
            (body,) = db.execute("SELECT body FROM catalog_objects WHERE kind = 'channel' AND"
                                 " id = ?", (tg["channelId"],)).fetchone()
            at = body.index(b"ana:enc:") + len(b"ana:enc:") + 20
            changed = body[:at] + (b"B" if body[at:at + 1] != b"B" else b"C") + body[at + 1:]
            db.execute("UPDATE catalog_objects SET body = ? WHERE kind = 'channel' AND id = ?",
                       (changed, tg["channelId"]))
            db.commit()
        finally:
            db.close()
        status, _, body = self.rest.request("POST", "/api/channels/%s/test" % tg["channelId"], {})
        self.assertNotEqual(status, 200, body)
        self.assertIn("does not authenticate", json.dumps(body))
        # Other channels are still made and listed beside it.
        self.create({"name": "after-tamper", "telegram": {"botToken": "1:x", "chatId": "1"}})
        status, _, listed = self.rest.request("GET", "/api/channels?pageSize=1000")
        self.assertEqual(status, 200, listed)

    def test_bad_channels_name_the_field(self):
        for channel, field in (({"name": "x", "webhook": {"url": "ftp://example.com/"}},
                                "webhook.url"),
                               ({"name": "x", "email": {"to": ["not-an-address"]}},
                                "email.to[0]"),
                               ({"name": "x", "telegram": {"botToken": "nope", "chatId": "1"}},
                                "telegram.botToken"),
                               ({"email": {"to": ["a@example.com"]}}, "name"),
                               ({"name": "x", "type": "pager"}, "type")):
            status, _, body = self.rest.request("POST", "/api/channels", channel)
            self.assertEqual(status, 400, body)
            fields = [v["field"] for d in body["details"] for v in d.get("fieldViolations", [])]
            self.assertEqual(fields, [field], body)

    def test_down_receiver_gets_retries_then_failed(self):
        ch = self.create({"name": "down-hook",
                          "webhook": {"url": "http://127.0.0.1:%d/x" % closed_port()}})
        res = self.run_test(ch["channelId"])
        self.assertEqual(res["outcome"], "failed", res)
        self.assertIn("127.0.0.1", res["error"])
        deadline = time.time() + TIMEOUT_S
        while True:
            state, attempts = delivery_log(self.server.data_dir, res["idempotencyKey"])
            if state == "failed" or time.time() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(state, "failed", attempts)
        self.assertEqual([a[:2] for a in attempts], [(1, "retry"), (2, "retry"), (3, "failed")])
        self.assertTrue(all(a[3] for a in attempts), attempts)

    def test_default_channel_per_type(self):
        a = self.create({"name": "def-a", "email": {"to": ["a@example.com"]}})
        b = self.create({"name": "def-b", "email": {"to": ["b@example.com"]}, "isDefault": True})
        status, _, got = self.rest.request("GET", "/api/channels/" + a["channelId"])
        self.assertFalse(got.get("isDefault", False), got)
        self.assertTrue(b["isDefault"])

    def test_unknown_channel_is_not_found(self):
        for verb, path in (("GET", "/api/channels/01a24d28-b9c4-74ce-b909-9d88239080fe"),
                           ("POST", "/api/channels/01a24d28-b9c4-74ce-b909-9d88239080fe/test"),
                           ("DELETE", "/api/channels/nope")):
            status, _, body = self.rest.request(verb, path, {} if verb == "POST" else None)
            self.assertEqual(status, 404, body)
            self.assertIn("channelId: no channel", body["message"])


class PrivateNetworksTest(harness.ServerTestCase):
    """Without NOTIFY_ALLOW_PRIVATE_NETWORKS."""

    SERVER_ENV = {"DEFAULT_ACCOUNT_ID": ACCOUNT}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rest = RestClient(cls.rest_port)

    def test_webhook_to_loopback_is_refused_naming_url(self):
        for url in ("http://127.0.0.1:9/x", "http://localhost:9/x", "http://[::1]:9/x",
                    "http://[::ffff:127.0.0.1]:9/x", "http://169.254.169.254/latest",
                    "http://10.1.2.3/", "http://100.64.0.1/", "http://0.0.0.0/"):
            status, _, body = self.rest.request("POST", "/api/channels",
                                                {"name": "ssrf", "webhook": {"url": url}})
            self.assertEqual(status, 400, (url, body))
            fields = [v["field"] for d in body["details"] for v in d.get("fieldViolations", [])]
            self.assertEqual(fields, ["webhook.url"], body)
            self.assertIn("NOTIFY_ALLOW_PRIVATE_NETWORKS", body["message"])
        status, _, body = self.rest.request(
            "POST", "/api/channels", {"name": "ssrf", "slack": {"webhookUrl": "http://127.0.0.1/"}})
        self.assertEqual(status, 400, body)
        self.assertIn("slack.webhookUrl", body["message"])


class SmtpAuthTest(RelayTestCase):
    """SMTP_URL with authentication: SMTP_USER and the password from
    SMTP_PASSWORD_FILE (its first line) are sent to a relay that requires
    AUTH; a wrong password is a failed delivery naming the refusal."""

    USER, PASSWORD = "relay-user", "s3cret pass"

    @classmethod
    def setUpClass(cls):
        from aiosmtpd.smtp import AuthResult
        cls.logins = []

        def authenticator(server, session, envelope, mechanism, auth_data):
            cls.logins.append((mechanism, auth_data.login, auth_data.password))
            ok = (auth_data.login, auth_data.password) == (cls.USER.encode(),
                                                           cls.PASSWORD.encode())
            return AuthResult(success=ok)

        cls.pw_dir = tempfile.mkdtemp(prefix="ana-smtp-pw-")
        cls.pw_file = os.path.join(cls.pw_dir, "smtp-password")
        with open(cls.pw_file, "w") as f:
            f.write(cls.PASSWORD + "\nnot part of it\n")
        cls.start_with_relay(env={
            "SMTP_USER": cls.USER,
            "SMTP_PASSWORD": "wrong, SMTP_PASSWORD_FILE wins",
            "SMTP_PASSWORD_FILE": cls.pw_file,
        }, authenticator=authenticator, auth_required=True, auth_require_tls=False)

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            os.remove(cls.pw_file)
            os.rmdir(cls.pw_dir)

    def test_email_is_sent_after_smtp_auth_with_the_password_file(self):
        res = self.send_test_email("auth-mail")
        self.assertEqual(res["outcome"], "delivered", res)
        env = self.mailbox.wait()
        self.assertEqual(env.rcpt_tos, ["oncall@example.com"])
        self.assertTrue(self.logins, "the relay saw no AUTH")
        self.assertEqual(self.logins[-1][1:], (self.USER.encode(), self.PASSWORD.encode()))


class SmtpStarttlsRequiredTest(RelayTestCase):
    """SMTP_URL with ?starttls=required against a relay that offers no
    STARTTLS: nothing is sent in clear text, the delivery fails and says so."""

    @classmethod
    def setUpClass(cls):
        cls.start_with_relay("/?starttls=required")

    def test_required_starttls_refuses_a_relay_without_it(self):
        res = self.send_test_email("tls-mail")
        self.assertEqual(res["outcome"], "failed", res)
        self.assertIn("SMTP", res["error"])
        time.sleep(0.3)
        self.assertEqual(self.mailbox.messages, [], "an email went out without TLS")


class CrashRecoveryTest(unittest.TestCase):

    def test_pending_notification_survives_kill_9_with_its_key(self):
        port = harness.free_port()
        env = {"DEFAULT_ACCOUNT_ID": ACCOUNT, "NOTIFY_ALLOW_PRIVATE_NETWORKS": "true",
               "NOTIFY_BACKOFF_INITIAL": "500ms", "NOTIFY_BACKOFF_MAX": "500ms",
               "NOTIFY_POLL_INTERVAL": "50ms", "NOTIFY_TIMEOUT": "2s"}
        first = harness.start_server(self, env=env)
        rest = RestClient(first.http_port)
        status, _, ch = rest.request("POST", "/api/channels", {
            "name": "crash-hook", "webhook": {"url": "http://127.0.0.1:%d/after" % port}})
        self.assertEqual(status, 200, ch)
        status, _, res = rest.request("POST", "/api/channels/%s/test" % ch["channelId"], {})
        self.assertEqual(status, 200, res)
        self.assertEqual(res["outcome"], "failed", res)  # nothing listens yet
        first.kill()

        receiver = Receiver(port)
        self.addCleanup(receiver.stop)
        # The restarted server serves another account: the outbox is delivered
        # whoever's it is, and the first account's channel is not found there.
        second = harness.Server(env=dict(env, DEFAULT_ACCOUNT_ID="someone-else"))
        second.env["DATA_DIR"] = first.data_dir
        self.addCleanup(second.cleanup)
        second.start()
        path, headers, body = receiver.wait_for(lambda r: r[0] == "/after")
        self.assertEqual(headers["idempotency-key"], res["idempotencyKey"])
        self.assertTrue(verify_signature(ch["webhook"]["signingSecret"],
                                         headers["x-analytics-signature"], body))
        rest2 = RestClient(second.http_port)
        for verb, path in (("GET", "/api/channels/" + ch["channelId"]),
                           ("PUT", "/api/channels/" + ch["channelId"]),
                           ("POST", "/api/channels/%s/test" % ch["channelId"]),
                           ("DELETE", "/api/channels/" + ch["channelId"])):
            body = {"name": "x", "email": {"to": ["a@example.com"]}} if verb == "PUT" else (
                {} if verb == "POST" else None)
            status, _, answer = rest2.request(verb, path, body)
            self.assertEqual(status, 404, (verb, answer))
        status, _, listed = rest2.request("GET", "/api/channels")
        self.assertEqual(listed.get("channels", []), [])
        self.assertEqual(second.stop(), 0)


if __name__ == "__main__":
    unittest.main()

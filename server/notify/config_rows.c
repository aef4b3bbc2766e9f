/* Configuration rows: outbound notifications (SMTP relay, Telegram API, the
 * private-network policy, the sender's retries). Adding a variable = a row here
 * and a member in struct ana_notify_settings. */
#include "ana_notify_config.h"

#define ROW(member) ANA_CONFIG_FIELD(struct ana_notify_settings, member)

static const struct ana_config_row rows[] = {
    {.name = "SMTP_URL",
     .type = ANA_CONFIG_URL,
     .def = "",
     .schemes = "smtp smtps",
     .help = "SMTP relay for email channels: smtp://host:587 (STARTTLS when the server offers "
             "it; add ?starttls=required to insist) or smtps://host:465 (TLS from the start). "
             "Unset: email channels fail with \"SMTP_URL is not set\".",
     ROW(smtp_url)},
    {.name = "SMTP_USER",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "User name for SMTP authentication; unset: none.",
     ROW(smtp_user)},
    {.name = "SMTP_PASSWORD",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "Password for SMTP authentication (prefer SMTP_PASSWORD_FILE).",
     ROW(smtp_password)},
    {.name = "SMTP_PASSWORD_FILE",
     .type = ANA_CONFIG_PATH,
     .def = "",
     .help = "File whose first line is the SMTP password (a mounted secret); read at start-up, "
             "wins over SMTP_PASSWORD.",
     ROW(smtp_password_file)},
    {.name = "SMTP_FROM",
     .type = ANA_CONFIG_STRING,
     .def = "analyticsd@localhost",
     .help = "The From address of notification emails.",
     ROW(smtp_from)},
    {.name = "TELEGRAM_API_URL",
     .type = ANA_CONFIG_URL,
     .def = "https://api.telegram.org",
     .schemes = "http https",
     .help = "Base URL of the Telegram Bot API; messages go to <url>/bot<token>/sendMessage.",
     ROW(telegram_api_url)},
    {.name = "NOTIFY_ALLOW_PRIVATE_NETWORKS",
     .type = ANA_CONFIG_BOOL,
     .def = "false",
     .help = "Allow Slack, webhook and Telegram targets on loopback, private, link-local, "
             "CGNAT and other non-public addresses (refused by default, at creation and at "
             "every delivery, against server-side request forgery).",
     ROW(allow_private_networks)},
    {.name = "NOTIFY_THREADS",
     .type = ANA_CONFIG_INT,
     .def = "2",
     .min = 1,
     .max = 64,
     .help = "Threads delivering notifications; also how many deliveries run at once.",
     ROW(notify_threads)},
    {.name = "NOTIFY_MAX_ATTEMPTS",
     .type = ANA_CONFIG_INT,
     .def = "8",
     .min = 1,
     .max = 100,
     .help = "Delivery attempts per notification before it is marked failed.",
     ROW(notify_max_attempts)},
    {.name = "NOTIFY_BACKOFF_INITIAL",
     .type = ANA_CONFIG_DURATION,
     .def = "1s",
     .min = 1,
     .max = 3600000,
     .help = "Retry delay cap after the first failed attempt; it doubles per attempt up to "
             "NOTIFY_BACKOFF_MAX, and each delay is drawn uniformly below the cap (full "
             "jitter).",
     ROW(notify_backoff_initial_ms)},
    {.name = "NOTIFY_BACKOFF_MAX",
     .type = ANA_CONFIG_DURATION,
     .def = "10m",
     .min = 1,
     .max = 86400000,
     .help = "Largest retry delay between delivery attempts.",
     ROW(notify_backoff_max_ms)},
    {.name = "NOTIFY_TIMEOUT",
     .type = ANA_CONFIG_DURATION,
     .def = "10s",
     .min = 100,
     .max = 300000,
     .help = "Time limit of one delivery attempt (connect, send, answer), and of a channel "
             "test.",
     ROW(notify_timeout_ms)},
    {.name = "NOTIFY_POLL_INTERVAL",
     .type = ANA_CONFIG_DURATION,
     .def = "1s",
     .min = 10,
     .max = 60000,
     .help = "How often the sender looks for notifications due for a retry (new ones wake it "
             "at once).",
     ROW(notify_poll_ms)},
};

const struct ana_config_table ana_notify_config_table = ANA_CONFIG_TABLE("notify", rows);

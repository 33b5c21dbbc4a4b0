//! The AlertProvider senders, shared by the canary's alerts and the global
//! `notifications:`: the payload each provider type expects (Slack, Rocket.Chat, MS
//! Teams, Discord, Google Chat, generic), the POST itself, and redaction of credentials
//! from the text. Where the address comes from (a Secret, a file, an env var) is the
//! caller's business; an address never appears in an error.

use serde_json::{json, Value};
use std::time::Duration;

/// Flagger's alert severities, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Progress worth knowing.
    Info,
    /// Something needs a look.
    Warn,
    /// Something failed.
    Error,
}

impl Severity {
    /// Parses `info`, `warn` or `error`; anything else is refused.
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "warn" => Some(Severity::Warn),
            "error" => Some(Severity::Error),
            _ => None,
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
        }
    }
}

/// An AlertProvider's `spec.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Slack incoming webhook.
    Slack,
    /// Rocket.Chat, which takes Slack's payload.
    Rocket,
    /// Microsoft Teams connector card.
    MsTeams,
    /// Discord webhook.
    Discord,
    /// Google Chat webhook.
    GChat,
    /// Any HTTP endpoint taking JSON.
    Generic,
}

impl Kind {
    /// Parses a provider type, naming the supported ones when it is not one.
    pub fn parse(s: &str) -> Result<Kind, String> {
        Ok(match s {
            "slack" => Kind::Slack,
            "rocket" => Kind::Rocket,
            "msteams" => Kind::MsTeams,
            "discord" => Kind::Discord,
            "gchat" => Kind::GChat,
            "generic" => Kind::Generic,
            other => {
                return Err(format!(
                    "unsupported provider type {other:?}: use slack, rocket, msteams, discord, gchat or generic"
                ))
            }
        })
    }
}

/// A provider's presentation settings (`spec.channel`, `spec.username`).
#[derive(Clone, Debug, Default)]
pub struct Style {
    /// Slack/Rocket channel; the webhook's default when unset.
    pub channel: Option<String>,
    /// Name messages are posted as; `gitcanary` when unset.
    pub username: Option<String>,
}

/// One message to a provider.
#[derive(Clone, Debug)]
pub struct Alert<'a> {
    /// What it is about, e.g. `podinfo.test` or `GitRepository/flux-system`.
    pub subject: &'a str,
    /// Its severity.
    pub severity: Severity,
    /// The text.
    pub message: &'a str,
    /// The fields a generic endpoint receives beside `severity` and `message`
    /// (`name` and `namespace` for a canary, as Flagger sends).
    pub fields: serde_json::Map<String, Value>,
}

/// The JSON body `kind` expects for `alert`.
pub fn body(kind: Kind, style: &Style, alert: &Alert) -> Value {
    let text = format!("{}: {}", alert.subject, alert.message);
    let username = style.username.as_deref().unwrap_or("gitcanary");
    match kind {
        Kind::Slack | Kind::Rocket => {
            json!({"text": text, "channel": style.channel, "username": username})
        }
        Kind::GChat => json!({"text": text}),
        Kind::Discord => json!({"content": text, "username": username}),
        Kind::MsTeams => json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": alert.subject,
            "themeColor": if alert.severity == Severity::Info { "0076D7" } else { "FF0000" },
            "title": alert.subject,
            "text": alert.message,
        }),
        Kind::Generic => {
            let mut m = alert.fields.clone();
            m.insert("severity".into(), alert.severity.as_str().into());
            m.insert("message".into(), alert.message.into());
            Value::Object(m)
        }
    }
}

/// POSTs `body` to `url`. The error never holds the URL (it may carry a token) and
/// quotes the first 200 characters of a refusal.
pub async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Result<(), String> {
    let resp = http
        .post(url)
        .timeout(Duration::from_secs(10))
        .json(body)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = resp.status();
    // Read (capped) so the connection is reused and a refusal can say why.
    let body = crate::util::http::read_response(
        resp,
        crate::util::http::SMALL_BODY,
        "alert provider response",
    )
    .await;
    if status.is_success() {
        return Ok(());
    }
    let why = match body {
        Ok(b) => String::from_utf8_lossy(&b)
            .trim()
            .chars()
            .take(200)
            .collect(),
        Err(e) => e.to_string(),
    };
    Err(match why.is_empty() {
        true => format!("provider answered {status}"),
        false => format!("provider answered {status}: {why}"),
    })
}

/// `text` with every `secrets` value and the credentials of every URL in it
/// (`scheme://user:pass@host`) replaced by `***`: messages leave the process.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s.as_str(), "***");
    }
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        result.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '"' | '\'' | '>' | ')'))
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                result.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    result.push_str(rest);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(severity: Severity) -> Alert<'static> {
        let mut fields = serde_json::Map::new();
        fields.insert("name".into(), "podinfo".into());
        Alert {
            subject: "podinfo.test",
            severity,
            message: "Canary failed! Rolling back",
            fields,
        }
    }

    #[test]
    fn each_provider_gets_its_payload() {
        let style = Style {
            channel: Some("ops".into()),
            username: None,
        };
        let slack = body(Kind::Slack, &style, &alert(Severity::Error));
        assert_eq!(slack["text"], "podinfo.test: Canary failed! Rolling back");
        assert_eq!(slack["channel"], "ops");
        assert_eq!(slack["username"], "gitcanary");
        let teams = body(Kind::MsTeams, &style, &alert(Severity::Info));
        assert_eq!(teams["themeColor"], "0076D7");
        assert_eq!(teams["title"], "podinfo.test");
        let generic = body(Kind::Generic, &style, &alert(Severity::Warn));
        assert_eq!(
            generic,
            json!({"name": "podinfo", "severity": "warn", "message": "Canary failed! Rolling back"})
        );
        assert_eq!(
            body(Kind::Discord, &style, &alert(Severity::Info))["content"],
            "podinfo.test: Canary failed! Rolling back"
        );
        assert!(Kind::parse("pagerduty")
            .unwrap_err()
            .contains("use slack, rocket"));
        assert!(Severity::parse("error") > Severity::parse("warn"));
        assert_eq!(Severity::parse("fatal"), None);
    }

    #[test]
    fn credentials_and_known_secrets_are_redacted() {
        let text = "fetch https://bot:ghp_s3cret@github.com/org/repo.git failed; token ghp_s3cret; see http://example.com/a@b";
        let got = redact(text, &["ghp_s3cret".into()]);
        assert_eq!(
            got,
            "fetch https://***@github.com/org/repo.git failed; token ***; see http://example.com/a@b"
        );
        assert_eq!(
            redact("ssh://git@host:22/x and more", &[]),
            "ssh://***@host:22/x and more"
        );
        assert_eq!(redact("no urls here", &["ab".into()]), "no urls here");
    }
}

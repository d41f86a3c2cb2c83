//! Amazon SES notifications delivered by mail (SNS e-mail subscriptions): a JSON document whose
//! `notificationType` (or `eventType`) is `Bounce`, `Complaint` or `Delivery`. The JSON carries
//! the per-recipient action, status and diagnostic that a DSN would, plus the original headers.

use serde_json::Value;

use super::{Action, Original, Reason, Report, classify, kind_for, reason, text};
use crate::model::FeedbackKind;

/// Reports from an SES notification found in `body`; `None` when the body holds none.
pub(crate) fn parse(body: &str) -> Option<(Vec<Report>, Original)> {
    let start = body.find('{')?;
    if !body.contains("notificationType") && !body.contains("eventType") {
        return None;
    }
    // The JSON is followed by SNS's unsubscribe footer: read one value and ignore the rest.
    // Long lines may have been folded by the mailer: join them back first.
    let json: String = body[start..].lines().collect::<Vec<_>>().join("");
    let mut value: Value = serde_json::Deserializer::from_str(&json)
        .into_iter::<Value>()
        .next()?
        .ok()?;
    // Raw SNS delivery wraps the notification as a JSON string in "Message".
    if value.get("notificationType").is_none()
        && value.get("eventType").is_none()
        && let Some(inner) = value.get("Message").and_then(Value::as_str)
    {
        value = serde_json::from_str(inner).ok()?;
    }
    let kind = value
        .get("notificationType")
        .or_else(|| value.get("eventType"))
        .and_then(Value::as_str)?;
    let original = original(value.get("mail"));
    let reports = match kind {
        "Bounce" => bounces(value.get("bounce")?),
        "Complaint" => complaints(value.get("complaint")?),
        "Delivery" => deliveries(value.get("delivery")?),
        _ => return None,
    };
    Some((reports, original))
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn bounces(bounce: &Value) -> Vec<Report> {
    let permanent = str_at(bounce, "bounceType") == Some("Permanent");
    let subtype = str_at(bounce, "bounceSubType").unwrap_or("");
    let remote_mta =
        str_at(bounce, "reportingMTA").map(|m| text::cap(super::strip_type(m).to_owned(), 255));
    let Some(list) = bounce.get("bouncedRecipients").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .take(super::MAX_REPORTS)
        .filter_map(|r| {
            let recipient = text::first_address(str_at(r, "emailAddress")?)?;
            let diagnostic = str_at(r, "diagnosticCode")
                .map(|d| text::cap(super::strip_type(d).to_owned(), super::MAX_DIAGNOSTIC))
                .unwrap_or_default();
            let status = str_at(r, "status")
                .and_then(text::find_status)
                .or_else(|| text::find_status_in_text(&diagnostic));
            let reply_code = text::find_reply_code(&diagnostic);
            let action = str_at(r, "action").and_then(Action::parse);
            let mut reason = classify::classify(&reason::Evidence {
                status: status.as_deref(),
                reply_code,
                action,
                diagnostic: &diagnostic,
                context: "",
                diagnostic_type: None,
                recipient: Some(&recipient),
                remote_host: str_at(r, "remoteMtaIp").or_else(|| str_at(r, "reportingMTA")),
                reporting_host: None,
            });
            if reason == Reason::Undefined {
                reason = match subtype {
                    "NoEmail" => Reason::UserUnknown,
                    "MailboxFull" => Reason::MailboxFull,
                    "MessageTooLarge" => Reason::MesgTooBig,
                    "ContentRejected" | "AttachmentRejected" => Reason::SecurityError,
                    "Suppressed" | "OnAccountSuppressionList" => Reason::Suspend,
                    _ if !permanent => Reason::Expired,
                    _ => Reason::Undefined,
                };
            }
            Some(Report {
                kind: kind_for(reason, status.as_deref(), reply_code),
                action: Some(super::final_action(action, reason, status.as_deref())),
                recipient,
                status,
                reply_code,
                diagnostic,
                remote_mta: remote_mta.clone(),
                reason,
                feedback_type: None,
                original: Original::default(),
                original_recipient: None,
            })
        })
        .collect()
}

fn complaints(complaint: &Value) -> Vec<Report> {
    let feedback_type = str_at(complaint, "complaintFeedbackType")
        .map(str::to_ascii_lowercase)
        .or_else(|| Some("abuse".to_owned()));
    let Some(list) = complaint
        .get("complainedRecipients")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let user_agent = text::cap(
        str_at(complaint, "userAgent").unwrap_or("").to_owned(),
        super::MAX_DIAGNOSTIC,
    );
    list.iter()
        .take(super::MAX_REPORTS)
        .filter_map(|r| text::first_address(str_at(r, "emailAddress")?))
        .map(|recipient| Report {
            recipient,
            action: None,
            status: None,
            reply_code: None,
            diagnostic: user_agent.clone(),
            remote_mta: None,
            kind: FeedbackKind::Complaint,
            reason: Reason::Feedback,
            feedback_type: feedback_type.clone(),
            original: Original::default(),
            original_recipient: None,
        })
        .collect()
}

fn deliveries(delivery: &Value) -> Vec<Report> {
    let response = text::cap(
        str_at(delivery, "smtpResponse").unwrap_or("").to_owned(),
        super::MAX_DIAGNOSTIC,
    );
    let status = text::find_status(&response);
    let Some(list) = delivery.get("recipients").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .take(super::MAX_REPORTS)
        .filter_map(|r| r.as_str().and_then(text::first_address))
        .map(|recipient| Report {
            recipient,
            action: Some(Action::Delivered),
            status: status.clone(),
            reply_code: text::find_reply_code(&response),
            diagnostic: response.clone(),
            remote_mta: str_at(delivery, "reportingMTA").map(|m| text::cap(m.to_owned(), 255)),
            kind: FeedbackKind::Delivered,
            reason: Reason::Delivered,
            feedback_type: None,
            original: Original::default(),
            original_recipient: None,
        })
        .collect()
}

/// The original's identifying headers, from `mail.headers` (a list of name/value pairs).
fn original(mail: Option<&Value>) -> Original {
    let mut out = Original::default();
    let Some(headers) = mail
        .and_then(|m| m.get("headers"))
        .and_then(Value::as_array)
    else {
        return out;
    };
    for h in headers {
        let (Some(name), Some(value)) = (str_at(h, "name"), str_at(h, "value")) else {
            continue;
        };
        let value = text::prefix(value.trim(), super::mime::MAX_FIELD);
        match name.to_ascii_lowercase().as_str() {
            "message-id" => {
                out.message_id = Some(value.trim_matches(['<', '>']).to_owned());
            }
            "x-mailroom-token" => out.token = Some(value.to_owned()),
            "x-mailroom-campaign" => out.campaign = Some(value.to_owned()),
            "to" => out.to = text::first_address(value),
            "from" => out.from = text::first_address(value),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bounce_notification_gives_reports_and_original_headers() {
        let body = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent",
"bounceSubType":"General","bouncedRecipients":[{"emailAddress":"gone@example.org",
"action":"failed","status":"5.1.1","diagnosticCode":"smtp; 550 5.1.1 user unknown"}],
"reportingMTA":"dsn; a1.amazonses.com"},"mail":{"headers":[{"name":"X-Mailroom-Token",
"value":"tok123"},{"name":"Message-ID","value":"<m@example.com>"}]}}
--
If you wish to stop receiving notifications..."#;
        let (reports, original) = parse(body).unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].recipient, "gone@example.org");
        assert_eq!(reports[0].kind, FeedbackKind::Hard);
        assert_eq!(reports[0].remote_mta.as_deref(), Some("a1.amazonses.com"));
        assert_eq!(original.token.as_deref(), Some("tok123"));
        assert_eq!(original.message_id.as_deref(), Some("m@example.com"));
    }

    #[test]
    fn complaint_and_delivery_notifications() {
        let c = r#"{"notificationType":"Complaint","complaint":{"complainedRecipients":[{"emailAddress":"r@example.org"}],"complaintFeedbackType":"abuse"}}"#;
        let (reports, _) = parse(c).unwrap();
        assert_eq!(reports[0].kind, FeedbackKind::Complaint);
        let d = r#"{"notificationType":"Delivery","delivery":{"recipients":["r@example.org"],"smtpResponse":"250 2.6.0 Message received"}}"#;
        let (reports, _) = parse(d).unwrap();
        assert_eq!(reports[0].kind, FeedbackKind::Delivered);
        assert_eq!(reports[0].status.as_deref(), Some("2.6.0"));
        assert!(parse("{\"hello\": 1}").is_none());
        // The SNS envelope (raw message delivery off) carries the notification as a string.
        let wrapped = serde_json::json!({"Type": "Notification", "Message": c}).to_string();
        let (reports, _) = parse(&wrapped).unwrap();
        assert_eq!(reports[0].recipient, "r@example.org");
    }
}

//! What a notification says: subject, plain text, HTML and the webhook's JSON, from the notice
//! and the names it is about. No I/O; the wording follows the reference product's emails.

use ism_events::NoticeKind;
use ism_projectors::audit::format_time;
use ism_projectors::notices::Notice;
use serde_json::json;
use uuid::Uuid;

/// The names and links a message shows.
#[derive(Debug, Clone)]
pub struct About {
    pub gateway: Uuid,
    pub gateway_name: String,
    /// The endpoint, for endpoint notices.
    pub endpoint: Option<(Uuid, String)>,
    /// Base URL of the management page (`https://gateway.corp.example:7070`).
    pub manage_url: String,
    /// Months without scan activity after which a gateway is deleted.
    pub retention_months: u32,
}

#[derive(Debug, Clone)]
pub struct Message {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The webhook body.
    pub json: serde_json::Value,
}

/// `<b>` in a name stays text in the HTML part.
fn html_escaped(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn compose(kind: NoticeKind, notice: &Notice, about: &About) -> Message {
    let gateway = &about.gateway_name;
    let endpoint = about.endpoint.as_ref().map(|(_, n)| n.as_str()).unwrap_or("");
    let link = match &about.endpoint {
        Some((id, _)) => {
            format!("{}/#/gateways/{}/endpoints/{id}", about.manage_url, about.gateway)
        }
        None => format!("{}/#/gateways/{}", about.manage_url, about.gateway),
    };
    let since = format_time(notice.since_ms);
    let deadline = notice.deadline_ms.map(format_time).unwrap_or_default();
    let (subject, what, todo) = match kind {
        NoticeKind::EndpointOffline => (
            format!("Endpoint {endpoint} of gateway {gateway} is offline"),
            format!("Endpoint {endpoint} of gateway {gateway} has been offline since {since}."),
            "URL scans using this endpoint cannot complete while the endpoint is offline. If you had an analysis in progress, you will need to restart it when the endpoint is back online. To get the endpoint back online, check that its service is running on its machine (`ism-endpoint status`) and that the machine can reach the gateway; run the endpoint's diagnostics for details.".to_string(),
        ),
        NoticeKind::EndpointOnline => (
            format!("Endpoint {endpoint} of gateway {gateway} is back online"),
            format!("Endpoint {endpoint} of gateway {gateway}, offline since {since}, is back online."),
            "If you had an analysis in progress when the endpoint went offline, you need to restart it now.".to_string(),
        ),
        NoticeKind::EndpointUnstable => (
            format!("Endpoint {endpoint} of gateway {gateway} is unstable"),
            format!("Endpoint {endpoint} of gateway {gateway} is unstable, repeatedly switching between online and offline (the last time at {since})."),
            format!("This instability might impact analyses that are in progress. Check the connection between your network and the machine running the endpoint; if the connection is consistent and the endpoint remains unstable, contact your gateway's administrators. Your notifications for this endpoint will resume if its status changes again after {}.", notice.pause_until_ms.map(format_time).unwrap_or_default()),
        ),
        NoticeKind::GatewayOffline => (
            format!("Gateway {gateway} is offline"),
            format!("Gateway {gateway} and its endpoints have been offline since {since}: no gateway node serves it."),
            "URL scans using this gateway cannot complete while the gateway is offline. You will get an email when the gateway and its endpoints are back online.".to_string(),
        ),
        NoticeKind::GatewayOnline => (
            format!("Gateway {gateway} is back online"),
            format!("Gateway {gateway}, offline since {since}, is back online."),
            "If you had an analysis in progress when the gateway went offline, you need to restart it now.".to_string(),
        ),
        NoticeKind::RetentionWarning => (
            format!("Gateway {gateway} will be deleted on {deadline} for inactivity"),
            format!("Gateway {gateway} has had no scan activity since {since}. Gateways without scan activity for {} months are deleted with their endpoints: this one will be on {deadline}.", about.retention_months),
            "To keep the gateway, run a scan through it before then (a recurring analysis that uses it keeps it from being deleted).".to_string(),
        ),
        NoticeKind::GatewayRetired => (
            format!("Gateway {gateway} was deleted for inactivity"),
            format!("Gateway {gateway} had no scan activity since {since} and was deleted with its endpoints on {deadline}. Its name stays listed among the deleted gateways."),
            "To scan internal web applications or REST APIs again, create a new gateway and endpoint.".to_string(),
        ),
    };
    let text = format!("{what}\n\n{todo}\n\nView it on the management page: {link}\n");
    let html = format!(
        "<html><body><p>{}</p><p>{}</p><p><a href=\"{}\">View it on the management page</a></p></body></html>",
        html_escaped(&what),
        html_escaped(&todo),
        html_escaped(&link)
    );
    let json = json!({
        "id": notice.id,
        "kind": kind.as_str(),
        "subject": subject,
        "text": what,
        "gateway": { "id": about.gateway, "name": gateway },
        "endpoint": about.endpoint.as_ref().map(|(id, name)| json!({ "id": id, "name": name })),
        "since_ms": notice.since_ms,
        "due_ms": notice.due_ms,
        "paused_until_ms": notice.pause_until_ms,
        "deletion_ms": notice.deadline_ms,
        "link": link,
    });
    Message { subject, text, html, json }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ism_projectors::notices::Action;

    fn notice(kind: NoticeKind) -> Notice {
        Notice {
            id: Uuid::from_u128(9),
            action: Action::Send(kind),
            subject: Uuid::from_u128(1),
            gateway: Uuid::from_u128(2),
            due_ms: 1_800_000_120_000,
            since_ms: 1_800_000_000_000,
            suppressed: None,
            pause_until_ms: Some(1_800_086_400_000),
            deadline_ms: Some(1_810_000_000_000),
        }
    }

    fn about() -> About {
        About {
            gateway: Uuid::from_u128(2),
            gateway_name: "corp <lab>".into(),
            endpoint: Some((Uuid::from_u128(1), "dc1".into())),
            manage_url: "https://gw.corp.example:7070".into(),
            retention_months: 4,
        }
    }

    #[test]
    fn each_kind_names_what_happened_when_and_what_to_do() {
        for kind in NoticeKind::ALL {
            let m = compose(kind, &notice(kind), &about());
            assert!(m.subject.contains("corp <lab>"), "{kind:?}: {}", m.subject);
            assert!(m.text.contains("https://gw.corp.example:7070/#/gateways/"), "{}", m.text);
            assert!(m.html.contains("corp &lt;lab&gt;") && !m.html.contains("<lab>"), "{}", m.html);
            assert_eq!(m.json["kind"], kind.as_str());
            assert_eq!(m.json["id"], Uuid::from_u128(9).to_string());
        }
        let offline =
            compose(NoticeKind::EndpointOffline, &notice(NoticeKind::EndpointOffline), &about());
        assert_eq!(offline.subject, "Endpoint dc1 of gateway corp <lab> is offline");
        assert!(
            offline.text.contains("offline since 2027-01-15 08:00:00.000Z"),
            "{}",
            offline.text
        );
        assert!(offline.text.contains("restart it when the endpoint is back online"));
        let unstable =
            compose(NoticeKind::EndpointUnstable, &notice(NoticeKind::EndpointUnstable), &about());
        assert!(
            unstable
                .text
                .contains("resume if its status changes again after 2027-01-16 08:00:00.000Z"),
            "{}",
            unstable.text
        );
    }
}

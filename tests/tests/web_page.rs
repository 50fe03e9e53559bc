//! The Internal Scanning Management page in a real Chromium: sign in with a token; the gateways
//! (created and deleted from the page, deleted ones listed); the configure wizard from a new
//! gateway to a real agent started with the settings the page shows, its row turning Ready
//! without a reload; the endpoint's actions (Copy Endpoint Key, Manage Access ending a running
//! scanner stream, Edit with its conflict, Rotate key, Delete); scans started, followed and
//! downloaded; the audit with filters and pages; notification settings; and a reviewer's view
//! without any manage action. A failing test leaves `target/screenshots/<test>-failed.png`.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use awc::http::Method;
use fantoccini::Locator;
use ism_tests::browser::Browser;
use ism_tests::cluster::{
    connected, connected_endpoint, echo_server, eventually, provision, round_trip, socks_open,
    Backend, TestMachine, TestNode, PATIENCE,
};
use tokio::io::AsyncReadExt;

async fn sign_in(browser: &Browser, base: &str, token: &str) {
    browser.client.goto(base).await.unwrap();
    browser.fill("#token", token).await;
    browser.click("#sign-in-form button").await;
}

async fn sign_out(browser: &Browser) {
    browser.click("#sign-out").await;
    browser.text_appears("#sign-in h2", "Sign in").await;
}

async fn create_gateway(browser: &Browser, name: &str) {
    browser.fill("#gateway-new-name", name).await;
    browser.click("#create-gateway button").await;
}

/// Waits until no dialog covers the page (one closes once its request is answered).
async fn no_dialog_open(browser: &Browser) {
    eventually("no dialog open", || async { (!browser.shows("dialog[open]").await).then_some(()) })
        .await;
}

/// Clicks `button` in the table row (`rows`) showing `text`.
async fn in_row(browser: &Browser, rows: &str, text: &str, button: &str) {
    no_dialog_open(browser).await;
    let row = browser.text_appears(rows, text).await;
    row.find(Locator::Css(button)).await.unwrap().click().await.unwrap();
}

/// As [`in_row`], then the confirmation dialog's button.
async fn confirmed(browser: &Browser, rows: &str, text: &str, button: &str) {
    in_row(browser, rows, text, button).await;
    browser.click("#confirm-yes").await;
}

/// A reviewer, "rita": her token and its id.
async fn reviewer(api: &ism_cli::ApiClient) -> (String, String) {
    api.create_user("rita", "reviewer", None).await.unwrap();
    let token = api.issue_token("rita", "browser").await.unwrap();
    (token["token"].as_str().unwrap().to_string(), token["id"].as_str().unwrap().to_string())
}

#[actix::test]
async fn a_manager_watches_an_endpoint_turn_ready_and_a_reviewer_sees_no_manage_actions() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let api = node.api();
    let p = provision(&api, "dc1").await;
    let base = format!("http://{}/", node.addresses.api);
    let browser = Browser::start().await;
    browser
        .run("endpoints-table", async {
            // A wrong token is told inline, and nothing else is shown.
            sign_in(&browser, &base, "ismt_wrong").await;
            browser.text_appears("#sign-in-error", "Sign-in failed").await;
            assert!(!browser.shows("#nav").await);

            sign_in(&browser, &base, &node.admin_token).await;
            browser.text_appears("#user", "admin").await;
            browser.text_appears("#gateways-table tbody tr", "test-gateway").await;

            // Create a gateway; the API's refusal of a non-ASCII name is shown beside the form.
            create_gateway(&browser, "lab").await;
            browser.text_appears("#gateways-table tbody tr", "lab").await;
            create_gateway(&browser, "l\u{e4}b").await;
            browser.text_appears("#create-gateway-error", "ASCII").await;
            // A gateway with endpoints is not deleted: the reason is shown in the dialog.
            confirmed(
                &browser,
                "#gateways-table tbody tr",
                "test-gateway",
                "button.delete-gateway",
            )
            .await;
            browser.text_appears("#confirm-error", "still has endpoints (dc1)").await;
            browser.click("#confirm-dialog .close").await;
            // An empty one is, and is then listed among the deleted gateways.
            confirmed(&browser, "#gateways-table tbody tr", "lab", "button.delete-gateway").await;
            browser.text_appears("#deleted-table tbody tr", "lab").await;
            no_dialog_open(&browser).await;

            let row = browser.text_appears("#gateways-table tbody tr", "test-gateway").await;
            row.find(Locator::Css("a")).await.unwrap().click().await.unwrap();
            browser.text_appears("#endpoints-table tbody tr", "Pending").await;

            // The agent connects: the row turns Ready on its own.
            let machine = TestMachine::new();
            // A port nothing listens on (the test reaches no target).
            let closed = ism_tests::ReservedPort::new();
            let agent =
                machine.start_endpoint(&node, &p.key, &format!("127.0.0.1:{}", closed.port));
            connected(&agent).await;
            let row = browser.text_appears("#endpoints-table tbody tr", "Ready").await;
            browser.screenshot("endpoints-table").await;
            for line in ["#error", "#stale"] {
                assert_eq!(
                    browser.element(line).await.text().await.unwrap(),
                    "",
                    "{line} says nothing"
                );
            }

            // Copy Endpoint Key (managers): the key the API gives.
            row.find(Locator::Css("button.copy-key")).await.unwrap().click().await.unwrap();
            let key = browser.element("#key-value").await;
            let key = &key;
            let shown = eventually("the key shown", || async move {
                key.prop("value").await.ok()?.filter(|v| !v.is_empty())
            })
            .await;
            assert_eq!(shown, p.key);

            // A reviewer sees the same pages without any manage action (absent, not failing).
            let (token, token_id) = reviewer(&api).await;
            sign_out(&browser).await;
            sign_in(&browser, &base, &token).await;
            browser.text_appears("#user", "rita (reviewer)").await;
            let row = browser.text_appears("#gateways-table tbody tr", "test-gateway").await;
            for manage in ["#create-gateway", "a[href='#configure']", "button.delete-gateway"] {
                assert!(!browser.shows(manage).await, "a reviewer sees no {manage}");
            }
            row.find(Locator::Css("a")).await.unwrap().click().await.unwrap();
            browser.text_appears("#endpoints-table tbody tr", "Ready").await;
            assert!(
                !browser.shows("#endpoints-table button").await,
                "a reviewer has no row actions"
            );
            assert!(!browser.shows("#add-endpoint").await);
            browser.click("a[href='#scans']").await;
            browser.text_appears("#scans-empty", "No scans yet").await;
            assert!(!browser.shows("#start-scan").await, "a reviewer starts no scan");
            // A link to the wizard shows a reviewer the gateways instead.
            browser.client.goto(&format!("{base}#configure")).await.unwrap();
            browser.text_appears("#gateways-table tbody tr", "test-gateway").await;
            assert!(!browser.shows("#configure").await);
            // Her token revoked meanwhile: the next refresh brings the sign-in form back.
            api.revoke_token("rita", &token_id).await.unwrap();
            browser.text_appears("#sign-in h2", "Sign in").await;
            assert!(!browser.shows("#gateways").await);
            agent.stop();
        })
        .await;
    browser.client.clone().close().await.unwrap();
}

#[actix::test]
async fn the_wizard_configures_an_endpoint_a_real_agent_connects_with_and_its_row_manages_it() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let api = node.api();
    let base = format!("http://{}/", node.addresses.api);
    let echo = echo_server().await;
    let browser = Browser::start().await;
    let machine = TestMachine::new();
    browser
        .run("wizard", async {
            sign_in(&browser, &base, &node.admin_token).await;
            browser.click("a[href='#configure']").await;

            // 1. The gateway (the API's ASCII rule told inline), 2. the endpoint.
            browser.fill("#wizard-gateway-name", "l\u{e4}b").await;
            browser.submit("#step-gateway").await;
            browser.text_appears("#step-gateway-error", "ASCII").await;
            browser.fill("#wizard-gateway-name", "lab").await;
            browser.submit("#step-gateway").await;
            browser.text_appears("#wizard-gateway", "lab").await;
            browser.fill("#wizard-endpoint-name", "dc2").await;
            browser.fill("#wizard-endpoint-description", "lab machine").await;
            browser.submit("#step-endpoint").await;

            // 3. Install: the key, the command and the properties with what the gateway knows.
            browser.text_appears("#install-endpoint", "dc2").await;
            let gateways = api.gateways().await.unwrap();
            let lab = gateways.as_array().unwrap().iter().find(|g| g["name"] == "lab").unwrap();
            let lab = lab["id"].as_str().unwrap().to_string();
            let endpoints = api.endpoints(&lab).await.unwrap();
            let dc2 = endpoints[0]["id"].as_str().unwrap().to_string();
            let key = api.endpoint_key(&dc2).await.unwrap();
            assert_eq!(browser.value("#install-key").await, key);
            let allowed = format!("127.0.0.1:{}", echo.port());
            browser.fill("#allowed-targets", &allowed).await;
            let gateway = node.addresses.endpoint_wss.to_string();
            let command = browser.element("#install-command").await.text().await.unwrap();
            for part in [
                format!("--key '{key}'"),
                format!("--gateway '{gateway}'"),
                "--gateway-ca gateway-ca.pem".into(),
                format!("--allowed-targets '{allowed}'"),
            ] {
                assert!(command.contains(&part), "{part} in {command}");
            }
            // The proxy settings of the seed's "Manual configuration" go into both.
            browser.click("#proxy-manual").await;
            browser.fill("#proxy-host", "proxy.corp").await;
            browser.fill("#proxy-port", "3128").await;
            browser.click("input[name=proxy-scope][value=gatewayAndUrls]").await;
            browser.click("#proxy-resolve-urls").await;
            browser.fill("#proxy-exclusions", "intranet.corp, *.lab.corp").await;
            browser.click("#proxy-auth").await;
            browser.fill("#proxy-user", "svc it's").await;
            assert!(browser.shows("#proxy-auth-note").await);
            let command = browser.element("#install-command").await.text().await.unwrap();
            for part in [
                "--proxy-host 'proxy.corp'",
                "--proxy-port '3128'",
                "--proxy-scope gatewayAndUrls",
                "--proxy-resolve-urls no",
                "--proxy-exclusions 'intranet.corp, *.lab.corp'",
                "--proxy-user 'svc it'\\''s'",
            ] {
                assert!(command.contains(part), "{part} in {command}");
            }
            browser.fill("#proxy-port", "70000").await;
            browser.text_appears("#install-problem", "a port from 1 to 65535").await;
            assert_eq!(browser.value("#properties").await, "");
            browser.fill("#proxy-port", "3128").await;
            let proxied = browser.value("#properties").await;
            for line in [
                "proxyHost = proxy.corp",
                "proxyPort = 3128",
                "proxyScope = gatewayAndUrls",
                "proxyResolveUrlHostname = false",
                "proxyExclusionList = intranet.corp, *.lab.corp",
            ] {
                assert!(proxied.lines().any(|l| l == line), "{line} in {proxied}");
            }
            assert!(!proxied.contains("svc"), "no credentials in the file: {proxied}");
            browser.screenshot("configure-install").await;
            // This machine has no proxy.
            browser.click("#proxy-manual").await;
            let properties = browser.value("#properties").await;
            assert!(!properties.contains("proxy"), "{properties}");
            for line in [format!("token = {key}"), format!("allowedTargets = {allowed}")] {
                assert!(properties.lines().any(|l| l == line), "{line} in {properties}");
            }

            // The downloads are exactly what is shown, and the node's own CA.
            browser.click("#download-properties").await;
            let saved = browser.downloaded("application.properties").await;
            assert_eq!(std::fs::read_to_string(saved).unwrap(), properties);
            browser.click("#download-ca").await;
            let ca = std::fs::read_to_string(browser.downloaded("gateway-ca.pem").await).unwrap();
            assert_eq!(ca, std::fs::read_to_string(&node.ca_file).unwrap());

            // 4. Connect: Pending until a real agent starts with those two files, then Ready.
            browser.submit("#step-install").await;
            browser.text_appears("#connect-status", "Pending").await;
            let agent = machine.start_endpoint_from(&properties, &ca);
            browser.text_appears("#connect-status", "Ready (version").await;
            browser.click("#wizard-done").await;
            let row = browser.text_appears("#endpoints-table tbody tr", "Ready").await;
            assert!(!row
                .find(Locator::Css("button.set-up"))
                .await
                .unwrap()
                .is_displayed()
                .await
                .unwrap());

            // Manage Access: scan access off ends a running scanner stream.
            let credential = api.issue_scanner_credential(&lab, "browser").await.unwrap();
            let secret = credential["secret"].as_str().unwrap();
            let socks = node.socks();
            let (socks, secret) = (&socks, secret);
            let mut stream = eventually("a scanner stream through dc2", || async move {
                let (code, stream) = socks_open(socks, "dc2", secret, echo.port()).await;
                (code == 0).then_some(stream).flatten()
            })
            .await;
            round_trip(&mut stream).await.unwrap();
            in_row(&browser, "#endpoints-table tbody tr", "dc2", "button.access").await;
            browser.text_appears("#access-endpoint", "dc2").await;
            assert!(browser.element("#access-scan").await.is_selected().await.unwrap());
            browser.click("#access-scan").await;
            browser.submit("#access-form").await;
            let mut byte = [0u8; 1];
            let ended = tokio::time::timeout(PATIENCE, stream.read(&mut byte)).await;
            assert!(matches!(ended, Ok(Ok(0) | Err(_))), "the stream ended: {ended:?}");
            browser.text_appears("#endpoints-table tbody td:nth-child(6)", "off").await;
            assert_eq!(api.endpoint(&dc2).await.unwrap()["scan_access"], false);

            // Edit: someone else's change meanwhile is a conflict, told in the dialog, which then
            // shows the current values to edit again.
            in_row(&browser, "#endpoints-table tbody tr", "dc2", "button.edit").await;
            let version = api.endpoint(&dc2).await.unwrap()["version"].as_u64().unwrap();
            api.edit_endpoint(&dc2, None, Some("changed elsewhere"), version).await.unwrap();
            browser.fill("#edit-name", "dc2-renamed").await;
            browser.submit("#edit-form").await;
            browser.text_appears("#edit-error", "changed since it was read").await;
            assert_eq!(browser.value("#edit-description").await, "changed elsewhere");
            assert_eq!(browser.value("#edit-name").await, "dc2");
            browser.fill("#edit-name", "dc2-renamed").await;
            browser.submit("#edit-form").await;
            browser.text_appears("#endpoints-table tbody tr", "dc2-renamed").await;
            assert_eq!(api.endpoint(&dc2).await.unwrap()["description"], "changed elsewhere");

            // Rotate key: the new key is shown, and it is the API's.
            confirmed(&browser, "#endpoints-table tbody tr", "dc2-renamed", "button.rotate").await;
            browser.text_appears("#endpoint-message", "was replaced").await;
            let rotated = browser.value("#key-value").await;
            assert_ne!(rotated, key);
            assert_eq!(rotated, api.endpoint_key(&dc2).await.unwrap());

            // Delete (confirmed): the row goes, the empty state says what to do.
            confirmed(&browser, "#endpoints-table tbody tr", "dc2-renamed", "button.delete").await;
            browser.text_appears("#endpoints-empty", "No endpoints yet").await;
            assert!(api.endpoint(&dc2).await.is_err());
            agent.stop();
        })
        .await;
    browser.client.clone().close().await.unwrap();
}

#[actix::test]
async fn scans_audit_and_notifications_from_the_page() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let api = node.api();
    let app = ism_scan_engine::testing::InsecureApp::start().await.unwrap();
    let (p, _machine, agent) =
        connected_endpoint(&node, "dc1", &format!("{},{}", app.http, app.https)).await;
    let base = format!("http://{}/", node.addresses.api);
    let browser = Browser::start().await;
    browser.run("scans", async {
        sign_in(&browser, &base, &node.admin_token).await;
        browser.text_appears("#user", "admin").await;

        // Start a scan; the page follows it to the end and lists its findings.
        browser.click("a[href='#scans']").await;
        browser.text_appears("#scan-endpoint option", "dc1 (test-gateway, Ready)").await;
        browser.fill("#scan-targets", &format!("http://{}/", app.http)).await;
        browser.fill("#scan-max-pages", "15").await;
        browser.submit("#start-scan").await;
        browser.text_appears("#scan-state", "finished").await;
        browser.text_appears("#findings-table tbody tr", "missing-csp").await;
        browser.text_appears("#scan-progress", "of at most 15 pages").await;
        assert!(!browser.shows("#scan-cancel").await, "a finished scan has no Cancel");
        let scans = api.scans(None, None).await.unwrap();
        let id = scans[0]["id"].as_str().unwrap().to_string();

        // Both reports download as files.
        browser.click("#scan-json").await;
        let json = std::fs::read(browser.downloaded(&format!("scan-{id}.json")).await).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(json["schema"], "ism-scan-report/1");
        browser.click("#scan-sarif").await;
        let sarif = std::fs::read(browser.downloaded(&format!("scan-{id}.sarif")).await).unwrap();
        let sarif: serde_json::Value = serde_json::from_slice(&sarif).unwrap();
        assert_eq!(sarif["version"], "2.1.0");
        browser.click("a[href='#scans']").await;
        browser.text_appears("#scans-table tbody tr", "finished").await;

        // With room for one scan at a time, a slow scan runs and the next waits with its place;
        // both are cancelled from their rows.
        api.set_scan_capacity(&p.endpoint, serde_json::json!(1)).await.unwrap();
        let slow = serde_json::json!({ "endpoint": "dc1", "targets": [format!("http://{}/", app.http)], "max_pages": 10000, "rate": 1 });
        api.start_scan(&slow).await.unwrap();
        api.start_scan(&slow).await.unwrap();
        browser.text_appears("#scans-table tbody tr", "place 1 in queue").await;
        for state in ["queued", "running"] {
            confirmed(&browser, "#scans-table tbody tr", state, "button.cancel-scan").await;
        }
        eventually("both slow scans cancelled", || async {
            let cancelled = api.scans(None, Some("cancelled")).await.ok()?;
            (cancelled.as_array()?.len() == 2).then_some(())
        })
        .await;
        browser.text_appears("#scans-table tbody tr:first-child", "cancelled").await;

        // The audit: the latest page and the one before it, filtered by actor, paged from the
        // first entry, a bad filter told.
        let api = &api;
        let get = |path: String| async move { api.call(Method::GET, &path, None).await.unwrap() };
        let positions = |page: &serde_json::Value| -> Vec<u64> {
            page["entries"].as_array().unwrap().iter().map(|e| e["position"].as_u64().unwrap()).collect()
        };
        for n in 0..50 {
            // More history than one page of the page's audit (50 entries).
            api.create_gateway(&format!("lab{n}"), "").await.unwrap();
        }
        let latest = get("/api/v1/audit?limit=5".into()).await;
        let first = positions(&latest)[0];
        let older = get(format!("/api/v1/audit?limit=5&before={first}")).await;
        assert_eq!(positions(&older), (first - 5..first).collect::<Vec<_>>(), "the five before");
        assert_eq!(older["truncated"], true, "older ones exist");
        browser.click("a[href='#audit']").await;
        browser.text_appears("#audit-page", "the latest 50 entries").await;
        let shown_first = browser.element("#audit-table tbody tr:first-child td:first-child").await;
        let shown_first: u64 = shown_first.text().await.unwrap().parse().unwrap();
        browser.click("#audit-older").await;
        browser.text_appears("#audit-page", &format!("entries before #{shown_first}")).await;
        let last_row = "#audit-table tbody tr:last-child td:first-child";
        browser.text_appears(last_row, &(shown_first - 1).to_string()).await;
        browser.fill("#audit-actor", "admin").await;
        browser.submit("#audit-filters").await;
        browser.text_appears("#audit-table tbody tr", "created gateway \"lab49\"").await;
        for by in browser.client.find_all(Locator::Css("#audit-table tbody td:last-child")).await.unwrap() {
            assert_eq!(by.text().await.unwrap(), "admin", "only the admin's changes");
        }
        browser.fill("#audit-actor", "nobody").await;
        browser.submit("#audit-filters").await;
        browser.text_appears("#audit-empty", "No entries match").await;
        browser.fill("#audit-actor", "").await;
        browser.click("#audit-first").await;
        browser.text_appears("#audit-page", "entries after #0").await;
        browser.text_appears("#audit-table tbody tr:first-child td:first-child", "1").await;
        browser.fill("#audit-endpoint", "not-an-id").await;
        browser.submit("#audit-filters").await;
        browser.text_appears("#audit-error", "bad query").await;

        // Notifications: recipients (administrators) and webhooks (managers).
        browser.click("a[href='#notifications']").await;
        browser.text_appears("#recipients-empty", "No users yet").await;
        api.create_user("sam", "security-lead", Some("sam@corp.example")).await.unwrap();
        browser.click("a[href='#audit']").await;
        browser.click("a[href='#notifications']").await;
        let row = browser.text_appears("#recipients-table tbody tr", "security-lead").await;
        assert_eq!(browser.value("#recipients-table input").await, "sam@corp.example");
        browser.fill("#recipients-table input", "sam.lead@corp.example").await;
        row.find(Locator::Css("button.save-email")).await.unwrap().click().await.unwrap();
        let api = &api;
        eventually("the new address recorded", || async move {
            let users = api.users().await.ok()?;
            (users[0]["email"] == "sam.lead@corp.example").then_some(())
        })
        .await;
        browser.fill("#recipients-table input", "not an address").await;
        row.find(Locator::Css("button.save-email")).await.unwrap().click().await.unwrap();
        browser.text_appears("#recipient-error", "address").await;
        let closed = ism_tests::ReservedPort::new();
        let hook = format!("http://127.0.0.1:{}/ism", closed.port);
        browser.fill("#webhook-url", &hook).await;
        browser.submit("#add-webhook").await;
        browser.text_appears("#webhooks-table tbody tr", &hook).await;
        assert!(!browser.value("#webhook-url").await.contains("ism"));
        browser.text_appears("#webhook-secret", "shown once").await;
        browser.fill("#webhook-url", "ftp://x").await;
        browser.submit("#add-webhook").await;
        browser.text_appears("#add-webhook-error", "only http and https").await;
        confirmed(&browser, "#webhooks-table tbody tr", &hook, "button.remove-webhook").await;
        browser.text_appears("#webhooks-empty", "No webhooks").await;

        // A reviewer reads the scans, and is told what the role does not show.
        let (token, _) = reviewer(api).await;
        sign_out(&browser).await;
        sign_in(&browser, &base, &token).await;
        browser.text_appears("#user", "rita").await;
        browser.click("a[href='#scans']").await;
        browser.text_appears("#scans-table tbody tr", "finished").await;
        assert!(!browser.shows("#start-scan").await);
        browser.click("a[href='#notifications']").await;
        browser.text_appears("#webhooks-denied", "Only managers").await;
        browser.text_appears("#recipients-denied", "Only administrators").await;
        assert!(!browser.shows("#add-webhook").await);
    })
    .await;
    agent.stop();
    browser.client.clone().close().await.unwrap();
}

#[test]
fn the_page_is_served_without_a_token_with_a_strict_content_security_policy() {
    use std::io::{Read, Write};
    let node = TestNode::start("node-a", Backend::Embedded);
    for (path, kind) in
        [("/", "text/html"), ("/assets/app.js", "text/javascript"), ("/assets/app.css", "text/css")]
    {
        let mut tcp = std::net::TcpStream::connect(node.addresses.api).unwrap();
        write!(tcp, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).unwrap();
        let head = response.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with("http/1.0 200") || head.starts_with("http/1.1 200"),
            "{path}: {head}"
        );
        assert!(head.contains(&format!("content-type: {kind}")), "{path}: {head}");
        assert!(
            head.contains("content-security-policy: default-src 'self'; frame-ancestors 'none'"),
            "{head}"
        );
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    }
}

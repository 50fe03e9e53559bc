//! The Internal Scanning Management page in a real Chromium: sign in with a token, the gateways
//! (created from the page, deleted ones listed), a gateway's endpoints table turning Ready without a reload when the agent connects, Copy
//! Endpoint Key for managers and absent for a reviewer, sign-out.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use fantoccini::Locator;
use ism_tests::browser::Browser;
use ism_tests::cluster::{connected, eventually, provision, Backend, TestMachine, TestNode};

async fn sign_in(browser: &Browser, base: &str, token: &str) {
    browser.client.goto(base).await.unwrap();
    let field = browser.client.wait().for_element(Locator::Id("token")).await.unwrap();
    field.send_keys(token).await.unwrap();
    browser.client.find(Locator::Css("#sign-in-form button")).await.unwrap().click().await.unwrap();
}

async fn create_gateway(browser: &Browser, name: &str) {
    let field = browser.client.find(Locator::Id("gateway-new-name")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(name).await.unwrap();
    browser
        .client
        .find(Locator::Css("#create-gateway button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[actix::test]
async fn a_manager_watches_an_endpoint_turn_ready_and_a_reviewer_sees_no_manage_actions() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let api = node.api();
    let p = provision(&api, "dc1").await;
    let base = format!("http://{}/", node.addresses.api);
    let browser = Browser::start().await;

    // A wrong token is told inline, and nothing else is shown.
    sign_in(&browser, &base, "ismt_wrong").await;
    browser.text_appears("#sign-in-error", "Sign-in failed").await;

    sign_in(&browser, &base, &node.admin_token).await;
    browser.text_appears("#user", "admin").await;
    browser.text_appears("#gateways-table tbody tr", "test-gateway").await;

    // Create a gateway; the API's refusal of a non-ASCII name is shown beside the form.
    create_gateway(&browser, "lab").await;
    browser.text_appears("#gateways-table tbody tr", "lab").await;
    create_gateway(&browser, "l\u{e4}b").await;
    browser.text_appears("#create-gateway-error", "ASCII").await;
    // Deleted gateways are listed with their reason.
    let lab = api.gateways().await.unwrap();
    let lab = lab.as_array().unwrap().iter().find(|g| g["name"] == "lab").unwrap();
    api.delete_gateway(lab["id"].as_str().unwrap()).await.unwrap();
    browser.text_appears("#deleted-table tbody tr", "lab").await;

    let row = browser.text_appears("#gateways-table tbody tr", "test-gateway").await;
    row.find(Locator::Css("a")).await.unwrap().click().await.unwrap();
    browser.text_appears("#endpoints-table tbody tr", "Pending").await;

    // The agent connects: the row turns Ready on its own.
    let machine = TestMachine::new();
    // A port nothing listens on (the test reaches no target).
    let closed = ism_tests::ReservedPort::new();
    let agent = machine.start_endpoint(&node, &p.key, &format!("127.0.0.1:{}", closed.port));
    connected(&agent).await;
    let row = browser.text_appears("#endpoints-table tbody tr", "Ready").await;
    browser.screenshot("endpoints-table").await;

    // Copy Endpoint Key (managers): the key the API gives.
    row.find(Locator::Css("button.copy-key")).await.unwrap().click().await.unwrap();
    let key = browser.client.wait().for_element(Locator::Id("key-value")).await.unwrap();
    let key = &key;
    let shown = eventually("the key shown", || async move {
        key.prop("value").await.ok()?.filter(|v| !v.is_empty())
    })
    .await;
    assert_eq!(shown, p.key);

    // A reviewer sees the same table, without the manage actions.
    api.create_user("rita", "reviewer", None).await.unwrap();
    let token = api.issue_token("rita", "browser").await.unwrap();
    browser.client.find(Locator::Id("sign-out")).await.unwrap().click().await.unwrap();
    browser.client.wait().for_element(Locator::Id("token")).await.unwrap();
    sign_in(&browser, &base, token["token"].as_str().unwrap()).await;
    browser.text_appears("#user", "rita (reviewer)").await;
    let form = browser.client.find(Locator::Id("create-gateway")).await.unwrap();
    assert!(!form.is_displayed().await.unwrap(), "a reviewer has no create form");
    let row = browser.text_appears("#gateways-table tbody tr", "test-gateway").await;
    row.find(Locator::Css("a")).await.unwrap().click().await.unwrap();
    let row = browser.text_appears("#endpoints-table tbody tr", "Ready").await;
    assert!(row.find_all(Locator::Css("button.copy-key")).await.unwrap().is_empty());
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

//! A real Chromium, headless, driven through `chromedriver` (Debian's `chromium` and
//! `chromium-driver`, which `scripts/tools.sh` installs) with a WebDriver client: what a person
//! sees of the web page. On failure a test saves a screenshot under `target/screenshots/`.

use fantoccini::{Client, ClientBuilder, Locator};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `chromedriver` process and one browser session on it; both end when dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    /// Starts `chromedriver` on a free loopback port and a headless Chromium session.
    pub async fn start() -> Browser {
        let port = crate::free_port();
        let driver = Command::new(std::env::var("CHROMEDRIVER").unwrap_or("chromedriver".into()))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian: apt install chromium chromium-driver; scripts/test installs it)");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"] }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let (url, caps) = (&url, &caps);
        let client = crate::cluster::eventually("a browser session", || async move {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            ClientBuilder::new(connector).capabilities(caps.clone()).connect(url).await.ok()
        })
        .await;
        Browser { client, driver }
    }

    /// Waits until an element at `css` holds `text`; returns it.
    pub async fn text_appears(&self, css: &str, text: &str) -> fantoccini::elements::Element {
        let deadline = tokio::time::Instant::now() + crate::cluster::PATIENCE;
        loop {
            for e in self.client.find_all(Locator::Css(css)).await.unwrap_or_default() {
                if e.text().await.is_ok_and(|t| t.contains(text)) {
                    return e;
                }
            }
            if tokio::time::Instant::now() > deadline {
                self.screenshot("timeout").await;
                panic!("no {css} showing {text:?} within {:?}", crate::cluster::PATIENCE);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves what the page shows as `target/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/screenshots");
        let _ = std::fs::create_dir_all(dir);
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::write(format!("{dir}/{name}.png"), png);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

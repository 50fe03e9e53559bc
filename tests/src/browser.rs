//! A real Chromium, headless, driven through `chromedriver` (Debian's `chromium` and
//! `chromium-driver`, which `scripts/tools.sh` installs) with a WebDriver client: what a person
//! sees of the web page. On failure a test saves a screenshot under `target/screenshots/`.

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use std::future::Future;
use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A `chromedriver` process and one browser session on it; both end when dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
    downloads: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromedriver` on a free loopback port and a headless Chromium session.
    pub async fn start() -> Browser {
        let port = crate::free_port();
        // Its own process group, so that dropping the browser ends Chromium too, even when a
        // failed test never closed its session (killing chromedriver alone orphans Chromium).
        let driver = Command::new(std::env::var("CHROMEDRIVER").unwrap_or("chromedriver".into()))
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian: apt install chromium chromium-driver; scripts/test installs it)");
        let downloads = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"],
                "prefs": { "download.default_directory": downloads.path(), "download.prompt_for_download": false },
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let (url, caps) = (&url, &caps);
        let client = crate::cluster::eventually("a browser session", || async move {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            ClientBuilder::new(connector).capabilities(caps.clone()).connect(url).await.ok()
        })
        .await;
        Browser { client, driver, downloads }
    }

    /// Runs a test's steps; if they fail, saves what the page showed as
    /// `target/screenshots/<name>-failed.png` before failing.
    pub async fn run(&self, name: &str, steps: impl Future<Output = ()>) {
        if let Err(panic) = AssertUnwindSafe(steps).catch_unwind().await {
            self.screenshot(&format!("{name}-failed")).await;
            std::panic::resume_unwind(panic);
        }
    }

    /// The element at `css`, once there is one.
    pub async fn element(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(crate::cluster::PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap()
    }

    /// Clicks the element at `css` once a person could. Present is not enough: a view still
    /// being shown holds it hidden a moment longer (the managers' links right after signing in
    /// were "not interactable" in 1 CI run of about 10), so the click is tried again until it
    /// takes, within [`PATIENCE`](crate::cluster::PATIENCE).
    pub async fn click(&self, css: &str) {
        let what = format!("{css} taking a click");
        crate::cluster::eventually(&what, || async move {
            match self.element(css).await.click().await {
                Ok(()) => Some(()),
                Err(e) if e.is_element_not_interactable() || e.is_stale_element_reference() => None,
                Err(e) => panic!("clicking {css}: {e}"),
            }
        })
        .await
    }

    /// Submits the form at `css` with its submit button, as a person would.
    pub async fn submit(&self, form: &str) {
        self.click(&format!("{form} button[type=submit]")).await;
    }

    /// Replaces what the field at `css` holds with `value`, as typed.
    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.element(css).await;
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// The current value of the form field at `css`.
    pub async fn value(&self, css: &str) -> String {
        self.element(css).await.prop("value").await.unwrap().unwrap_or_default()
    }

    /// Whether any element at `css` is shown.
    pub async fn shows(&self, css: &str) -> bool {
        for e in self.client.find_all(Locator::Css(css)).await.unwrap_or_default() {
            if e.is_displayed().await.unwrap_or(false) {
                return true;
            }
        }
        false
    }

    /// The file the browser downloaded as `name`, once it is complete.
    pub async fn downloaded(&self, name: &str) -> PathBuf {
        let path = self.downloads.path().join(name);
        let path: &Path = &path;
        crate::cluster::eventually("the download", || async move {
            // Chromium writes `<name>.crdownload` and renames it when complete.
            path.exists().then(|| path.to_path_buf())
        })
        .await
    }

    /// Waits until an element at `css` holds `text`; returns it. (A test's steps run in
    /// [`run`](Self::run), which saves the screenshot if this times out.)
    pub async fn text_appears(&self, css: &str, text: &str) -> Element {
        crate::cluster::eventually(&format!("a {css} showing {text:?}"), || async move {
            for e in self.client.find_all(Locator::Css(css)).await.unwrap_or_default() {
                if e.text().await.is_ok_and(|t| t.contains(text)) {
                    return Some(e);
                }
            }
            None
        })
        .await
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
        let group = rustix::process::Pid::from_child(&self.driver);
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = self.driver.wait();
    }
}

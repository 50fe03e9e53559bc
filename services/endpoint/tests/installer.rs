//! The Linux installer and uninstaller (`deploy/endpoint/`), run for real into a throwaway root:
//! the files and the systemd unit they produce, `systemd-analyze verify` on the unit, the service
//! exercised by running exactly its `ExecStart`, an update in place that keeps the machine
//! binding, the seed's installer errors, and the uninstall.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_tests::cluster::{
    http_server, provision, tampered, Backend, Provisioned, TestNode, PATIENCE,
};
use ism_tests::http_proxy::{ProxyRules, TestProxy};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

const INSTALL_DIR: &str = "/opt/ism-endpoint";

fn deploy(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/endpoint").join(script)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The installer run with `--yes` below `root` and this build's binary; `umask`: the caller's
/// (the test's own when None).
fn installer(root: &Path, umask: Option<&str>, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("bash");
    if let Some(umask) = umask {
        cmd.args(["-c", "umask \"$0\" && exec bash \"$@\"", umask]);
    }
    cmd.arg(deploy("install.sh"))
        .args(["--yes", "--root"])
        .arg(root)
        .args(["--binary", env!("CARGO_BIN_EXE_ism-endpoint")])
        .args(args)
        .stdin(Stdio::null());
    cmd
}

async fn finished(mut cmd: tokio::process::Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.expect("finished").unwrap()
}

async fn install(root: &Path, args: &[&str]) -> Output {
    finished(installer(root, None, args)).await
}

/// Runs the installed uninstaller of the installation below `root`.
async fn uninstall(root: &Path, args: &[&str]) -> Output {
    uninstall_at(root, INSTALL_DIR, args).await
}

async fn uninstall_at(root: &Path, install_dir: &str, args: &[&str]) -> Output {
    let script = root.join(&install_dir[1..]).join("uninstall/uninstall.sh");
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(script).args(["--yes", "--root"]).arg(root).args(args).stdin(Stdio::null());
    finished(cmd).await
}

/// A unit line's words as systemd reads them: split at spaces outside double quotes, `%%` for a
/// literal `%` and `$$` for a literal `$` (the tests' folders have no `$` in the program path,
/// where systemd keeps `$$` as it is).
fn unit_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted, mut started) = (Vec::new(), String::new(), false, false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => (quoted, started) = (!quoted, true),
            '%' | '$' if chars.peek() == Some(&c) => {
                chars.next();
                word.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            c => {
                started = true;
                word.push(c);
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// The unit's `ExecStart`, with its paths moved below `root`.
fn exec_start(root: &Path, install_dir: &str) -> Vec<String> {
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/ism-endpoint.service")).unwrap();
    let line = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    unit_words(line)
        .into_iter()
        .map(|w| if w.starts_with(install_dir) { format!("{}{w}", root.display()) } else { w })
        .collect()
}

/// Runs the service as systemd would, and waits until it reports itself connected.
async fn start_service(root: &Path) -> tokio::process::Child {
    start_service_at(root, INSTALL_DIR).await
}

async fn start_service_at(root: &Path, install_dir: &str) -> tokio::process::Child {
    let argv = exec_start(root, install_dir);
    let child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(root.join(&install_dir[1..]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .arg("status")
            .output()
            .await
            .unwrap();
        if status.status.success() {
            return child;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service did not connect: {}",
            text(&status)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop_service(mut child: tokio::process::Child) {
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(PATIENCE, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "SIGTERM must stop the service cleanly: {status:?}");
}

/// `systemd-analyze verify` accepts `unit` (written into `dir`) with no warning; skipped, and
/// said so, where systemd-analyze is not installed.
fn verify_unit(dir: &Path, unit: &str) {
    if std::process::Command::new("systemd-analyze").arg("--version").output().is_err() {
        println!("SKIPPED: systemd-analyze verify (systemd-analyze is not installed)");
        return;
    }
    let checked = dir.join("verify-ism-endpoint.service");
    std::fs::write(&checked, unit).unwrap();
    let verify =
        std::process::Command::new("systemd-analyze").arg("verify").arg(&checked).output().unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&verify)
    );
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[actix::test]
async fn install_run_as_the_unit_does_update_in_place_and_uninstall() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let app = http_server("installed").await;
    let root = tempfile::tempdir().unwrap();
    let (gateway, ca, allowed) = (
        node.addresses.endpoint_wss.to_string(),
        node.ca_file.display().to_string(),
        format!("127.0.0.1:{}", app.port()),
    );

    let out = install(
        root.path(),
        &[
            "--key",
            &p.key,
            "--gateway",
            &gateway,
            "--gateway-ca",
            &ca,
            "--allowed-targets",
            &allowed,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("The key validated"), "{}", text(&out));
    assert!(
        text(&out).contains("systemd is not running on this machine (or --root was given)"),
        "{}",
        text(&out)
    );
    let dest = root.path().join(&INSTALL_DIR[1..]);
    assert_eq!(mode(&dest.join("bin/ism-endpoint")), 0o755);
    assert_eq!(
        mode(&dest.join("data/machine.key")),
        0o600,
        "the key check created the machine identity"
    );
    assert_eq!(mode(&dest.join("uninstall/uninstall.sh")), 0o755);
    let props = std::fs::read_to_string(dest.join("config/application.properties")).unwrap();
    for line in [
        format!("token = {}", p.key),
        format!("gateway = {gateway}"),
        "gatewayCaFile = config/gateway-ca.pem".into(),
        format!("allowedTargets = {allowed}"),
        "wsendpoint = /wsendpoint".into(),
    ] {
        assert!(props.contains(&line), "missing {line:?} in:\n{props}");
    }
    let installer_log = std::fs::read_to_string(dest.join("logs/endpointinstaller.log")).unwrap();
    assert!(
        installer_log.contains("INFO - Installing the endpoint in /opt/ism-endpoint")
            && installer_log.contains("INFO - The key validated"),
        "{installer_log}"
    );

    // The unit: what it runs, that it restarts, and that systemd accepts it.
    let unit = std::fs::read_to_string(root.path().join("etc/systemd/system/ism-endpoint.service"))
        .unwrap();
    assert!(unit.contains("ExecStart=/opt/ism-endpoint/bin/ism-endpoint --config /opt/ism-endpoint/config/application.properties"), "{unit}");
    assert!(
        unit.contains("Restart=always") && unit.contains("WantedBy=multi-user.target"),
        "{unit}"
    );
    // ...except after a refusal that starting again cannot fix: a key bound to another machine,
    // a wrong key, a deleted endpoint, an old version, a machine identity copied to another host.
    assert!(unit.contains("\nRestartPreventExitStatus=10 11 12 13 14\n"), "{unit}");
    verify_unit(root.path(), &unit.replace("/opt/ism-endpoint", &dest.display().to_string()));

    // Start, stop, restart, exactly as the unit's ExecStart runs it.
    let service = start_service(root.path()).await;
    let fetched = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--socks5-hostname"])
        .arg(format!("dc1:{}@{}", p.scanner_secret, node.socks()))
        .arg(format!("http://{allowed}/"))
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&fetched.stdout), "installed", "{}", text(&fetched));
    stop_service(service).await;
    let service = start_service(root.path()).await;
    stop_service(service).await;
    assert!(std::fs::read_to_string(dest.join("logs/smartendpoint.log"))
        .unwrap()
        .contains("INFO - Endpoint shut down complete"));

    // Update in place: a new proxy setting; the key and the machine binding stay.
    let identity = std::fs::read(dest.join("data/machine.key")).unwrap();
    let proxy = TestProxy::start(ProxyRules::default());
    let out = install(
        root.path(),
        &[
            "--proxy-host",
            "127.0.0.1",
            "--proxy-port",
            &proxy.addr.port().to_string(),
            "--proxy-scope",
            "gateway",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("updating the existing installation"), "{}", text(&out));
    assert_eq!(
        std::fs::read(dest.join("data/machine.key")).unwrap(),
        identity,
        "an update must keep the machine identity"
    );
    let props = std::fs::read_to_string(dest.join("config/application.properties")).unwrap();
    assert!(
        props.contains(&format!("token = {}", p.key))
            && props.contains(&format!("proxyPort = {}", proxy.addr.port()))
            && props.contains("gatewayCaFile = config/gateway-ca.pem"),
        "{props}"
    );
    let service = start_service(root.path()).await;
    assert!(
        proxy
            .log_lines()
            .iter()
            .any(|l| l.starts_with(&format!("CONNECT {}", gateway)) && l.ends_with("-> 200")),
        "{:?}",
        proxy.log_lines()
    );
    stop_service(service).await;

    // Uninstall: the unit and the folder are gone.
    let out = uninstall(root.path(), &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !dest.exists() && !root.path().join("etc/systemd/system/ism-endpoint.service").exists()
    );
}

#[actix::test]
async fn the_installer_refuses_with_the_seed_errors_and_leaves_nothing_behind() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let (gateway, ca) =
        (node.addresses.endpoint_wss.to_string(), node.ca_file.display().to_string());

    // Invalid installation folder: not empty, and not an installation.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("opt/ism-endpoint")).unwrap();
    std::fs::write(root.path().join("opt/ism-endpoint/notes.txt"), "mine").unwrap();
    let out =
        install(root.path(), &["--key", &p.key, "--gateway", &gateway, "--gateway-ca", &ca]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("Invalid installation folder: /opt/ism-endpoint is not empty"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("opt/ism-endpoint/notes.txt")).unwrap(),
        "mine",
        "the folder is left as it was"
    );

    // A key that does not validate: nothing is installed.
    let root = tempfile::tempdir().unwrap();
    let out = install(
        root.path(),
        &["--key", &tampered(&p.key), "--gateway", &gateway, "--gateway-ca", &ca],
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("Failure to authenticate endpoint key"), "{}", text(&out));
    assert!(
        !root.path().join("opt/ism-endpoint").exists()
            && !root.path().join("etc/systemd/system/ism-endpoint.service").exists()
    );

    // A proxy that cannot be used.
    // Held bound, not listening: a port freed instead could be taken by a test running beside
    // this one (a proxy, even), and the install would then succeed (it did, in CI).
    let down = ism_tests::ReservedPort::new();
    let closed = down.port.to_string();
    let out = install(
        root.path(),
        &[
            "--key",
            &p.key,
            "--gateway",
            &gateway,
            "--gateway-ca",
            &ca,
            "--proxy-host",
            "127.0.0.1",
            "--proxy-port",
            &closed,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("Proxy settings errors"), "{}", text(&out));
    let proxy = TestProxy::start(ProxyRules {
        credentials: Some(("svc".into(), "right".into())),
        ..Default::default()
    });
    let password = root.path().join("pw");
    std::fs::write(&password, "wrong\n").unwrap();
    let out = install(
        root.path(),
        &[
            "--key",
            &p.key,
            "--gateway",
            &gateway,
            "--gateway-ca",
            &ca,
            "--proxy-host",
            "127.0.0.1",
            "--proxy-port",
            &proxy.addr.port().to_string(),
            "--proxy-user",
            "svc",
            "--proxy-password-file",
            &password.display().to_string(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out).contains("Proxy settings errors")
            && text(&out).contains("requires authentication"),
        "{}",
        text(&out)
    );

    // The right password: installed, with the credentials stored owner-only and never in the
    // properties file or the logs.
    std::fs::write(&password, "right\n").unwrap();
    let out = install(
        root.path(),
        &[
            "--key",
            &p.key,
            "--gateway",
            &gateway,
            "--gateway-ca",
            &ca,
            "--proxy-host",
            "127.0.0.1",
            "--proxy-port",
            &proxy.addr.port().to_string(),
            "--proxy-user",
            "svc",
            "--proxy-password-file",
            &password.display().to_string(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let dest = root.path().join("opt/ism-endpoint");
    assert_eq!(mode(&dest.join("config/proxy-credentials")), 0o600);
    for file in
        ["config/application.properties", "logs/endpointinstaller.log", "logs/smartendpoint.log"]
    {
        assert!(
            !std::fs::read_to_string(dest.join(file)).unwrap().contains("right"),
            "{file} must not hold the proxy password"
        );
    }
    assert!(
        proxy.log_lines().iter().any(|l| l.contains("user=svc -> 200")),
        "{:?}",
        proxy.log_lines()
    );
}

/// A gateway node with one endpoint provisioned, and an empty root to install the endpoint below
/// with its key checked against the node.
struct Checked {
    _node: TestNode,
    p: Provisioned,
    root: tempfile::TempDir,
    /// Where the installation goes below `root`.
    dest: PathBuf,
    gateway: String,
    ca: String,
}

impl Checked {
    async fn new() -> Self {
        let node = TestNode::start("node-a", Backend::Embedded);
        let p = provision(&node.api(), "dc1").await;
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join(&INSTALL_DIR[1..]);
        let (gateway, ca) =
            (node.addresses.endpoint_wss.to_string(), node.ca_file.display().to_string());
        Checked { _node: node, p, root, dest, gateway, ca }
    }

    /// The installer's settings for the endpoint: its key, the node, the node's CA.
    fn settings(&self) -> [&str; 6] {
        ["--key", &self.p.key, "--gateway", &self.gateway, "--gateway-ca", &self.ca]
    }
}

#[actix::test]
async fn an_uninstall_can_keep_the_machine_identity_for_a_reinstall_with_the_same_key() {
    let c = Checked::new().await;
    let (root, dest, p, gateway, ca) = (&c.root, &c.dest, &c.p, &c.gateway, &c.ca);
    let settings = c.settings();
    let out = install(root.path(), &settings).await;
    assert!(out.status.success(), "{}", text(&out));
    let identity = std::fs::read(dest.join("data/machine.key")).unwrap();

    // Kept: only the identity is left, and the service is gone.
    let out = uninstall(root.path(), &["--keep-identity"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("install.sh --keep-identity"), "{}", text(&out));
    assert_eq!(std::fs::read(dest.join("data/machine.key")).unwrap(), identity);
    assert_eq!(mode(&dest.join("data/machine.key")), 0o600);
    let left: Vec<_> = std::fs::read_dir(dest).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["data"], "only the identity stays");
    assert!(!root.path().join("etc/systemd/system/ism-endpoint.service").exists());

    // Not asked for, a kept identity is neither used nor thrown away.
    let out = install(root.path(), &settings).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--keep-identity"), "{}", text(&out));
    assert_eq!(std::fs::read(dest.join("data/machine.key")).unwrap(), identity);

    // Asked for, an install that fails leaves the kept identity as it found it.
    let wrong_key = tampered(&p.key);
    let out = install(
        root.path(),
        &["--key", &wrong_key, "--gateway", gateway, "--gateway-ca", ca, "--keep-identity"],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let left: Vec<_> = std::fs::read_dir(dest).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["data"]);
    assert_eq!(std::fs::read(dest.join("data/machine.key")).unwrap(), identity);

    // Asked for: the same key validates on this machine again, with the same identity.
    let with_identity = [&settings[..], &["--keep-identity"]].concat();
    let out = install(root.path(), &with_identity).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("The key validated"), "{}", text(&out));
    assert_eq!(std::fs::read(dest.join("data/machine.key")).unwrap(), identity);
    let service = start_service(root.path()).await;
    stop_service(service).await;

    // Without it, the reinstall is a new machine to the gateway: the seed's refusal.
    let out = uninstall(root.path(), &[]).await;
    assert!(out.status.success() && !dest.exists(), "{}", text(&out));
    let out = install(root.path(), &settings).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("Token already registered"), "{}", text(&out));
    // ...and asking to keep an identity that is not there is refused, not ignored.
    let out = install(root.path(), &with_identity).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no machine identity"), "{}", text(&out));
}

#[actix::test]
async fn an_installation_that_never_ran_uninstalls_cleanly() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let root = tempfile::tempdir().unwrap();
    let gateway = node.addresses.endpoint_wss.to_string();
    let out = install(
        root.path(),
        &["--key", &p.key, "--gateway", &gateway, "--skip-key-check", "--no-start"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let dest = root.path().join(&INSTALL_DIR[1..]);
    assert!(!dest.join("run/status.json").exists(), "the endpoint never ran");
    let out = uninstall(root.path(), &[]).await;
    assert!(out.status.success(), "{:?}: {}", out.status, text(&out));
    assert!(text(&out).contains("The endpoint was uninstalled"), "{}", text(&out));
    assert!(!dest.exists());
}

#[actix::test]
async fn a_skipped_key_check_is_not_reported_as_a_validated_key() {
    let root = tempfile::tempdir().unwrap();
    let out = install(
        root.path(),
        &["--key", "ismk_not-checked", "--gateway", "gateway.invalid", "--skip-key-check"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let log = std::fs::read_to_string(
        root.path().join(&INSTALL_DIR[1..]).join("logs/endpointinstaller.log"),
    )
    .unwrap();
    for said in [text(&out), log] {
        assert!(
            !said.contains("The key validated")
                && said.contains("The key was not checked (--skip-key-check)"),
            "{said}"
        );
    }
}

/// The settings of an install that needs no gateway.
const UNCHECKED: [&str; 5] =
    ["--key", "ismk_not-checked", "--gateway", "gateway.invalid", "--skip-key-check"];

fn props_of(root: &Path, install_dir: &str) -> String {
    std::fs::read_to_string(root.join(&install_dir[1..]).join("config/application.properties"))
        .unwrap()
}

#[actix::test]
async fn a_fresh_install_that_stops_part_way_does_not_block_the_next_run() {
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join(&INSTALL_DIR[1..]);
    // No key with --yes: the folders exist by the time the installer finds out.
    let out = install(root.path(), &["--gateway", "gateway.invalid", "--skip-key-check"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("the endpoint key is required"), "{}", text(&out));
    assert!(!dest.exists() && !root.path().join("opt").exists(), "created folders removed");
    let out = install(root.path(), &UNCHECKED).await;
    assert!(out.status.success(), "{}", text(&out));

    // An empty folder the operator created is kept, and stays empty.
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join(&INSTALL_DIR[1..]);
    std::fs::create_dir_all(&dest).unwrap();
    let out = install(root.path(), &["--gateway", "gateway.invalid", "--skip-key-check"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0, "the given folder is emptied");
    let out = install(root.path(), &UNCHECKED).await;
    assert!(out.status.success(), "{}", text(&out));
}

#[actix::test]
async fn a_fresh_install_that_fails_after_the_key_bound_keeps_the_identity() {
    let c = Checked::new().await;
    let (root, dest) = (&c.root, &c.dest);
    let settings = c.settings();
    // The unit cannot be written (etc/systemd is a file): the installer fails after the key
    // check bound the key to the new machine identity.
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/systemd"), "in the way").unwrap();
    let out = install(root.path(), &settings).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("The key validated"), "{}", text(&out));
    assert!(text(&out).contains("is now bound to this machine's identity"), "{}", text(&out));
    let left: Vec<_> = std::fs::read_dir(dest).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["data"], "only the bound identity stays");
    let identity = std::fs::read(dest.join("data/machine.key")).unwrap();

    // The next run installs with it, and the key works.
    std::fs::remove_file(root.path().join("etc/systemd")).unwrap();
    let out = install(root.path(), &[&settings[..], &["--keep-identity"]].concat()).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("The key validated"), "{}", text(&out));
    assert_eq!(std::fs::read(dest.join("data/machine.key")).unwrap(), identity);
}

#[actix::test]
async fn an_update_keeps_the_settings_added_by_hand() {
    let root = tempfile::tempdir().unwrap();
    let out = install(root.path(), &UNCHECKED).await;
    assert!(out.status.success(), "{}", text(&out));
    let props = root.path().join(&INSTALL_DIR[1..]).join("config/application.properties");
    let mut text_of = std::fs::read_to_string(&props).unwrap();
    text_of.push_str("# the intranet page\ndiagnosticUrl = https://intranet.example\n");
    text_of.push_str("websocketProtocol = ws\nmaxStreams = 7\n");
    std::fs::write(&props, text_of).unwrap();

    let out = install(root.path(), &["--skip-key-check", "--allowed-targets", "10.0.0.0/8"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let after = props_of(root.path(), INSTALL_DIR);
    assert!(
        after.contains("# the intranet page\ndiagnosticUrl = https://intranet.example\n")
            && after.contains("\nwebsocketProtocol = ws\n")
            && after.contains("\nmaxStreams = 7\n")
            && after.contains("\nallowedTargets = 10.0.0.0/8\n")
            && after.contains("\ntoken = ismk_not-checked\n"),
        "{after}"
    );
    // The endpoint refuses a key set twice: the operator's last line is the one kept.
    assert_eq!(after.matches("websocketProtocol").count(), 1, "{after}");
}

#[actix::test]
async fn files_created_under_a_lax_umask_are_not_open_to_others() {
    let root = tempfile::tempdir().unwrap();
    let out = finished(installer(root.path(), Some("000"), &UNCHECKED)).await;
    assert!(out.status.success(), "{}", text(&out));
    let dest = root.path().join(&INSTALL_DIR[1..]);
    assert_eq!(mode(&dest.join("config/application.properties")), 0o640, "it holds the key");
    let mut open = Vec::new();
    let mut todo = vec![root.path().join("opt"), root.path().join("etc")];
    while let Some(path) = todo.pop() {
        if mode(&path) & 0o002 != 0 {
            open.push(format!("{} {:o}", path.display(), mode(&path)));
        }
        if path.is_dir() {
            todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(open.is_empty(), "writable by others: {open:?}");
}

#[actix::test]
async fn an_uninstall_keeps_the_identity_of_a_folder_named_like_a_pattern() {
    let root = tempfile::tempdir().unwrap();
    let dir = "/opt/ism[1]";
    let dest = root.path().join(&dir[1..]);
    let out = install(root.path(), &[&UNCHECKED[..], &["--install-dir", dir]].concat()).await;
    assert!(out.status.success(), "{}", text(&out));
    // What the key check would have created (it was skipped).
    std::fs::write(dest.join("data/machine.key"), "identity").unwrap();

    let out = uninstall_at(root.path(), dir, &["--keep-identity"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(dest.join("data/machine.key")).unwrap(), "identity");
    let left: Vec<_> = std::fs::read_dir(&dest).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["data"], "only the identity stays");
    // ...and the installer sees it as the kept identity.
    let args = [&UNCHECKED[..], &["--install-dir", dir, "--keep-identity"]].concat();
    let out = install(root.path(), &args).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("with the machine identity kept there"), "{}", text(&out));
}

#[actix::test]
async fn the_key_can_come_from_a_file_stdin_or_the_environment() {
    let rest = ["--gateway", "gateway.invalid", "--skip-key-check"];
    // A file, as saved on Windows.
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("key.txt");
    std::fs::write(&file, "ismk_from-file\r\n").unwrap();
    let out =
        install(root.path(), &[&["--key-file", file.to_str().unwrap()][..], &rest].concat()).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(props_of(root.path(), INSTALL_DIR).contains("\ntoken = ismk_from-file\n"));

    // Standard input.
    let root = tempfile::tempdir().unwrap();
    let mut cmd = installer(root.path(), None, &[&["--key-file", "-"][..], &rest].concat());
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use tokio::io::AsyncWriteExt;
    child.stdin.take().unwrap().write_all(b"ismk_from-stdin\n").await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(props_of(root.path(), INSTALL_DIR).contains("\ntoken = ismk_from-stdin\n"));

    // The environment.
    let root = tempfile::tempdir().unwrap();
    let mut cmd = installer(root.path(), None, &rest);
    cmd.env("ISM_TOKEN", "ismk_from-env");
    let out = finished(cmd).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(props_of(root.path(), INSTALL_DIR).contains("\ntoken = ismk_from-env\n"));

    // Both a key and a key file: which one was meant is not guessed.
    let root = tempfile::tempdir().unwrap();
    let args = [&["--key", "ismk_a", "--key-file", file.to_str().unwrap()][..], &rest].concat();
    let out = install(root.path(), &args).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[actix::test]
async fn the_unit_runs_a_folder_with_a_space_hardened() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let root = tempfile::tempdir().unwrap();
    let dir = "/opt/ism endpoint%x";
    let dest = root.path().join(&dir[1..]);
    let (gateway, ca) =
        (node.addresses.endpoint_wss.to_string(), node.ca_file.display().to_string());
    let out = install(
        root.path(),
        &["--key", &p.key, "--gateway", &gateway, "--gateway-ca", &ca, "--install-dir", dir],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let unit = std::fs::read_to_string(root.path().join("etc/systemd/system/ism-endpoint.service"))
        .unwrap();
    for line in [
        "ExecStart=\"/opt/ism endpoint%%x/bin/ism-endpoint\" --config \"/opt/ism endpoint%%x/config/application.properties\"",
        "WorkingDirectory=/opt/ism endpoint%%x",
        "ProtectSystem=strict",
        "ReadWritePaths=\"/opt/ism endpoint%%x/data\" \"/opt/ism endpoint%%x/logs\" \"/opt/ism endpoint%%x/run\"",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line:?} in:\n{unit}");
    }
    let below_root = dest.display().to_string().replace('%', "%%");
    verify_unit(root.path(), &unit.replace("/opt/ism endpoint%%x", &below_root));
    // Exactly what ExecStart runs connects, and writes only where the unit lets it.
    let service = start_service_at(root.path(), dir).await;
    stop_service(service).await;
    for written in ["data/machine.key", "logs/smartendpoint.log", "run/status.json"] {
        assert!(dest.join(written).exists(), "{written}");
    }
}

/// An update that does not finish leaves the installation as it was: the binary (replaced before
/// the key check) and the properties (replaced before the unit is written) are put back, the
/// same files.
#[actix::test]
async fn an_update_that_fails_its_key_check_puts_the_binary_back() {
    use std::os::unix::fs::MetadataExt;
    let root = tempfile::tempdir().unwrap();
    let out = install(root.path(), &UNCHECKED).await;
    assert!(out.status.success(), "{}", text(&out));
    let binary = root.path().join(&INSTALL_DIR[1..]).join("bin/ism-endpoint");
    let installed = std::fs::metadata(&binary).unwrap().ino();
    // A gateway name that never resolves: the key check cannot reach it.
    let out = install(root.path(), &["--gateway", "gateway.invalid"]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("left as it was"), "{}", text(&out));
    assert_eq!(std::fs::metadata(&binary).unwrap().ino(), installed, "the installed binary");
    let bin = binary.parent().unwrap();
    let names: Vec<_> = std::fs::read_dir(bin).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["ism-endpoint"], "nothing left beside it");

    // One that fails later, writing the unit (its temporary name is taken by a folder), after
    // the properties were replaced: they are put back too.
    let before = props_of(root.path(), INSTALL_DIR);
    let unit = root.path().join("etc/systemd/system/ism-endpoint.service.new");
    std::fs::create_dir_all(&unit).unwrap();
    let out = install(root.path(), &["--skip-key-check", "--allowed-targets", "10.9.9.9"]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(props_of(root.path(), INSTALL_DIR), before, "{}", text(&out));
    assert_eq!(std::fs::metadata(&binary).unwrap().ino(), installed, "the installed binary");
}

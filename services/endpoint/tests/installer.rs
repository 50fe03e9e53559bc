//! The Linux installer and uninstaller (`deploy/endpoint/`), run for real into a throwaway root:
//! the files and the systemd unit they produce, `systemd-analyze verify` on the unit, the service
//! exercised by running exactly its `ExecStart`, an update in place that keeps the machine
//! binding, the seed's installer errors, and the uninstall.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use ism_tests::cluster::{http_server, provision, tampered, Backend, TestNode, PATIENCE};
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

async fn install(root: &Path, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(deploy("install.sh"))
        .args(["--yes", "--root"])
        .arg(root)
        .args(["--binary", env!("CARGO_BIN_EXE_ism-endpoint")])
        .args(args)
        .stdin(Stdio::null());
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("installer finished")
        .unwrap()
}

/// Runs the installed uninstaller of the installation below `root`.
async fn uninstall(root: &Path, args: &[&str]) -> Output {
    let script = root.join(&INSTALL_DIR[1..]).join("uninstall/uninstall.sh");
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(script).args(["--yes", "--root"]).arg(root).args(args).stdin(Stdio::null());
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("uninstaller finished")
        .unwrap()
}

/// The unit's `ExecStart`, with its paths moved below `root`.
fn exec_start(root: &Path) -> Vec<String> {
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/ism-endpoint.service")).unwrap();
    let line = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    line.split_whitespace()
        .map(|w| {
            if w.starts_with(INSTALL_DIR) {
                format!("{}{w}", root.display())
            } else {
                w.to_string()
            }
        })
        .collect()
}

/// Runs the service as systemd would, and waits until it reports itself connected.
async fn start_service(root: &Path) -> tokio::process::Child {
    let argv = exec_start(root);
    let child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(root.join(&INSTALL_DIR[1..]))
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
    if std::process::Command::new("systemd-analyze").arg("--version").output().is_ok() {
        let checked = root.path().join("verify-ism-endpoint.service");
        std::fs::write(&checked, unit.replace("/opt/ism-endpoint", &dest.display().to_string()))
            .unwrap();
        let verify = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&checked)
            .output()
            .unwrap();
        assert!(
            verify.status.success() && verify.stderr.is_empty(),
            "systemd-analyze verify: {}",
            text(&verify)
        );
    } else {
        println!("SKIPPED: systemd-analyze verify (systemd-analyze is not installed)");
    }

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
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
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

#[actix::test]
async fn an_uninstall_can_keep_the_machine_identity_for_a_reinstall_with_the_same_key() {
    let node = TestNode::start("node-a", Backend::Embedded);
    let p = provision(&node.api(), "dc1").await;
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join(&INSTALL_DIR[1..]);
    let (gateway, ca) =
        (node.addresses.endpoint_wss.to_string(), node.ca_file.display().to_string());
    let settings = ["--key", &p.key, "--gateway", &gateway, "--gateway-ca", &ca];
    let out = install(root.path(), &settings).await;
    assert!(out.status.success(), "{}", text(&out));
    let identity = std::fs::read(dest.join("data/machine.key")).unwrap();

    // Kept: only the identity is left, and the service is gone.
    let out = uninstall(root.path(), &["--keep-identity"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("install.sh --keep-identity"), "{}", text(&out));
    assert_eq!(std::fs::read(dest.join("data/machine.key")).unwrap(), identity);
    assert_eq!(mode(&dest.join("data/machine.key")), 0o600);
    let left: Vec<_> = std::fs::read_dir(&dest).unwrap().map(|e| e.unwrap().file_name()).collect();
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
        &["--key", &wrong_key, "--gateway", &gateway, "--gateway-ca", &ca, "--keep-identity"],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let left: Vec<_> = std::fs::read_dir(&dest).unwrap().map(|e| e.unwrap().file_name()).collect();
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

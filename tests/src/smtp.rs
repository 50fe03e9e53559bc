//! A real SMTP server for tests: `aiosmtpd` (PyPI, installed by `scripts/tools.sh` in
//! `.venv-tools`) storing what it receives in a Maildir, on a port of the test's choosing so that
//! a test can start it late (an SMTP relay that was down and comes back).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SmtpServer {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

/// One message as received.
#[derive(Debug, Clone)]
pub struct Mail {
    pub subject: String,
    pub message_id: String,
    /// The envelope's recipients, sorted.
    pub rcpt_to: Vec<String>,
    /// Everything after the headers, soft line breaks of quoted-printable removed.
    pub body: String,
}

/// The Python with aiosmtpd: `$ISM_TEST_PYTHON`, else the one in `.venv-tools`, else `python3`.
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("ISM_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv-tools/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        Self::start_on(crate::free_port())
    }

    /// Starts the server on `port` and waits until it accepts connections.
    pub fn start_on(port: u16) -> SmtpServer {
        let maildir = tempfile::tempdir().unwrap();
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start aiosmtpd: {e}. Run scripts/test (it installs aiosmtpd in .venv-tools) or set ISM_TEST_PYTHON"));
        let deadline = Instant::now() + crate::cluster::PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        SmtpServer { child, port, maildir }
    }

    /// The URL a gateway node is given (`--smtp-url`): plain SMTP on loopback.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        let dir = self.maildir.path().join("mail").join("new");
        let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
        let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        // Maildir names are `<seconds>.M<micros>P<pid>Q<n>.<host>`: Q counts the deliveries of
        // the one server process, in order.
        let delivery = |p: &std::path::PathBuf| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let q = name.split('Q').nth(1).and_then(|r| r.split('.').next()).unwrap_or("0");
            q.parse::<u64>().unwrap_or(0)
        };
        files.sort_by_key(delivery);
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .map(|raw| parse(&raw))
            .collect()
    }
}

fn parse(raw: &str) -> Mail {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
    // Unfold continuation lines.
    let head = head.replace("\n ", " ").replace("\n\t", " ");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    Mail {
        subject: header("Subject"),
        message_id: header("Message-ID"),
        rcpt_to: {
            let mut to: Vec<String> =
                header("X-RcptTo").split(',').map(|a| a.trim().to_string()).collect();
            to.sort();
            to
        },
        body: body.replace("=\n", ""),
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The `ism` binary run as a user would run it, shared by the CLI's tests.

use serde_json::Value;

/// The `ism` binary as one user.
pub struct Ism {
    pub api: String,
    pub token: String,
}

impl Ism {
    pub async fn run(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ism"))
            .args(["--api", &self.api, "--token", &self.token])
            .args(args)
            .output()
            .await
            .expect("run ism")
    }

    /// Runs a command that must succeed; its standard output.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "ism {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command with `--json` that must succeed.
    pub async fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all).await;
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("ism {args:?} printed no JSON ({e}): {text}"))
    }

    /// Runs a command that must fail; its error message.
    pub async fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            !out.status.success(),
            "ism {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

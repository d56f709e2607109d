//! The `agentnet` binary, run as a user would.

use std::process::{Command, Output};

fn agentnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentnet"))
        .args(args)
        .output()
        .expect("the agentnet binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

#[test]
fn key_did_prints_the_did_of_a_public_key() {
    // The did:key specification's first Ed25519 test vector.
    let out = agentnet(&[
        "key",
        "did",
        "--public-key-hex",
        "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
    );
}

#[test]
fn key_did_explains_bad_input_and_exits_non_zero() {
    let cases = [
        ("abc", "64 hex digits"),
        ("", "64 hex digits"),
        (&"00".repeat(33), "got 66 digits"),
        (
            "zz6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29",
            "'z' at position 0",
        ),
        // y = 2 is not the y-coordinate of any point on edwards25519.
        (
            "0200000000000000000000000000000000000000000000000000000000000000",
            "not a valid Ed25519 public key",
        ),
    ];
    for (input, expected) in cases {
        let out = agentnet(&["key", "did", "--public-key-hex", input]);
        assert!(!out.status.success(), "{input:?} was accepted");
        assert_eq!(out.status.code(), Some(1), "{input:?}");
        assert!(
            stdout(&out).is_empty(),
            "{input:?} printed {}",
            stdout(&out)
        );
        assert!(
            stderr(&out).contains(expected),
            "{input:?}: {}",
            stderr(&out)
        );
    }
    // A missing argument is a usage error (clap's exit code 2).
    let out = agentnet(&["key", "did"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn key_gen_writes_a_private_key_file_and_prints_its_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.key");
    let path_str = path.to_str().expect("utf-8 path");
    let out = agentnet(&["key", "gen", "--out", path_str]);
    assert!(out.status.success(), "{}", stderr(&out));
    let did = stdout(&out);
    assert!(did.starts_with("did:key:z6Mk"), "{did}");

    let shown = agentnet(&["key", "show", "--key", path_str]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(stdout(&shown).contains(&did));

    // Never overwrites.
    let again = agentnet(&["key", "gen", "--out", path_str]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
}

/// A free port on 127.0.0.1 (free when asked; the node binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `agentnet node run` in the background, stopped with SIGINT on drop.
struct RunningNode {
    child: std::process::Child,
    api: String,
}

impl RunningNode {
    fn start(dir: &std::path::Path) -> RunningNode {
        use std::io::BufRead;
        let api = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentnet"))
            .args(["node", "run", "--data-dir"])
            .arg(dir)
            .args(["--api", &api, "--listen", "/ip4/127.0.0.1/tcp/0"])
            .env_remove("AGENTNET_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("agentnet node run starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("the node exited early after {seen:?}"))
                .expect("a line");
            if line.starts_with("api ") {
                assert!(line.contains(&api), "{line}");
                break;
            }
            seen.push(line);
        }
        assert!(seen[0].starts_with("agentnet node 12D3Koo"), "{seen:?}");
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        RunningNode { child, api }
    }

    fn cli(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--api", &self.api]);
        agentnet(&all)
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill");
        let status = self.child.wait().expect("wait");
        std::mem::forget(self);
        status
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn node_run_serves_the_cli_commands_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = RunningNode::start(dir.path());

    let status = node.cli(&["status", "--json"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).expect("json");
    assert_eq!(status["agents"], 0);

    let card = dir.path().join("card.toml");
    std::fs::write(
        &card,
        "name = \"translator\"\ndescription = \"translates\"\n\n[[capabilities]]\nname = \"translate\"\ndescription = \"Translate English to German\"\ntags = [\"nlp\"]\n",
    )
    .expect("card");
    let registered = node.cli(&["agent", "register", "--card", card.to_str().expect("utf-8")]);
    assert!(registered.status.success(), "{}", stderr(&registered));
    let did = stdout(&registered);
    assert!(did.starts_with("did:key:z6Mk"), "{did}");

    let found = node.cli(&["search", "german translation", "--k", "3"]);
    assert!(found.status.success(), "{}", stderr(&found));
    assert!(stdout(&found).contains(&did), "{}", stdout(&found));
    assert!(stdout(&found).contains("translator / translate"));

    let shown = node.cli(&["agent", "show", &did]);
    assert!(
        stdout(&shown).contains("\"hosted_here\": true"),
        "{}",
        stdout(&shown)
    );

    let peers = node.cli(&["peers"]);
    assert!(peers.status.success());
    assert_eq!(stdout(&peers), "no connected peers");

    // Bad input: a clear message and exit code 1, and nothing sent.
    let bad = node.cli(&[
        "intent",
        "send",
        "--from",
        &did,
        "--to",
        &did,
        "--capability",
        "translate",
        "--input",
        "{oops",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("--input is not JSON"),
        "{}",
        stderr(&bad)
    );
    let to_self = node.cli(&[
        "intent",
        "send",
        "--from",
        &did,
        "--to",
        &did,
        "--capability",
        "translate",
    ]);
    assert_eq!(to_self.status.code(), Some(1));
    assert!(stderr(&to_self).contains("400"), "{}", stderr(&to_self));
    let bad_card = dir.path().join("bad.toml");
    std::fs::write(&bad_card, "description = \"no name\"\n").expect("write");
    let out = node.cli(&[
        "agent",
        "register",
        "--card",
        bad_card.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("`name` is required"),
        "{}",
        stderr(&out)
    );

    let removed = node.cli(&["agent", "remove", &did]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    let gone = node.cli(&["agent", "show", &did]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).contains("410"), "{}", stderr(&gone));

    let status = node.stop();
    assert!(
        status.success(),
        "Ctrl-C stops the node cleanly: {status:?}"
    );

    // With the node gone, the client says what is wrong.
    let out = agentnet(&["status", "--api", &format!("127.0.0.1:{}", free_port())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is `agentnet node run` running?"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn node_run_refuses_a_bad_config_file_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "lisen = [\"/ip4/127.0.0.1/tcp/0\"]\n").expect("write");
    let out = agentnet(&["node", "run", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("lisen"), "{}", stderr(&out));
    let out = agentnet(&[
        "node",
        "run",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        "--api",
        "not-an-address",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("api:"), "{}", stderr(&out));
}

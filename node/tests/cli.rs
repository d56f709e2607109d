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

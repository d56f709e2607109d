//! Key files: written 0600, refused when others can read them.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use agentnet_protocol::{KeyFileError, Keypair, read_key_file, write_key_file};

#[test]
fn written_with_mode_0600_and_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.key");
    let keypair = Keypair::generate().expect("rng");
    write_key_file(&path, &keypair, false).expect("write");
    let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(read_key_file(&path).expect("read").did(), keypair.did());
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
}

#[test]
fn an_existing_key_is_never_overwritten_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.key");
    let first = Keypair::from_seed(&[1; 32]);
    write_key_file(&path, &first, false).expect("write");
    let err = write_key_file(&path, &Keypair::from_seed(&[2; 32]), false).expect_err("exists");
    assert!(matches!(err, KeyFileError::Exists { .. }), "{err}");
    assert_eq!(read_key_file(&path).expect("read").did(), first.did());
    write_key_file(&path, &Keypair::from_seed(&[2; 32]), true).expect("overwrite on request");
    assert_eq!(
        read_key_file(&path).expect("read").did(),
        Keypair::from_seed(&[2; 32]).did()
    );
}

#[test]
fn a_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.key");
    write_key_file(&path, &Keypair::from_seed(&[1; 32]), false).expect("write");
    for mode in [0o644, 0o640, 0o604, 0o610] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        match read_key_file(&path) {
            Err(KeyFileError::InsecurePermissions { mode: m, .. }) => {
                assert_eq!(m, mode);
                let msg = read_key_file(&path).expect_err("insecure").to_string();
                assert!(msg.contains("chmod 600"), "{msg}");
            }
            other => panic!("mode {mode:o}: expected refusal, got {other:?}"),
        }
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).expect("chmod");
    assert!(read_key_file(&path).is_ok(), "owner-only read is fine");
}

#[test]
fn garbage_and_huge_files_are_refused_with_reasons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("junk.key");
    fs::write(&path, "hello\n").expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(matches!(
        read_key_file(&path),
        Err(KeyFileError::Format { .. })
    ));
    fs::write(&path, vec![b'a'; 10_000]).expect("write");
    assert!(matches!(
        read_key_file(&path),
        Err(KeyFileError::TooLarge { len: 10_000, .. })
    ));
    assert!(matches!(
        read_key_file(&dir.path().join("missing.key")),
        Err(KeyFileError::Io { .. })
    ));
}

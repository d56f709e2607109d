//! The secret key file format (`specs/identity.md#key-files`).
//!
//! ```text
//! agentnet-secret-key-v1
//! type: ed25519
//! did: did:key:z6Mk…
//! secret: <64 hex digits: the 32-byte Ed25519 seed, written lowercase>
//! ```
//!
//! Files are written with mode 0600 through a temporary file, fsync and rename, and a file
//! that its group or other users may access is refused on load, as ssh does.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::did::Did;
use crate::keys::Keypair;

/// The first line of every key file; the version changes if the format does.
pub const KEY_FILE_HEADER: &str = "agentnet-secret-key-v1";

/// Key files are tiny; anything larger is not a key file and is not read whole.
pub const MAX_KEY_FILE_LEN: u64 = 4096;

/// Why a key file could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Reading or writing failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file exists and overwriting was not asked for.
    #[error("key file {path} already exists; refusing to overwrite a key (move it away first)")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The file's group or others may access it.
    #[error(
        "key file {path} has mode {mode:04o}, so other users may read the secret; \
         run `chmod 600 {path}` if that is safe, or generate a new key"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is larger than [`MAX_KEY_FILE_LEN`].
    #[error("key file {path} is {len} bytes; a key file is at most {MAX_KEY_FILE_LEN} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The content does not follow the format.
    #[error("key file {path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Writes `keypair` to `path` with mode 0600.
///
/// The key is written to a temporary file in the same directory, flushed to disk and renamed
/// into place, so a crash leaves either no file or a complete one. Fails with
/// [`KeyFileError::Exists`] if `path` exists, unless `overwrite` is set.
pub fn write_key_file(path: &Path, keypair: &Keypair, overwrite: bool) -> Result<(), KeyFileError> {
    let io_err = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    if !overwrite && path.exists() {
        return Err(KeyFileError::Exists {
            path: path.to_owned(),
        });
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| KeyFileError::Format {
            path: path.to_owned(),
            reason: "the path has no file name".into(),
        })?
        .to_string_lossy()
        .into_owned();
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| KeyFileError::Io {
        path: path.to_owned(),
        source: io::Error::other(e.to_string()),
    })?;
    let tmp = dir.join(format!(".{file_name}.tmp-{}", hex::encode(nonce)));
    let content = Zeroizing::new(format!(
        "{KEY_FILE_HEADER}\ntype: ed25519\ndid: {}\nsecret: {}\n",
        keypair.did(),
        hex::encode(keypair.seed().as_ref())
    ));
    let result = (|| {
        let mut file = create_private(&tmp)?;
        file.write_all(content.as_bytes())?;
        file.sync_all()?;
        if overwrite {
            fs::rename(&tmp, path)?;
        } else {
            // A hard link never replaces an existing file, so a key created meanwhile by
            // someone else survives; the temporary name is removed afterwards.
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)?;
        }
        // Make the rename itself durable.
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    match result {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(KeyFileError::Exists {
            path: path.to_owned(),
        }),
        other => other.map_err(io_err),
    }
}

#[cfg(unix)]
fn create_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// Reads a key file written by [`write_key_file`].
///
/// Refuses a file whose group or others have any permission ([`KeyFileError::InsecurePermissions`]),
/// a file that is not in the format, and a file whose `did:` line does not match its secret.
pub fn read_key_file(path: &Path) -> Result<Keypair, KeyFileError> {
    let io_err = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    check_permissions(path, &meta)?;
    if meta.len() > MAX_KEY_FILE_LEN {
        return Err(KeyFileError::TooLarge {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    let mut content = Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE_LEN)
        .read_to_string(&mut content)
        .map_err(io_err)?;
    parse_key_file(&content).map_err(|reason| KeyFileError::Format {
        path: path.to_owned(),
        reason,
    })
}

#[cfg(unix)]
fn check_permissions(path: &Path, meta: &fs::Metadata) -> Result<(), KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path, _meta: &fs::Metadata) -> Result<(), KeyFileError> {
    Ok(())
}

fn parse_key_file(content: &str) -> Result<Keypair, String> {
    let mut lines = content.lines();
    match lines.next() {
        Some(KEY_FILE_HEADER) => {}
        Some(other) => {
            return Err(format!(
                "first line is {:?}, expected {KEY_FILE_HEADER:?}",
                other.chars().take(40).collect::<String>()
            ));
        }
        None => return Err("the file is empty".into()),
    }
    let (mut key_type, mut did, mut secret) = (None, None, None);
    for (n, line) in lines.enumerate() {
        let line_no = n + 2;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("line {line_no} is not `name: value`"));
        };
        let slot = match name.trim() {
            "type" => &mut key_type,
            "did" => &mut did,
            "secret" => &mut secret,
            other => return Err(format!("line {line_no} has unknown field {other:?}")),
        };
        if slot.replace(value.trim()).is_some() {
            return Err(format!("line {line_no} repeats field {:?}", name.trim()));
        }
    }
    match key_type {
        Some("ed25519") => {}
        Some(other) => {
            return Err(format!(
                "key type {other:?} is not supported; expected ed25519"
            ));
        }
        None => return Err("the `type` field is missing".into()),
    }
    let secret = secret.ok_or("the `secret` field is missing")?;
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(secret, seed.as_mut())
        .map_err(|_| "the secret must be 64 hex digits (a 32-byte Ed25519 seed)".to_string())?;
    let keypair = Keypair::from_seed(&seed);
    if let Some(did) = did {
        let did: Did = did
            .parse()
            .map_err(|e| format!("the `did` field is not a valid DID: {e}"))?;
        if did != keypair.did() {
            return Err(format!(
                "the `did` field {did} does not match the secret, whose DID is {}; the file is corrupt",
                keypair.did()
            ));
        }
    }
    Ok(keypair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_each_malformation() {
        let kp = Keypair::from_seed(&[9; 32]);
        let good = format!(
            "{KEY_FILE_HEADER}\ntype: ed25519\ndid: {}\nsecret: {}\n",
            kp.did(),
            hex::encode([9u8; 32])
        );
        assert_eq!(parse_key_file(&good).map(|k| k.did()), Ok(kp.did()));
        let cases = [
            (String::new(), "empty"),
            (
                good.replace(KEY_FILE_HEADER, "agentnet-secret-key-v9"),
                "first line",
            ),
            (good.replace("type: ed25519", "type: rsa"), "not supported"),
            (
                good.replace("type: ed25519\n", ""),
                "`type` field is missing",
            ),
            (good.replace(&hex::encode([9u8; 32]), "zz"), "64 hex digits"),
            (
                good.replace(
                    kp.did().as_str(),
                    Keypair::from_seed(&[8; 32]).did().as_str(),
                ),
                "does not match",
            ),
            (format!("{good}colour: blue\n"), "unknown field"),
            (format!("{good}type: ed25519\n"), "repeats"),
        ];
        for (content, expected) in cases {
            let err = parse_key_file(&content).expect_err(expected);
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }
}

//! `agentnet`: the agentnet command line.

use std::path::PathBuf;
use std::process::ExitCode;

use agentnet_protocol::{Keypair, PublicKey, read_key_file, write_key_file};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// agentnet: a peer-to-peer network for AI agents.
#[derive(Debug, Parser)]
#[command(name = "agentnet", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create and inspect Ed25519 keys and their did:key identities.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Generate a new key, write it to FILE with mode 0600, and print its DID.
    Gen {
        /// Where to write the key. An existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the did:key of a raw 32-byte Ed25519 public key.
    Did {
        /// The public key as 64 hexadecimal digits.
        #[arg(long, value_name = "HEX")]
        public_key_hex: String,
    },
    /// Print the DID, public key and libp2p PeerId of a key file.
    Show {
        /// The key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Key(KeyCommand::Gen { out }) => {
            let keypair = Keypair::generate().context("cannot generate a key")?;
            write_key_file(&out, &keypair, false)?;
            println!("{}", keypair.did());
        }
        Command::Key(KeyCommand::Did { public_key_hex }) => {
            let key = parse_public_key_hex(&public_key_hex)?;
            println!("{}", key.to_did());
        }
        Command::Key(KeyCommand::Show { key }) => {
            let keypair = read_key_file(&key)?;
            println!("did:        {}", keypair.did());
            println!("public key: {}", hex::encode(keypair.public().as_bytes()));
            println!("peer id:    {}", keypair.peer_id());
        }
    }
    Ok(())
}

/// Parses 64 hex digits as an Ed25519 public key, explaining exactly what is wrong otherwise.
fn parse_public_key_hex(input: &str) -> Result<PublicKey> {
    let hex_digits = input.trim();
    let hex_digits = hex_digits
        .strip_prefix("0x")
        .or_else(|| hex_digits.strip_prefix("0X"))
        .unwrap_or(hex_digits);
    if let Some((i, c)) = hex_digits
        .char_indices()
        .find(|(_, c)| !c.is_ascii_hexdigit())
    {
        bail!("--public-key-hex: {c:?} at position {i} is not a hexadecimal digit");
    }
    if hex_digits.len() != 64 {
        bail!(
            "--public-key-hex must be 64 hex digits (a 32-byte Ed25519 public key), got {} digits",
            hex_digits.len()
        );
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut bytes).context("--public-key-hex is not valid hex")?;
    PublicKey::from_bytes(&bytes)
        .context("--public-key-hex: these 32 bytes are not a valid Ed25519 public key (not a point on the curve)")
}

//! The node's TOML configuration file, as `agentnet node run --config FILE` reads it.
//!
//! Precedence: built-in defaults < this file < environment variables < command-line flags.
//! Every key is optional; unknown keys are errors, so a typo is never silently ignored.
//!
//! ```toml
//! data_dir = "/var/lib/agentnet"
//! listen = ["/ip4/0.0.0.0/tcp/7341", "/ip4/0.0.0.0/udp/7341/quic-v1"]
//! api = "127.0.0.1:7340"
//! bootstrap = ["/ip4/192.0.2.10/tcp/7341/p2p/12D3KooW..."]
//! mdns = false
//! gossip = true
//! sync_interval_secs = 30
//! max_connections = 256
//! target_peers = 128
//! idle_timeout_secs = 60
//! pause_issuers = ["did:key:z6Mk..."]
//! minilm_dir = "/opt/models/minilm"
//! log = "info"
//! log_format = "text"   # or "json"
//!
//! [intents]
//! per_minute = 100
//! burst = 200
//! discovery_per_minute = 10
//! inbox = 64
//!
//! [gateway]
//! url = "http://127.0.0.1:8080"
//! api_key = "agn_..."
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentnet_protocol::Did;
use libp2p::Multiaddr;
use serde::Deserialize;

use crate::intent::IntentLimits;
use crate::node::{GatewayConfig, NodeConfig};

/// The largest config file read.
pub const MAX_CONFIG_LEN: usize = 1024 * 1024;
/// The default p2p port of `agentnet node run` (TCP and QUIC).
pub const DEFAULT_P2P_PORT: u16 = 7341;

/// The file's contents. Every field is optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FileConfig {
    /// Where the node keeps its store and API token.
    pub data_dir: Option<PathBuf>,
    /// Multiaddrs to listen on.
    pub listen: Option<Vec<String>>,
    /// The local API's address.
    pub api: Option<String>,
    /// Peers to dial at start.
    pub bootstrap: Option<Vec<String>>,
    /// mDNS discovery on the LAN.
    pub mdns: Option<bool>,
    /// Take part in gossip.
    pub gossip: Option<bool>,
    /// Seconds between anti-entropy rounds.
    pub sync_interval_secs: Option<u64>,
    /// The most connections.
    pub max_connections: Option<u32>,
    /// The connections kept without pruning.
    pub target_peers: Option<usize>,
    /// Seconds before an idle connection is closed.
    pub idle_timeout_secs: Option<u64>,
    /// Gateways whose pause notices are obeyed for any agent.
    pub pause_issuers: Option<Vec<String>>,
    /// The all-MiniLM-L6-v2 model directory.
    pub minilm_dir: Option<PathBuf>,
    /// Log filter (`RUST_LOG` syntax).
    pub log: Option<String>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// Intent limits.
    pub intents: Option<IntentsSection>,
    /// The gateway for budget reservations.
    pub gateway: Option<GatewaySection>,
}

/// `[intents]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct IntentsSection {
    /// Sustained intents per minute per peer and per sending agent.
    pub per_minute: Option<u32>,
    /// The burst allowance.
    pub burst: Option<u32>,
    /// Discovery queries per minute per peer.
    pub discovery_per_minute: Option<u32>,
    /// Intents queued per agent inbox.
    pub inbox: Option<usize>,
    /// Intents in flight per direction (at most 4,096).
    pub in_flight: Option<usize>,
    /// Senders with a rate-limit bucket at once.
    pub tracked: Option<usize>,
    /// Intents remembered against replay at once.
    pub replay_capacity: Option<usize>,
    /// Live replay entries one peer may hold.
    pub replay_per_peer: Option<usize>,
}

/// `[gateway]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GatewaySection {
    /// Base URL.
    pub url: String,
    /// The node's API key there.
    pub api_key: String,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why, with the line.
        reason: String,
    },
    /// A value is wrong.
    #[error("{key}: {reason}")]
    Value {
        /// Which setting.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read = |reason: String| ConfigError::Read {
            path: path.to_owned(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| read(e.to_string()))?;
        if meta.len() > MAX_CONFIG_LEN as u64 {
            return Err(read(format!("larger than {MAX_CONFIG_LEN} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
        Self::parse(&text).map_err(|reason| ConfigError::Parse {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// The settings `agentnet node run` ends up with.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RunConfig {
    /// The node's configuration.
    pub node: NodeConfig,
    /// The local API's address.
    pub api: SocketAddr,
    /// Log filter.
    pub log: String,
    /// Log as JSON lines.
    pub log_json: bool,
}

/// Values from the environment or flags, which override the file.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Overrides {
    /// `--data-dir` / `AGENTNET_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--listen` (repeatable) / `AGENTNET_LISTEN` (comma-separated).
    pub listen: Vec<String>,
    /// `--api` / `AGENTNET_API`.
    pub api: Option<String>,
    /// `--bootstrap` (repeatable) / `AGENTNET_BOOTSTRAP` (comma-separated).
    pub bootstrap: Vec<String>,
    /// `--mdns`.
    pub mdns: Option<bool>,
    /// `--minilm-dir` / `AGENTNET_MINILM_DIR`.
    pub minilm_dir: Option<PathBuf>,
}

/// The default data directory: `$XDG_DATA_HOME/agentnet`, else `~/.local/share/agentnet`,
/// else `./agentnet-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("agentnet");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/share/agentnet");
    }
    PathBuf::from("agentnet-data")
}

fn multiaddrs(key: &'static str, values: &[String]) -> Result<Vec<Multiaddr>, ConfigError> {
    values
        .iter()
        .map(|v| {
            v.parse::<Multiaddr>().map_err(|e| ConfigError::Value {
                key,
                reason: format!("`{v}` is not a multiaddr: {e}"),
            })
        })
        .collect()
}

impl RunConfig {
    /// Defaults, then `file`, then `overrides`.
    pub fn resolve(file: FileConfig, overrides: Overrides) -> Result<Self, ConfigError> {
        let data_dir = overrides
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir);
        let mut node = NodeConfig::new(data_dir);
        node.listen = multiaddrs(
            "listen",
            &[
                format!("/ip4/127.0.0.1/tcp/{DEFAULT_P2P_PORT}"),
                format!("/ip4/127.0.0.1/udp/{DEFAULT_P2P_PORT}/quic-v1"),
            ],
        )?;
        if let Some(listen) = file.listen {
            node.listen = multiaddrs("listen", &listen)?;
        }
        if !overrides.listen.is_empty() {
            node.listen = multiaddrs("listen", &overrides.listen)?;
        }
        if node.listen.is_empty() {
            return Err(ConfigError::Value {
                key: "listen",
                reason: "give at least one address".into(),
            });
        }
        if let Some(bootstrap) = file.bootstrap {
            node.bootstrap = multiaddrs("bootstrap", &bootstrap)?;
        }
        if !overrides.bootstrap.is_empty() {
            node.bootstrap = multiaddrs("bootstrap", &overrides.bootstrap)?;
        }
        node.mdns = overrides.mdns.or(file.mdns).unwrap_or(false);
        node.gossip = file.gossip.unwrap_or(true);
        if let Some(secs) = file.sync_interval_secs {
            if secs == 0 {
                return Err(ConfigError::Value {
                    key: "sync_interval_secs",
                    reason: "must be at least 1".into(),
                });
            }
            node.sync_interval = Duration::from_secs(secs);
        }
        if let Some(n) = file.max_connections {
            if n == 0 {
                return Err(ConfigError::Value {
                    key: "max_connections",
                    reason: "must be at least 1".into(),
                });
            }
            node.max_connections = n;
        }
        if let Some(n) = file.target_peers {
            if n == 0 || n > node.max_connections as usize {
                return Err(ConfigError::Value {
                    key: "target_peers",
                    reason: format!(
                        "must be from 1 to max_connections ({})",
                        node.max_connections
                    ),
                });
            }
            node.target_peers = n;
        }
        if let Some(secs) = file.idle_timeout_secs {
            node.idle_timeout = Duration::from_secs(secs.max(1));
        }
        if let Some(issuers) = file.pause_issuers {
            node.pause_issuers = issuers
                .iter()
                .map(|d| {
                    d.parse::<Did>().map_err(|e| ConfigError::Value {
                        key: "pause_issuers",
                        reason: format!("`{d}`: {e}"),
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        node.minilm_dir = overrides.minilm_dir.or(file.minilm_dir);
        if let Some(intents) = file.intents {
            let mut limits = IntentLimits::default();
            limits.per_minute = intents.per_minute.unwrap_or(limits.per_minute);
            limits.burst = intents.burst.unwrap_or(limits.burst);
            limits.discovery_per_minute = intents
                .discovery_per_minute
                .unwrap_or(limits.discovery_per_minute);
            limits.inbox = intents.inbox.unwrap_or(limits.inbox).clamp(1, 65_536);
            limits.in_flight = intents
                .in_flight
                .unwrap_or(limits.in_flight)
                .clamp(1, 65_536);
            node.intents = limits;
        }
        if let Some(gateway) = file.gateway {
            node.gateway = Some(GatewayConfig {
                url: gateway.url,
                api_key: gateway.api_key,
            });
        }
        let api = overrides
            .api
            .or(file.api)
            .unwrap_or_else(|| crate::api::DEFAULT_API_ADDR.to_owned());
        let api = api.parse::<SocketAddr>().map_err(|e| ConfigError::Value {
            key: "api",
            reason: format!("`{api}` is not an address such as 127.0.0.1:7340: {e}"),
        })?;
        let log_json = match file.log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(ConfigError::Value {
                    key: "log_format",
                    reason: format!("`{other}`: use `text` or `json`"),
                });
            }
        };
        Ok(RunConfig {
            node,
            api,
            log: file.log.unwrap_or_else(|| "info".to_owned()),
            log_json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let file = FileConfig::parse(
            r#"
            data_dir = "/from/file"
            api = "127.0.0.1:9000"
            listen = ["/ip4/127.0.0.1/tcp/9001"]
            mdns = true
            [intents]
            per_minute = 5
            "#,
        )
        .expect("parse");
        let config = RunConfig::resolve(
            file.clone(),
            Overrides {
                api: Some("127.0.0.1:9100".into()),
                ..Default::default()
            },
        )
        .expect("resolve");
        assert_eq!(config.node.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.api.port(), 9100, "the flag wins");
        assert_eq!(config.node.listen.len(), 1, "the file wins over defaults");
        assert!(config.node.mdns);
        assert_eq!(config.node.intents.per_minute, 5);
        assert_eq!(config.node.intents.burst, 200, "unset keys keep defaults");

        let defaults =
            RunConfig::resolve(FileConfig::default(), Overrides::default()).expect("defaults");
        assert_eq!(defaults.api.to_string(), crate::api::DEFAULT_API_ADDR);
        assert_eq!(defaults.node.listen.len(), 2);
        assert!(!defaults.node.mdns);
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let err = FileConfig::parse("lisen = []").expect_err("unknown key");
        assert!(err.contains("lisen"), "{err}");
        let file = FileConfig::parse(r#"listen = ["not an address"]"#).expect("parse");
        let err = RunConfig::resolve(file, Overrides::default()).expect_err("bad multiaddr");
        assert!(err.to_string().starts_with("listen:"), "{err}");
        let file = FileConfig::parse(r#"log_format = "xml""#).expect("parse");
        assert!(RunConfig::resolve(file, Overrides::default()).is_err());
        let file = FileConfig::parse(r#"pause_issuers = ["did:web:example"]"#).expect("parse");
        assert!(RunConfig::resolve(file, Overrides::default()).is_err());
    }
}

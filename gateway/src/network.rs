//! The gateway's view of the network through its embedded node (`agentnet_node`).

use std::future::Future;
use std::pin::Pin;

use agentnet_node::NodeHandle;
use agentnet_protocol::SignedEnvelope;

use crate::{Network, SeenAgent};

/// A [`Network`] backed by an embedded node.
#[derive(Clone, Debug)]
pub struct NodeNetwork(pub NodeHandle);

impl Network for NodeNetwork {
    fn publish(
        &self,
        envelope: SignedEnvelope,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move { self.0.publish(&envelope).await.map_err(|e| e.to_string()) })
    }

    fn agents(&self, after: &str, limit: usize) -> Vec<SeenAgent> {
        let cards = match self.0.cards(after, limit) {
            Ok(cards) => cards,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the node's registry");
                return Vec::new();
            }
        };
        cards
            .into_iter()
            .map(|card| SeenAgent {
                did: card.did.to_string(),
                name: card.name,
                capabilities: card.capabilities.into_iter().map(|c| c.name).collect(),
                host: card.host.to_string(),
                credential_issuers: card
                    .credentials
                    .iter()
                    .filter_map(|c| {
                        let v: serde_json::Value = serde_json::from_slice(&c.data).ok()?;
                        match v.get("issuer")? {
                            serde_json::Value::String(s) => Some(s.clone()),
                            serde_json::Value::Object(o) => {
                                o.get("id").and_then(|i| i.as_str()).map(str::to_owned)
                            }
                            _ => None,
                        }
                    })
                    .collect(),
            })
            .collect()
    }
}

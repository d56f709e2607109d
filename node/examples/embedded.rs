//! Embedding agentnet in a Rust program: two nodes in one process, an agent with an
//! in-process intent handler on one, a caller on the other.
//!
//! ```sh
//! cargo run -p agentnet-node --example embedded
//! ```

use std::time::Duration;

use agentnet_discovery::SearchQuery;
use agentnet_node::{AgentReply, AgentSpec, IntentRequest, Node, NodeConfig};
use agentnet_protocol::{Capability, Intent};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let host = Node::builder(NodeConfig::new(dirs.0.path()))
        .spawn()
        .await?;
    let client = Node::builder(NodeConfig::new(dirs.1.path()))
        .spawn()
        .await?;

    // An agent that reverses text, answered in-process.
    let reverser = host
        .register_agent(AgentSpec::new(
            "reverser",
            "reverses text",
            vec![Capability {
                name: "reverse".into(),
                description: "Reverse a string of text".into(),
                tags: vec!["text".into()],
                version: "1".into(),
                price: None,
            }],
        ))
        .await?;
    host.serve(&reverser, |intent: Intent| async move {
        let input: serde_json::Value = serde_json::from_slice(&intent.input).unwrap_or_default();
        match input["text"].as_str() {
            Some(text) => AgentReply::completed(serde_json::json!({
                "text": text.chars().rev().collect::<String>()
            })),
            None => AgentReply::failed("give {\"text\": \"...\"}"),
        }
    })?;

    // The client joins and finds the agent by what it does.
    client.dial(host.listen_addrs().await?[0].clone()).await?;
    let me = client
        .register_agent(AgentSpec::new(
            "caller",
            "asks others",
            vec![Capability {
                name: "ask".into(),
                description: "Ask other agents for help".into(),
                tags: vec![],
                version: "1".into(),
                price: None,
            }],
        ))
        .await?;
    let hit = loop {
        let page = client.search(&SearchQuery::new("reverse some text", 3))?;
        if let Some(hit) = page.hits.into_iter().find(|h| h.did == reverser) {
            break hit;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "found {} ({}) with score {:.3}",
        hit.name, hit.did, hit.score
    );

    let outcome = client
        .send_intent(IntentRequest::new(
            me,
            hit.did.clone(),
            hit.capability,
            serde_json::json!({ "text": "agentnet" }),
        ))
        .await?;
    let output = outcome
        .result
        .map(|r| String::from_utf8_lossy(&r.output).into_owned())
        .unwrap_or_default();
    println!(
        "{:?} in {:?}: {output}; trust in the reverser is now {:.3}",
        outcome.outcome,
        outcome.latency,
        client.trust(&hit.did, None).score
    );
    client.shutdown().await?;
    host.shutdown().await?;
    Ok(())
}

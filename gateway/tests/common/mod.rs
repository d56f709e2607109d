//! Helpers for the gateway's tests, which run on the machine's real Postgres
//! (127.0.0.1:5432, database `test`, or `DATABASE_URL`), each test in a fresh schema of its
//! own so that tests run side by side.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

use agentnet_gateway::keys::{self, Principal};
use agentnet_gateway::{Db, DbOptions, Gateway, GatewayConfig, Network, Role, SeenAgent, api};
use agentnet_protocol::{Keypair, SignedEnvelope};

pub fn url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Drops the schemas of test runs that ended over an hour ago.
async fn drop_stale_schemas() {
    use sqlx::Connection;
    let Ok(mut conn) = sqlx::PgConnection::connect(&url()).await else {
        return;
    };
    let now = now_secs();
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT nspname::text FROM pg_namespace WHERE nspname ~ '^t_[0-9]+_'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    for (name,) in names {
        let secs: u64 = name
            .split('_')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(now);
        if secs + 3600 < now && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE"
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn db_with(max_connections: u32) -> Db {
    drop_stale_schemas().await;
    let schema = format!(
        "t_{}_{}",
        now_secs(),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    db_in(&schema, max_connections).await
}

/// A pool on an existing schema: a second gateway on the same database.
pub async fn db_in(schema: &str, max_connections: u32) -> Db {
    Db::connect(
        &url(),
        DbOptions {
            max_connections,
            schema: Some(schema.to_owned()),
            ..DbOptions::default()
        },
    )
    .await
    .expect("Postgres on 127.0.0.1:5432 (see README: the tests need it)")
}

/// Records what the gateway publishes.
#[derive(Debug, Default)]
pub struct Recorder(pub Mutex<Vec<SignedEnvelope>>);

impl Network for Recorder {
    fn publish(
        &self,
        envelope: SignedEnvelope,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        if let Ok(mut v) = self.0.lock() {
            v.push(envelope);
        }
        Box::pin(async { Ok(()) })
    }

    fn agents(&self, _after: &str, _limit: usize) -> Vec<SeenAgent> {
        Vec::new()
    }
}

pub struct TestGateway {
    pub gw: Gateway,
    pub schema: String,
    pub key: Keypair,
    pub published: Arc<Recorder>,
}

pub async fn gateway_with(max_connections: u32, config: GatewayConfig) -> TestGateway {
    drop_stale_schemas().await;
    let schema = format!(
        "t_{}_{}",
        now_secs(),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let db = db_in(&schema, max_connections).await;
    let key = Keypair::generate().expect("key");
    let published = Arc::new(Recorder::default());
    let gw = Gateway::new(
        db,
        Keypair::from_seed(&key.seed()),
        Some(published.clone() as Arc<dyn Network>),
        config,
    );
    TestGateway {
        gw,
        schema,
        key,
        published,
    }
}

/// Another gateway process on the same database and key, as a second replica would be.
pub async fn replica(t: &TestGateway, max_connections: u32) -> Gateway {
    let db = db_in(&t.schema, max_connections).await;
    Gateway::new(
        db,
        Keypair::from_seed(&t.key.seed()),
        None,
        GatewayConfig::default(),
    )
}

pub async fn gateway() -> TestGateway {
    gateway_with(8, GatewayConfig::default()).await
}

pub async fn admin(gw: &Gateway, org: &str) -> (Principal, String) {
    let (_, key) = keys::init_org(gw, org).await.expect("init");
    let principal = keys::authenticate(gw.db(), &key.key).await.expect("auth");
    assert_eq!(principal.role, Role::Admin);
    (principal, key.key)
}

/// Serves `gw` on 127.0.0.1; returns its base URL.
pub async fn serve(gw: Gateway) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, api::router(gw)).await });
    base
}

/// A fresh agent DID.
pub fn agent_did() -> String {
    Keypair::generate().expect("key").did().to_string()
}

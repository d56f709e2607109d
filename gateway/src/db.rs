//! The Postgres pool, migrations and partition upkeep.

use std::time::Duration;

use sqlx::Executor;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The settings are wrong.
    #[error("bad database settings: {0}")]
    Config(String),
    /// Postgres could not be reached or refused the connection.
    #[error("cannot connect to Postgres: {0}")]
    Connect(String),
    /// A migration failed.
    #[error("cannot apply migrations: {0}")]
    Migrate(String),
    /// A query failed.
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

/// How to connect.
#[derive(Clone, Debug)]
pub struct DbOptions {
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long a request waits for a connection before it gets `database_unavailable`.
    pub acquire_timeout: Duration,
    /// Every connection uses this schema (created if missing), so that tests can run side
    /// by side. Lowercase letters, digits and `_` only.
    pub schema: Option<String>,
    /// The longest any one statement may run.
    pub statement_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            max_connections: 32,
            acquire_timeout: Duration::from_secs(5),
            schema: None,
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// The gateway's database.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
}

impl Db {
    /// Connects to `url` and applies the migrations.
    pub async fn connect(url: &str, options: DbOptions) -> Result<Db, DbError> {
        if let Some(schema) = &options.schema
            && (schema.is_empty()
                || schema.len() > 63
                || !schema
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        {
            return Err(DbError::Config(format!(
                "schema `{schema}`: use 1 to 63 lowercase letters, digits and _"
            )));
        }
        let connect: PgConnectOptions = url
            .parse()
            .map_err(|e| DbError::Config(format!("DATABASE_URL: {e}")))?;
        let timeout_ms = options.statement_timeout.as_millis();
        let mut setup = format!("SET statement_timeout = {timeout_ms}");
        if let Some(s) = &options.schema {
            // The schema name was checked above: letters, digits and _ only.
            setup = format!("CREATE SCHEMA IF NOT EXISTS {s}; SET search_path TO {s}; {setup}");
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _| {
                let setup = setup.clone();
                Box::pin(async move {
                    conn.execute(sqlx::AssertSqlSafe(setup)).await?;
                    Ok(())
                })
            })
            .connect_with(connect)
            .await
            .map_err(|e| DbError::Connect(e.to_string()))?;
        let db = Db { pool };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), DbError> {
        // Two gateways starting at once must not both migrate: the migrator takes its own
        // advisory lock, and a fresh schema is created before it runs.
        sqlx::migrate!("./migrations")
            .run(&self.pool)
            .await
            .map_err(|e| DbError::Migrate(e.to_string()))?;
        self.ensure_partitions().await?;
        Ok(())
    }

    /// Creates the monthly partitions of runs and events from three months back to three
    /// months ahead (those that are missing). Returns how many were created.
    pub async fn ensure_partitions(&self) -> Result<i32, DbError> {
        let (n,): (i32,) = sqlx::query_as(
            "SELECT agentnet_ensure_partitions(now() - interval '3 months', now() + interval '3 months')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether the database answers now.
    pub async fn ready(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

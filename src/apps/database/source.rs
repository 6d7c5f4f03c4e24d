//! Reading the apps table of PostgreSQL or MySQL/MariaDB, every column as text.
//!
//! Herald's layout and Soketi's use different column types (booleans as `boolean`, `smallint` or
//! `tinyint`, limits as any width of integer, webhooks as `json` or text), so each column Herald
//! knows is cast to text in the query and parsed in [`super::rows`]: one parser for both
//! databases and both layouts. Only columns that exist are selected, so a table may leave out
//! any optional one.

use std::time::Duration;

use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};

use super::rows::{Record, KNOWN_COLUMNS};
use crate::config::AppsDriver;

/// Connections kept to the database: one refresh at a time, and one spare.
const POOL_SIZE: u32 = 2;
/// How long a refresh waits for a connection before it counts as failed.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

pub enum Source {
    Postgres(PgPool),
    Mysql(MySqlPool),
}

impl Source {
    /// A pool that connects when first used, so a database that is down at start-up is a failed
    /// refresh (served as `DEGRADED`), not a server that does not start.
    pub fn connect_lazy(driver: AppsDriver, url: &str) -> Result<Source, sqlx::Error> {
        Ok(match driver {
            AppsDriver::Mysql => Source::Mysql(
                MySqlPoolOptions::new()
                    .max_connections(POOL_SIZE)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy(url)?,
            ),
            _ => Source::Postgres(
                PgPoolOptions::new().max_connections(POOL_SIZE).acquire_timeout(ACQUIRE_TIMEOUT).connect_lazy(url)?,
            ),
        })
    }

    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match self {
            Source::Postgres(pool) => Some(pool),
            Source::Mysql(_) => None,
        }
    }

    /// Every row of `table`, as the known columns it has; more than `max_rows` is an error (the
    /// query asks for one more than that, so an oversized table is never read whole).
    pub async fn read(&self, table: &str, max_rows: usize) -> Result<Vec<Record>, String> {
        let records = self.read_table(table, max_rows.saturating_add(1)).await.map_err(|e| e.to_string())??;
        if records.len() > max_rows {
            return Err(format!("table {table:?} has more than {max_rows} rows (apps_store.max_apps)"));
        }
        Ok(records)
    }

    async fn read_table(&self, table: &str, limit: usize) -> Result<Result<Vec<Record>, String>, sqlx::Error> {
        let (schema, name) = match table.split_once('.') {
            Some((schema, name)) => (Some(schema), name),
            None => (None, table),
        };
        match self {
            Source::Postgres(pool) => {
                let columns: Vec<String> = sqlx::query_scalar(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_name = $1 AND table_schema = COALESCE($2, current_schema())",
                )
                .bind(name)
                .bind(schema)
                .fetch_all(pool)
                .await?;
                let columns = match known(columns, table) {
                    Ok(columns) => columns,
                    Err(e) => return Ok(Err(e)),
                };
                let list: Vec<String> = columns.iter().map(|c| format!("\"{c}\"::text")).collect();
                let quoted = quote(table, '"');
                let sql = format!("SELECT {} FROM {quoted} LIMIT {limit}", list.join(", "));
                let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(pool).await?;
                Ok(Ok(rows.iter().map(|row| record(&columns, |i| row.try_get::<Option<String>, _>(i))).collect()))
            }
            Source::Mysql(pool) => {
                let columns: Vec<String> = sqlx::query_scalar(
                    "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
                     WHERE table_name = ? AND table_schema = COALESCE(?, DATABASE())",
                )
                .bind(name)
                .bind(schema)
                .fetch_all(pool)
                .await?;
                let columns = match known(columns, table) {
                    Ok(columns) => columns,
                    Err(e) => return Ok(Err(e)),
                };
                let list: Vec<String> = columns.iter().map(|c| format!("CAST(`{c}` AS CHAR)")).collect();
                let quoted = quote(table, '`');
                let sql = format!("SELECT {} FROM {quoted} LIMIT {limit}", list.join(", "));
                let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(pool).await?;
                Ok(Ok(rows.iter().map(|row| record(&columns, |i| row.try_get::<Option<String>, _>(i))).collect()))
            }
        }
    }
}

/// The columns of the table Herald reads; a table without `id`, `key` and `secret` is an error
/// (a wrong table name finds no columns at all).
fn known(mut columns: Vec<String>, table: &str) -> Result<Vec<&'static str>, String> {
    columns.iter_mut().for_each(|c| c.make_ascii_lowercase());
    let known: Vec<&'static str> = KNOWN_COLUMNS.iter().copied().filter(|k| columns.iter().any(|c| c == k)).collect();
    match ["id", "key", "secret"].iter().find(|needed| !known.contains(needed)) {
        Some(missing) if columns.is_empty() => Err(format!("no table {table:?} (or it has no {missing} column)")),
        Some(missing) => Err(format!("table {table:?} has no {missing} column")),
        None => Ok(known),
    }
}

/// A table name (validated at start-up to letters, digits and '_', with an optional schema) in
/// the database's identifier quotes.
fn quote(table: &str, q: char) -> String {
    table.split('.').map(|part| format!("{q}{part}{q}")).collect::<Vec<_>>().join(".")
}

/// One row's non-NULL values. A value that cannot be read as text leaves its column out, so the
/// row is judged (and skipped, if that column is needed) by [`super::rows`], not the whole read.
fn record(columns: &[&'static str], get: impl Fn(usize) -> Result<Option<String>, sqlx::Error>) -> Record {
    let mut record = Record::default();
    for (i, column) in columns.iter().enumerate() {
        if let Ok(Some(value)) = get(i) {
            record.insert(column, value);
        }
    }
    record
}

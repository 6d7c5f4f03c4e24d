//! `[apps_store]`: where the apps come from (the file, PostgreSQL or MySQL/MariaDB), how often a
//! database is read again, and how long a rotated secret keeps being accepted.

use serde::{Deserialize, Serialize};

/// The default `refresh_interval_ms`: an app added to the database is served within this.
pub const DEFAULT_REFRESH_INTERVAL_MS: u64 = 5_000;
/// The default `max_apps`: at about 3 KB per served app, some 300 MB.
pub const DEFAULT_MAX_APPS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppsStoreConfig {
    pub driver: AppsDriver,
    /// `postgres://user:password@host:5432/db` or `mysql://user:password@host:3306/db`.
    pub url: Option<String>,
    /// The table the apps are read from: Herald's own layout or Soketi's (README, App store).
    pub table: String,
    /// How often a database store reads the table again, in milliseconds.
    pub refresh_interval_ms: u64,
    /// After a secret changes, signatures made with the previous one are still accepted this long,
    /// so that requests signed just before a rotation do not fail; 0 refuses them at once.
    pub secret_grace_seconds: u64,
    /// Most rows a read of the table may bring: a bigger table is a failed read (the last good
    /// apps keep being served), so a runaway table cannot take the server's memory.
    pub max_apps: usize,
}

impl Default for AppsStoreConfig {
    fn default() -> Self {
        AppsStoreConfig {
            driver: AppsDriver::File,
            url: None,
            table: "apps".into(),
            refresh_interval_ms: DEFAULT_REFRESH_INTERVAL_MS,
            secret_grace_seconds: 0,
            max_apps: DEFAULT_MAX_APPS,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AppsDriver {
    /// The `[[apps]]` of this file (or `REVERB_APP_*`), reloaded on SIGHUP.
    #[default]
    File,
    Postgres,
    Mysql,
}

impl AppsDriver {
    /// Reads a driver name as Herald and Soketi spell it (Soketi's `array` is the file).
    pub fn parse(name: &str) -> Option<AppsDriver> {
        match name.trim().to_ascii_lowercase().as_str() {
            "file" | "array" => Some(AppsDriver::File),
            "postgres" | "postgresql" | "pg" => Some(AppsDriver::Postgres),
            "mysql" | "mariadb" => Some(AppsDriver::Mysql),
            _ => None,
        }
    }

    pub fn is_database(self) -> bool {
        self != AppsDriver::File
    }

    fn url_schemes(self) -> &'static [&'static str] {
        match self {
            AppsDriver::File => &[],
            AppsDriver::Postgres => &["postgres://", "postgresql://"],
            AppsDriver::Mysql => &["mysql://", "mariadb://"],
        }
    }
}

impl AppsStoreConfig {
    /// The rules the types cannot express, each naming its setting.
    pub fn validate(&self) -> Result<(), String> {
        if !self.driver.is_database() {
            return Ok(());
        }
        let schemes = self.driver.url_schemes();
        match &self.url {
            None => return Err("apps_store.url (or DATABASE_URL) is needed for a database driver".into()),
            Some(url) if !schemes.iter().any(|s| url.starts_with(s)) => {
                return Err(format!("apps_store.url must start with {} for this driver", schemes.join(" or ")))
            }
            Some(_) => {}
        }
        if !is_table_name(&self.table) {
            return Err(format!(
                "apps_store.table {:?} must be a table name (letters, digits, '_', optionally schema.table)",
                self.table
            ));
        }
        if self.refresh_interval_ms < 100 {
            return Err("apps_store.refresh_interval_ms must be at least 100".into());
        }
        if !(1..=10_000_000).contains(&self.max_apps) {
            return Err("apps_store.max_apps must be 1 to 10000000".into());
        }
        Ok(())
    }

    /// The URL with its scheme as the database client expects it (`mariadb://` is `mysql://`).
    pub fn client_url(&self) -> Option<String> {
        let url = self.url.as_deref()?;
        Some(match url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => url.to_owned(),
        })
    }
}

/// A name that is safe to put in a query between quotes: it is never a value a peer controls,
/// but a typo should be refused at start-up, not become SQL.
fn is_table_name(name: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !p.as_bytes()[0].is_ascii_digit()
    };
    match name.split_once('.') {
        Some((schema, table)) => part(schema) && part(table),
        None => part(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_identifiers() {
        for good in ["apps", "herald_apps", "public.apps", "A1"] {
            assert!(is_table_name(good), "{good}");
        }
        for bad in ["", "apps;drop", "1apps", "a.b.c", "apps\"", "sch.", "a b"] {
            assert!(!is_table_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_database_driver_needs_a_matching_url() {
        let mut c = AppsStoreConfig { driver: AppsDriver::Postgres, ..Default::default() };
        assert!(c.validate().unwrap_err().contains("apps_store.url"));
        c.url = Some("mysql://x".into());
        assert!(c.validate().unwrap_err().contains("postgres://"));
        c.url = Some("postgres://u@127.0.0.1/db".into());
        assert!(c.validate().is_ok());
        c.max_apps = 0;
        assert!(c.validate().unwrap_err().contains("max_apps"));
        c.max_apps = 10_000_001;
        assert!(c.validate().unwrap_err().contains("max_apps"), "LIMIT max_apps + 1 must fit every database");
        c.max_apps = DEFAULT_MAX_APPS;
        c.refresh_interval_ms = 10;
        assert!(c.validate().unwrap_err().contains("refresh_interval_ms"));
        let m =
            AppsStoreConfig { driver: AppsDriver::Mysql, url: Some("mariadb://u@h/db".into()), ..Default::default() };
        assert_eq!(m.client_url().as_deref(), Some("mysql://u@h/db"));
        assert_eq!(AppsDriver::parse("array"), Some(AppsDriver::File));
        assert_eq!(AppsDriver::parse("MariaDB"), Some(AppsDriver::Mysql));
        assert_eq!(AppsDriver::parse("dynamodb"), None);
    }
}
